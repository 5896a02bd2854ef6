"""Signed-in pages: My applications, password change, sign-out."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from alacop.core.applications import Applications
from alacop.core.errors import CsrfFailed
from alacop.core.session_manager import Current
from alacop.flows.base import Message
from alacop.methods.password import PasswordMethod
from alacop.protocols.saml.registry import ServiceProviders
from alacop.web import http
from alacop.web.render import template
from alacop.web.routes._common import rate_limit
from alacop.web.routes.login import SESSION_COOKIE


async def current(request: Request, *, aal2: bool = True) -> Current | None:
    """The signed-in user; everything past sign-in needs an AAL2 session (CJIS IA-2(1)/(2))."""
    token = request.cookies.get(http.cookie_name(request, SESSION_COOKIE))
    who = await http.portal(request).sessions.resolve(token, http.context(request))
    if who is None or (aal2 and who.session.aal != "aal2"):
        return None
    return who


def _to_login() -> Response:
    return RedirectResponse("/login", status_code=303)


def recent_enough(request: Request, who: Current) -> bool:
    p = http.portal(request)
    return who.session.recent(p.deps.clock.now(), p.settings.policy)


def to_reauth(next_path: str) -> Response:
    return RedirectResponse(f"/account/reauth?next={next_path}", status_code=303)


def _signed_in_context(request: Request, who: Current) -> dict[str, object]:
    secret, _ = http.ensure_browser_secret(request)
    return {"user": who.user, "session": who.session, "csrf_token": http.form_token(request, secret)}


async def apps(request: Request) -> Response:
    who = await current(request)
    if who is None:
        return _to_login()
    deps = http.portal(request).deps
    applications = await Applications(deps).for_user(who.user) + await ServiceProviders(deps).for_user(who.user)
    applications.sort(key=lambda a: (a.name.casefold(), a.client_id))
    return template(request, "apps.html", {**_signed_in_context(request, who), "applications": applications})


async def logout(request: Request) -> Response:
    form = await http.read_form(request)
    if not http.check_form_token(request, http.field(form, "csrf_token")):
        raise CsrfFailed("sign-out without a valid token")
    token = request.cookies.get(http.cookie_name(request, SESSION_COOKIE))
    p = http.portal(request)
    ctx = http.context(request)
    # Ends the session and revokes its applications' tokens; then (not waited for) tells every
    # application with a back-channel logout URI, after the transaction has committed.
    ended = await p.sessions.sign_out(token, ctx)
    if ended is not None:
        await p.oidc.propagate_logout(ended, ctx)
    response = RedirectResponse("/login", status_code=303)
    http.clear_cookie(request, response, SESSION_COOKIE)
    return response


def signed_out(request: Request, client_name: str | None = None) -> Response:
    """The portal's own signed-out page, for an application's sign-out that may not redirect."""
    return template(request, "oidc/signed_out.html", {"client_name": client_name})


def _password_context(request: Request, who: Current, messages: tuple[Message, ...]) -> dict[str, object]:
    return {
        **_signed_in_context(request, who),
        "messages": messages,
        "message_ids": [m.id for m in messages],
        "policy": http.portal(request).settings.policy,
    }


async def password_page(request: Request) -> Response:
    who = await current(request)
    if who is None:
        return _to_login()
    if not recent_enough(request, who):
        return to_reauth("/account/password")
    if who.session.second_factor == "recovery_code":
        return RedirectResponse("/account/security?refused=recovery_code_session", status_code=303)
    return template(request, "account/password.html", _password_context(request, who, ()))


async def password_submit(request: Request) -> Response:
    await rate_limit(request, "account")
    form = await http.read_form(request)
    who = await current(request)
    if who is None:
        return _to_login()
    if not http.check_form_token(request, http.field(form, "csrf_token")):
        raise CsrfFailed("password change without a valid token")
    if not recent_enough(request, who):
        return to_reauth("/account/password")
    if who.session.second_factor == "recovery_code":
        return RedirectResponse("/account/security?refused=recovery_code_session", status_code=303)
    p = http.portal(request)
    outcome = await PasswordMethod(p.deps).change(
        who.user,
        current=http.field(form, "current_password"),
        new=http.field(form, "new_password"),
        confirm=http.field(form, "confirm_password"),
        ctx=http.context(request),
        reason="self_service",
        keep_session=who.session.id_hash,
    )
    if outcome.locked:
        # The lock ended every session, this one included: the next page is the sign-in page.
        response = RedirectResponse("/login", status_code=303)
        http.clear_cookie(request, response, SESSION_COOKIE)
        return response
    if outcome.problem is not None:
        problem = (Message(outcome.problem.code, outcome.problem.message),)
        return template(request, "account/password.html", _password_context(request, who, problem), 400)
    done = (Message("password_changed", "Your password has been changed.", "success"),)
    return template(request, "account/password.html", _password_context(request, who, done))
