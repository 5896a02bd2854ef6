"""Signed-in pages: My applications, password change, sign-out."""

from __future__ import annotations

from dataclasses import replace

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.errors import CsrfFailed
from alacop.core.session_manager import Current
from alacop.core.sessions import EndReason
from alacop.flows.base import Message
from alacop.methods.password import PasswordMethod
from alacop.web import http
from alacop.web.render import template
from alacop.web.routes._common import rate_limit
from alacop.web.routes.login import SESSION_COOKIE


async def current(request: Request) -> Current | None:
    token = request.cookies.get(http.cookie_name(request, SESSION_COOKIE))
    return await http.portal(request).sessions.resolve(token, http.context(request))


def _to_login() -> Response:
    return RedirectResponse("/login", status_code=303)


def _signed_in_context(request: Request, who: Current) -> dict[str, object]:
    secret, _ = http.ensure_browser_secret(request)
    return {"user": who.user, "session": who.session, "csrf_token": http.form_token(request, secret)}


async def apps(request: Request) -> Response:
    who = await current(request)
    if who is None:
        return _to_login()
    return template(request, "apps.html", {**_signed_in_context(request, who), "applications": []})


async def logout(request: Request) -> Response:
    form = await http.read_form(request)
    if not http.check_form_token(request, http.field(form, "csrf_token")):
        raise CsrfFailed("sign-out without a valid token")
    token = request.cookies.get(http.cookie_name(request, SESSION_COOKIE))
    await http.portal(request).sessions.end(token, http.context(request))
    response = RedirectResponse("/login", status_code=303)
    http.clear_cookie(request, response, SESSION_COOKIE)
    return response


async def password_page(request: Request) -> Response:
    who = await current(request)
    if who is None:
        return _to_login()
    return template(request, "account/password.html", {**_signed_in_context(request, who), "messages": ()})


async def password_submit(request: Request) -> Response:
    await rate_limit(request, "account")
    form = await http.read_form(request)
    who = await current(request)
    if who is None:
        return _to_login()
    if not http.check_form_token(request, http.field(form, "csrf_token")):
        raise CsrfFailed("password change without a valid token")
    p = http.portal(request)
    ctx = http.context(request)
    method = PasswordMethod(p.deps)
    current_pw, new_pw, confirm = (
        http.field(form, n) for n in ("current_password", "new_password", "confirm_password")
    )
    user = who.user
    base_ctx = _signed_in_context(request, who)

    async def refuse(code: str, text: str) -> Response:
        await p.audit(
            AuditEvent(
                EventType.PASSWORD_CHANGE_FAILED,
                Outcome.FAILURE,
                code,
                actor_id=user.id,
                subject_id=user.id,
                subject_name=user.username,
                agency_id=user.agency_id,
            ),
            request,
        )
        return template(
            request, "account/password.html", {**base_ctx, "messages": (Message(code, text),)}, 400
        )

    if not await method.verify(user, current_pw):
        return await refuse("current_password_wrong", "Your current password is incorrect.")
    problem = method.problem(user, new_pw, confirm)
    if problem is None and new_pw == current_pw:
        return await refuse("password_reused", "Choose a password different from your current one.")
    if problem is not None:
        return await refuse(problem.code, problem.message)
    now = p.deps.clock.now()
    changed = await method.with_new_password(user, new_pw, now)
    async with p.deps.store.transaction() as tx:
        await tx.users.update(replace(changed))
        # Other sessions end when the password changes; this one carries on (CJIS IA-11).
        ended = 0
        for other in await tx.sessions.active_for_user(user.id):
            if other.id_hash != who.session.id_hash:
                ended += int(await tx.sessions.end(other.id_hash, now, EndReason.PASSWORD_CHANGED))
        await tx.audit.append(
            AuditEvent(
                EventType.PASSWORD_CHANGED,
                Outcome.SUCCESS,
                "self_service",
                actor_id=user.id,
                subject_id=user.id,
                subject_name=user.username,
                agency_id=user.agency_id,
                details={"other_sessions_ended": ended},
            ),
            ctx,
        )
    done = (Message("password_changed", "Your password has been changed.", "success"),)
    return template(request, "account/password.html", {**base_ctx, "messages": done})
