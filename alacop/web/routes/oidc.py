"""OpenID Connect routes: parse the request, call the provider (alacop/protocols/oidc), send its answer.

No CSRF tokens on the protocol endpoints: the authorization endpoint is a GET that only issues a
code to a registered redirect URI, and the others are called by applications, protected by client
authentication, PKCE and bearer tokens. The end-session endpoint is the exception: it signs a person
out, so unless a verified id_token_hint names the signed-in user it asks first, with a form that
carries the CSRF token.

The token, revocation, introspection and userinfo endpoints are limited per address (a generous
multiple of the portal's limit, OAUTH_RATE_FACTOR), answering a burst with a JSON 429.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.errors import AlacopError, InvalidInput, RateLimited
from alacop.protocols.oidc.authorization import Redirect
from alacop.protocols.oidc.tokens import TokenResponse
from alacop.web import http
from alacop.web.render import template
from alacop.web.routes._common import RATE_WINDOW_SECONDS, rate_limit
from alacop.web.routes.account import current, signed_out
from alacop.web.routes.login import SESSION_COOKIE, sign_in_to

# Applications call these from their servers, often many users behind one address: the portal's
# per-address limit (30/min by default) times this, per endpoint.
OAUTH_RATE_FACTOR = 100
_PUBLIC_JSON = {"Cache-Control": "public, max-age=60", "Access-Control-Allow-Origin": "*"}


def _json(status: int, body: dict[str, object], headers: list[tuple[str, str]]) -> Response:
    response = JSONResponse(body, status_code=status)
    for name, value in headers:
        response.headers[name] = value
    return response


async def discovery(request: Request) -> Response:
    return JSONResponse(http.portal(request).oidc.metadata(), headers=_PUBLIC_JSON)


async def jwks(request: Request) -> Response:
    body = await http.portal(request).oidc.jwks()
    return JSONResponse(body, headers=_PUBLIC_JSON, media_type="application/jwk-set+json")


async def authorize(request: Request) -> Response:
    # Every refusal here is audited, so bursts are limited like the other endpoints (audit writes serialise).
    await rate_limit(request, "oauth_authorize", factor=OAUTH_RATE_FACTOR)
    p = http.portal(request)
    items = list(request.query_params.multi_items())
    if _controls(items):
        # Malformed before any client is known: the portal's page, never a redirect.
        raise InvalidInput("malformed authorization request", code="authorization_refused")
    who = await current(request)
    outcome = await p.oidc.authorize(items, who, http.context(request))
    if isinstance(outcome, Redirect):
        return RedirectResponse(outcome.location, status_code=302)
    return await sign_in_to(request, outcome.return_to)


async def _limited(request: Request, bucket: str) -> Response | None:
    """A JSON 429 in the OAuth error format once the address has spent its allowance."""
    try:
        await rate_limit(request, bucket, factor=OAUTH_RATE_FACTOR)
    except RateLimited:
        await http.portal(request).audit(
            AuditEvent(EventType.RATE_LIMITED, Outcome.FAILURE, "rate_limited", details={"path": request.url.path}),
            request,
        )
        body: dict[str, object] = {
            "error": "temporarily_unavailable",
            "error_description": "too many requests from this address; retry later",
        }
        return _json(429, body, [("Retry-After", str(RATE_WINDOW_SECONDS)), ("Cache-Control", "no-store")])
    return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _controls(items: list[tuple[str, str]]) -> bool:
    """Whether any parameter holds a control character (NUL among them, which PostgreSQL refuses)."""
    return any(_CONTROL.search(name) or _CONTROL.search(value) for name, value in items)


_MALFORMED = {"error": "invalid_request", "error_description": "a parameter holds characters that are not allowed"}


async def _form(request: Request) -> list[tuple[str, str]] | Response:
    try:
        items = await http.read_urlencoded(request)
    except AlacopError:
        return _json(400, {"error": "invalid_request", "error_description": "expected a form body"}, [])
    if _controls(items) or _controls([("authorization", request.headers.get("authorization", ""))]):
        return _json(400, dict(_MALFORMED), [("Cache-Control", "no-store")])
    return items


_CORS_METHODS = {"/oauth/token": "POST", "/oauth/revoke": "POST", "/oauth/userinfo": "GET, POST"}


async def _cors(request: Request, response: Response) -> Response:
    """Lets a browser application (a public client, from its redirect URI's origin) read the answer."""
    allowed = await http.portal(request).oidc.cors_origin(request.headers.get("origin"))
    response.headers["Vary"] = "Origin"
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Access-Control-Expose-Headers"] = "WWW-Authenticate, Retry-After"
    return response


async def preflight(request: Request) -> Response:
    """CORS preflight for the endpoints a browser application calls; any other origin gets no grant."""
    response = Response(status_code=204, headers={"Vary": "Origin"})
    methods = _CORS_METHODS.get(request.url.path, "")
    asked = request.headers.get("access-control-request-method", "")
    allowed = await http.portal(request).oidc.cors_origin(request.headers.get("origin"))
    if allowed and asked in methods.split(", "):
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Access-Control-Allow-Methods"] = methods
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response.headers["Access-Control-Max-Age"] = "600"
    return response


# What the token, revocation and introspection endpoints share: a form from an application, maybe a
# Basic Authorization header, the request's context.
_ClientCall = Callable[[list[tuple[str, str]], str | None, RequestContext], Awaitable[TokenResponse]]


async def _client_endpoint(request: Request, bucket: str, call: _ClientCall) -> Response:
    if limited := await _limited(request, bucket):
        return limited
    items = await _form(request)
    if isinstance(items, Response):
        return items
    answer = await call(items, request.headers.get("authorization"), http.context(request))
    return _json(answer.status, answer.body, answer.headers)


async def token(request: Request) -> Response:
    return await _cors(request, await _client_endpoint(request, "oauth_token", http.portal(request).oidc.token))


async def userinfo(request: Request) -> Response:
    return await _cors(request, await _userinfo(request))


async def _userinfo(request: Request) -> Response:
    if limited := await _limited(request, "oauth_userinfo"):
        return limited
    form_token = None
    if request.method == "POST" and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        items = await _form(request)
        if isinstance(items, Response):
            return items
        form_token = dict(items).get("access_token")
    answer = await http.portal(request).oidc.userinfo(request.headers.get("authorization"), form_token)
    return _json(answer.status, answer.body, answer.headers)


async def revoke(request: Request) -> Response:
    return await _cors(request, await _client_endpoint(request, "oauth_revoke", http.portal(request).oidc.revoke))


async def introspect(request: Request) -> Response:
    return await _client_endpoint(request, "oauth_introspect", http.portal(request).oidc.introspect)


async def end_session(request: Request) -> Response:
    """OpenID Connect RP-Initiated Logout 1.0, GET or POST; the confirmation page posts back here."""
    await rate_limit(request, "oauth_logout", factor=OAUTH_RATE_FACTOR)
    p = http.portal(request)
    ctx = http.context(request)
    if request.method == "POST":
        form = await http.read_form(request)
        items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        confirmed = http.check_form_token(request, dict(items).get("csrf_token", ""))
    else:
        items = list(request.query_params.multi_items())
        confirmed = False
    if _controls(items):
        raise InvalidInput("malformed logout request", code="logout_refused")
    checked = await p.oidc.check_logout([(k, v) for k, v in items if k != "csrf_token"], ctx)
    who = await current(request, aal2=False)
    hint = checked.hint
    names_session = (
        who is not None
        and hint is not None
        and hint.sub == who.user.id
        and (hint.sid is None or hint.sid == p.oidc.sid(who.session.id_hash))
    )
    if who is not None and not (confirmed or names_session):
        # A link anyone could send: ask first (the spec lets the OP confirm with the user).
        secret, _ = http.ensure_browser_secret(request)
        return template(
            request,
            "oidc/logout_confirm.html",
            {
                "user": who.user,
                "client": checked.client,
                "params": checked.params,
                "csrf_token": http.form_token(request, secret),
            },
        )
    if who is not None:
        ended = await p.sessions.sign_out(request.cookies.get(http.cookie_name(request, SESSION_COOKIE)), ctx)
    elif hint is not None and (id_hash := await p.oidc.session_for(hint)) is not None:
        # No cookie (a cross-site POST does not carry a SameSite=Lax one): the verified hint's sid names it.
        ended = await p.sessions.sign_out_hash(id_hash, ctx)
    else:
        ended = None
    if ended is not None:
        await p.oidc.propagate_logout(ended, ctx)
    response = (
        RedirectResponse(checked.location, status_code=303)
        if checked.location
        else signed_out(request, checked.client.name if checked.client else None)
    )
    http.clear_cookie(request, response, SESSION_COOKIE)
    return response
