"""Sign-in routes: parse the form, call the login flow, render or redirect."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from alacop.core.errors import FlowExpired, FlowInvalid
from alacop.core.oidc import CLIENT_ID_FORMAT
from alacop.core.ports import MAX_RETURN_TO
from alacop.core.session_manager import MAX_TOKEN_LENGTH
from alacop.core.sessions import EndReason
from alacop.flows.base import Message
from alacop.flows.login import LoginFlow, LoginResult, LoginState, login_view
from alacop.methods.webauthn import authentication_options
from alacop.protocols.saml.provider import CONTINUE_PATH
from alacop.web import http
from alacop.web.render import template
from alacop.web.routes._common import flow_step, rate_limit

SESSION_COOKIE = "alacop_session"
# Only a path on this portal: no scheme, no "//" or "/\\" (which browsers read as another host).
_LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")
EXPIRED = Message("flow_expired", "This took too long. Start again.", "info")
# Where an application's authorization request waits while the user signs in (alacop/protocols/oidc).
AUTHORIZE_PATH = "/oauth/authorize"

_TEMPLATES = {
    LoginState.IDENTIFIER: "login/identifier.html",
    LoginState.PASSWORD: "login/password.html",
    LoginState.CHANGE_PASSWORD: "login/new_password.html",
    LoginState.SECOND_FACTOR: "login/second_factor.html",
    LoginState.ENROLL: "login/enroll.html",
    LoginState.RECOVERY_CODES: "login/recovery_codes.html",
}


def _flow_id(request: Request) -> str:
    return request.query_params.get("flow", "")[:64]


async def _restart(request: Request, secret: str, *messages: Message, return_to: str | None = None) -> Response:
    # Each new flow is a stored row: creating them is limited too, more loosely than the steps.
    await rate_limit(request, "flow", factor=4)
    flow = await http.portal(request).login.start(secret, messages=messages, return_to=local_return_to(return_to))
    response = RedirectResponse(f"/login?flow={flow.id}", status_code=303)
    return http.apply_browser_cookie(request, response)


async def sign_in_to(request: Request, return_to: str) -> Response:
    """Send the browser to a sign-in that returns to `return_to` (an application's request).

    The request is kept in the new flow on the server, not in the address: however long it is, it is
    not cut short in a redirect, and the sign-in page's address stays short.
    """
    await rate_limit(request, "flow", factor=4)
    secret, _ = http.ensure_browser_secret(request)
    flow = await http.portal(request).login.start(secret, return_to=local_return_to(return_to))
    return http.apply_browser_cookie(request, RedirectResponse(f"/login?flow={flow.id}", status_code=303))


def local_return_to(value: str | None) -> str | None:
    """A return address on this portal only (never another host), or None."""
    if value and len(value) <= MAX_RETURN_TO and _LOCAL_PATH.fullmatch(value):
        return value
    return None


def _authorization_params(return_to: str | None) -> dict[str, str]:
    """The parameters of the authorization request the sign-in returns to, if that is where it goes."""
    if not return_to:
        return {}
    parts = urlsplit(return_to)
    if parts.path != AUTHORIZE_PATH:
        return {}
    return {k: v[0] for k, v in parse_qs(parts.query).items() if v}


async def page(request: Request) -> Response:
    p = http.portal(request)
    secret, _ = http.ensure_browser_secret(request)
    flow_id = _flow_id(request)
    if not flow_id:
        return_to = local_return_to(request.query_params.get("return_to"))
        token = request.cookies.get(http.cookie_name(request, SESSION_COOKIE))
        who = await p.sessions.resolve(token, http.context(request)) if token else None
        # With a return address (an application asking for a new sign-in), the form is shown even then.
        if who is not None and who.session.aal == "aal2" and return_to is None:
            return RedirectResponse("/apps", status_code=303)
        # A fresh flow is shown at once; its id travels in the forms, so no redirect is needed.
        await rate_limit(request, "flow", factor=4)
        flow = await p.login.start(secret, return_to=return_to)
        return await render(request, flow)
    try:
        flow = await p.login.load(flow_id, secret)
    except FlowExpired:
        # A fresh flow, still on its way back to the application that asked for the sign-in.
        return_to = await p.login.expired(flow_id, http.context(request), secret)
        return await _restart(request, secret, EXPIRED, return_to=return_to)
    except FlowInvalid:
        return await _restart(request, secret)
    return await render(request, flow)


async def _application(request: Request, flow: LoginFlow) -> str | None:
    """The name of the application the user is signing in to, for "to continue to …"."""
    way_back = urlsplit(flow.return_to or "")
    if way_back.path == CONTINUE_PATH:
        pending = parse_qs(way_back.query).get("request", [""])[0]
        return await http.portal(request).saml.application_name(pending)
    client_id = _authorization_params(flow.return_to).get("client_id", "")
    if not CLIENT_ID_FORMAT.fullmatch(client_id):
        return None
    async with http.portal(request).deps.store.read() as tx:
        client = await tx.clients.get(client_id)
    return client.name if client is not None and client.active else None


async def render(request: Request, flow: LoginFlow, status: int = 200) -> Response:
    p = http.portal(request)
    if flow.state is LoginState.IDENTIFIER and not flow.typed and not flow.messages:
        hint = _authorization_params(flow.return_to).get("login_hint", "")
        if hint and len(hint) <= 254:
            # The application's login_hint, shown in the identifier field only; what counts is what is submitted.
            flow = replace(flow, typed=hint)
    return template(
        request,
        _TEMPLATES[flow.state],
        {
            "flow": flow,
            "messages": flow.messages,
            "message_ids": [m.id for m in flow.messages],
            "policy": p.settings.policy,
            "application": await _application(request, flow),
            **await login_view(p.login, flow),
        },
        status,
    )


async def _step(
    request: Request,
    action: Callable[[LoginFlow, dict[str, str]], Awaitable[Response | LoginFlow]],
    fields: tuple[str, ...],
    *,
    long_fields: tuple[str, ...] = (),
) -> Response:
    service = http.portal(request).login
    loaded = await flow_step(
        request,
        bucket="login",
        fields=fields,
        long_fields=long_fields,
        load=service.load,
        expired=lambda flow_id, secret: service.expired(flow_id, http.context(request), secret),
        restart=lambda secret, return_to: _restart(request, secret, EXPIRED, return_to=return_to),
    )
    if isinstance(loaded, Response):
        return loaded
    outcome = await action(*loaded)
    if isinstance(outcome, Response):
        return outcome
    return RedirectResponse(f"/login?flow={outcome.id}", status_code=303)


async def identifier(request: Request) -> Response:
    p = http.portal(request)

    async def act(flow: LoginFlow, v: dict[str, str]) -> LoginFlow:
        return await p.login.submit_identifier(flow, v["identifier"], v["csrf_token"], http.context(request))

    return await _step(request, act, ("identifier",))


async def change_identifier(request: Request) -> Response:
    p = http.portal(request)

    async def act(flow: LoginFlow, v: dict[str, str]) -> LoginFlow:
        return await p.login.change_identifier(flow, v["csrf_token"])

    return await _step(request, act, ())


async def password(request: Request) -> Response:
    p = http.portal(request)

    async def act(flow: LoginFlow, v: dict[str, str]) -> Response | LoginFlow:
        return await _outcome(
            request, await p.login.submit_password(flow, v["password"], v["csrf_token"], http.context(request))
        )

    return await _step(request, act, ("password",))


async def new_password(request: Request) -> Response:
    p = http.portal(request)

    async def act(flow: LoginFlow, v: dict[str, str]) -> Response | LoginFlow:
        result = await p.login.submit_new_password(
            flow,
            current=v["current_password"],
            new=v["new_password"],
            confirm=v["confirm_password"],
            csrf=v["csrf_token"],
            ctx=http.context(request),
        )
        return await _outcome(request, result)

    return await _step(request, act, ("current_password", "new_password", "confirm_password"))


async def _outcome(request: Request, result: LoginResult) -> Response | LoginFlow:
    if result.session_token is None:
        return result.flow
    return await _signed_in(request, result.session_token, result.flow.return_to)


async def method(request: Request) -> Response:
    p = http.portal(request)

    async def act(flow: LoginFlow, v: dict[str, str]) -> LoginFlow:
        return await p.login.choose_method(flow, v["kind"], v["csrf_token"])

    return await _step(request, act, ("kind",))


async def second_factor(request: Request) -> Response:
    p = http.portal(request)

    async def act(flow: LoginFlow, v: dict[str, str]) -> Response | LoginFlow:
        result = await p.login.submit_second_factor(
            flow, code=v["code"], credential=v["credential"], csrf=v["csrf_token"], ctx=http.context(request)
        )
        return await _outcome(request, result)

    return await _step(request, act, ("code", "credential"), long_fields=("credential",))


async def enroll_choose(request: Request) -> Response:
    p = http.portal(request)

    async def act(flow: LoginFlow, v: dict[str, str]) -> LoginFlow:
        return await p.login.enroll_choose(flow, v["kind"], v["csrf_token"])

    return await _step(request, act, ("kind",))


async def enroll(request: Request) -> Response:
    p = http.portal(request)

    async def act(flow: LoginFlow, v: dict[str, str]) -> Response | LoginFlow:
        result = await p.login.enroll_submit(
            flow,
            code=v["code"],
            credential=v["credential"],
            name=v["name"],
            csrf=v["csrf_token"],
            ctx=http.context(request),
        )
        return await _outcome(request, result)

    return await _step(request, act, ("code", "credential", "name"), long_fields=("credential",))


async def recovery_codes(request: Request) -> Response:
    p = http.portal(request)

    async def act(flow: LoginFlow, v: dict[str, str]) -> Response | LoginFlow:
        return await _outcome(request, await p.login.acknowledge_codes(flow, v["csrf_token"], http.context(request)))

    return await _step(request, act, ())


async def _signed_in(request: Request, token: str, return_to: str | None) -> Response:
    p = http.portal(request)
    # A new session id at every sign-in (OWASP ASVS 7.2.4); any older session in this browser ends.
    old = request.cookies.get(http.cookie_name(request, SESSION_COOKIE))
    if old and len(old) <= MAX_TOKEN_LENGTH:
        await p.sessions.end(old, http.context(request), EndReason.ROTATED)
    target = local_return_to(return_to)
    if target is None:
        response: Response = RedirectResponse("/apps", status_code=303)
    else:
        # Back to an application's authorization request, which redirects to the application. After a
        # form post, browsers hold that redirect chain to CSP form-action 'self' and would stop at the
        # application's address; a page that moves on by itself (with a link, for no-refresh browsers)
        # starts a fresh navigation instead.
        response = template(request, "login/continue.html", {"target": target})
    http.set_cookie(request, response, SESSION_COOKIE, token)
    return response


async def passkey(request: Request) -> Response:
    p = http.portal(request)

    async def act(flow: LoginFlow, v: dict[str, str]) -> Response | LoginFlow:
        result = await p.login.submit_passkey(flow, v["credential"], v["csrf_token"], http.context(request))
        if result.session_token is None:
            return RedirectResponse(f"/login/options?flow={result.flow.id}", status_code=303)
        return await _signed_in(request, result.session_token, result.flow.return_to)

    return await _step(request, act, ("credential",), long_fields=("credential",))


async def options(request: Request) -> Response:
    secret, _ = http.ensure_browser_secret(request)
    p = http.portal(request)
    policy = p.settings.policy
    if policy.passkey_sign_in:
        flow = None
        flow_id = _flow_id(request)
        if flow_id:
            try:
                flow = await p.login.load(flow_id, secret)
            except (FlowExpired, FlowInvalid):
                flow = None
        if flow is None or not flow.challenge:
            await rate_limit(request, "flow", factor=4)
            flow = await p.login.start_passkey(secret)
        return template(
            request,
            "login/options.html",
            {
                "passkey_enabled": True,
                "social_enabled": False,
                "flow": flow,
                "messages": flow.messages,
                "message_ids": [m.id for m in flow.messages],
                "webauthn_options": authentication_options(
                    p.login.factors.rp, challenge=flow.challenge or "", methods=[], require_uv=True
                ),
            },
        )
    return template(request, "login/options.html", {"passkey_enabled": policy.passkey_sign_in, "social_enabled": False})
