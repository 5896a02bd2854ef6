"""Security info: the user's sign-in methods, recovery codes, recent sign-ins and sessions.

Every change needs a sign-in in the last 10 minutes or a fresh password (CJIS IA-11), and a session
that a recovery code opened may not add or remove methods.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from alacop.core import attempts
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.credentials import ENROLLABLE, MethodKind
from alacop.core.errors import CsrfFailed, FlowExpired, FlowInvalid
from alacop.core.notify import notify
from alacop.core.ports import FlowRecord
from alacop.core.session_manager import Current
from alacop.core.sessions import EndReason
from alacop.flows.base import Message, browser_binding, check_flow, new_csrf, new_flow_id
from alacop.methods.factors import FactorRefused
from alacop.methods.password import PasswordMethod
from alacop.methods.webauthn import new_challenge, registration_options
from alacop.web import http
from alacop.web.render import template
from alacop.web.routes._common import rate_limit
from alacop.web.routes.account import current, recent_enough, to_reauth
from alacop.web.routes.login import SESSION_COOKIE

SETTINGS_FLOW = "settings"
_DONE = {
    "method_added": "The method was added.",
    "method_removed": "The method was removed.",
    "method_renamed": "The method was renamed.",
    "sessions_ended": "You were signed out everywhere else.",
    "reauthenticated": "Thank you. You can make changes for the next few minutes.",
}
_REFUSED = {
    "method_last_required": "That method cannot be removed: your account needs it to meet the sign-in policy. "
    "Add another method first.",
    "method_not_found": "That method was not found.",
    "recovery_code_session": "You signed in with a recovery code, which cannot change your sign-in methods or "
    "password. Sign in with your authenticator app or security key, or ask the Support Center to reset "
    "your methods once they have confirmed who you are.",
}
RECENT_TYPES = ("LoginSucceeded", "LoginFailed", "SecondFactorFailed")


async def _form(request: Request) -> dict[str, str]:
    form = await http.read_form(request)
    if not http.check_form_token(request, http.field(form, "csrf_token")):
        raise CsrfFailed("security info change without a valid token")
    return {k: http.field(form, k, max_length=16_384) for k in form}


def _back(done: str = "", refused: str = "") -> Response:
    query = f"?done={done}" if done else f"?refused={refused}" if refused else ""
    return RedirectResponse(f"/account/security{query}", status_code=303)


async def page(request: Request) -> Response:
    who = await current(request)
    if who is None:
        return RedirectResponse("/login", status_code=303)
    p = http.portal(request)
    factors = p.login.factors
    methods = await factors.methods(who.user)
    async with p.deps.store.read() as db:
        sessions = await db.sessions.active_for_user(who.user.id)
    recent = await p.deps.store.audit_reader.recent_for_subject(who.user.id, RECENT_TYPES, 10)
    messages: list[Message] = []
    done, refused = request.query_params.get("done", ""), request.query_params.get("refused", "")
    if done in _DONE:
        messages.append(Message(done, _DONE[done], "success"))
    if refused in _REFUSED:
        messages.append(Message(refused, _REFUSED[refused]))
    secret, _ = http.ensure_browser_secret(request)
    return template(
        request,
        "account/security.html",
        {
            "user": who.user,
            "session": who.session,
            "csrf_token": http.form_token(request, secret),
            "methods": [m for m in methods if m.kind in ENROLLABLE],
            "codes_left": await factors.recovery_codes_left(who.user),
            "required": factors.required(who.user),
            "sessions": sessions,
            "recent": [
                {
                    "when": r.occurred_at[:19].replace("T", " ") + " UTC",
                    "ok": r.type == "LoginSucceeded",
                    "what": "Signed in" if r.type == "LoginSucceeded" else "Failed sign-in",
                    "address": r.source_ip,
                    "browser": r.user_agent if len(r.user_agent) <= 80 else r.user_agent[:79] + "…",
                }
                for r in recent
            ],
            "recent_enough": recent_enough(request, who),
            "reauth_minutes": p.settings.policy.reauth_minutes,
            "messages": tuple(messages),
            "message_ids": [m.id for m in messages],
        },
    )


async def _changer(request: Request) -> tuple[Current | None, Response | None]:
    """The signed-in user allowed to change methods now, or the response that explains why not."""
    who = await current(request)
    if who is None:
        return None, RedirectResponse("/login", status_code=303)
    if not recent_enough(request, who):
        return None, to_reauth("/account/security")
    if who.session.second_factor == MethodKind.RECOVERY_CODE:
        return None, _back(refused="recovery_code_session")
    return who, None


async def rename(request: Request) -> Response:
    await rate_limit(request, "account")
    values = await _form(request)
    who, refusal = await _changer(request)
    if refusal is not None:
        return refusal
    assert who is not None
    p = http.portal(request)
    try:
        await p.login.factors.rename(
            who.user, values.get("method_id", ""), values.get("name", ""), http.context(request)
        )
    except FactorRefused as exc:
        return _back(refused=exc.code)
    return _back(done="method_renamed")


async def remove(request: Request) -> Response:
    await rate_limit(request, "account")
    values = await _form(request)
    who, refusal = await _changer(request)
    if refusal is not None:
        return refusal
    assert who is not None
    p = http.portal(request)
    try:
        await p.login.factors.remove(who.user, values.get("method_id", ""), http.context(request))
    except FactorRefused as exc:
        return _back(refused=exc.code)
    return _back(done="method_removed")


async def recovery_codes(request: Request) -> Response:
    await rate_limit(request, "account")
    await _form(request)
    # A session opened with a recovery code may not mint new ones: a stolen code would become ten.
    who, refusal = await _changer(request)
    if refusal is not None:
        return refusal
    assert who is not None
    codes = await http.portal(request).login.factors.issue_recovery_codes(who.user, http.context(request))
    # Shown once, in this response only; no-store keeps them out of every cache.
    return template(request, "account/recovery_codes.html", {"user": who.user, "codes": codes})


async def end_others(request: Request) -> Response:
    await rate_limit(request, "account")
    await _form(request)
    who = await current(request)
    if who is None:
        return RedirectResponse("/login", status_code=303)
    p = http.portal(request)
    now = p.deps.clock.now()
    async with p.deps.store.transaction() as tx:
        ended = 0
        for other in await tx.sessions.active_for_user(who.user.id):
            if other.id_hash != who.session.id_hash:
                ended += int(await tx.sessions.end(other.id_hash, now, EndReason.SIGNED_OUT))
        await tx.audit.append(
            AuditEvent(
                EventType.OTHER_SESSIONS_ENDED,
                Outcome.SUCCESS,
                actor_id=who.user.id,
                subject_id=who.user.id,
                subject_name=who.user.username,
                agency_id=who.user.agency_id,
                details={"ended": ended},
            ),
            http.context(request),
        )
    return _back(done="sessions_ended")


# -- adding a method: a short "settings" flow holds the pending secret or challenge -----------------
async def add_post(request: Request) -> Response:
    """Without a flow, start adding a method; with one, confirm it."""
    if "flow" in request.query_params:
        return await add_submit(request)
    return await add_start(request)


async def add_start(request: Request) -> Response:
    await rate_limit(request, "account")
    values = await _form(request)
    who, refusal = await _changer(request)
    if refusal is not None:
        return refusal
    assert who is not None
    p = http.portal(request)
    kind = values.get("kind", "")
    payload: dict[str, str] = {"user_id": who.user.id, "kind": kind}
    if kind == MethodKind.TOTP:
        payload["pending_totp"] = p.login.factors.start_totp(who.user).sealed_secret
    elif kind == MethodKind.WEBAUTHN:
        payload["challenge"] = new_challenge()
    else:
        raise FlowInvalid("that method cannot be added")
    secret, _ = http.ensure_browser_secret(request)
    now = p.deps.clock.now()
    record = FlowRecord(
        id=new_flow_id(),
        kind=SETTINGS_FLOW,
        state="add",
        issued_at=now,
        expires_at=now + timedelta(minutes=15),
        csrf_token=new_csrf(),
        binding=browser_binding(secret),
        return_to="/account/security",
        payload=json.dumps(payload),
    )
    async with p.deps.store.transaction() as tx:
        await tx.flows.add(record)
    return http.apply_browser_cookie(request, RedirectResponse(f"/account/security/add?flow={record.id}", 303))


async def _settings_flow(request: Request, user_id: str) -> tuple[FlowRecord, dict[str, str]]:
    p = http.portal(request)
    secret = http.browser_secret(request) or ""
    async with p.deps.store.read() as db:
        record = await db.flows.get(request.query_params.get("flow", "")[:64])
    checked = check_flow(record, binding=browser_binding(secret), now=p.deps.clock.now(), kind=SETTINGS_FLOW)
    payload: dict[str, str] = json.loads(checked.payload)
    if payload.get("user_id") != user_id:
        raise FlowInvalid("settings flow of another user")
    return checked, payload


async def add_page(request: Request, messages: tuple[Message, ...] = ()) -> Response:
    who, refusal = await _changer(request)
    if refusal is not None:
        return refusal
    assert who is not None
    p = http.portal(request)
    try:
        record, payload = await _settings_flow(request, who.user.id)
    except (FlowInvalid, FlowExpired):
        return _back()
    factors = p.login.factors
    secret, _ = http.ensure_browser_secret(request)
    ctx: dict[str, object] = {
        "csrf_token": http.form_token(request, secret),
        "flow": record,
        "kind": payload["kind"],
        "messages": messages,
        "message_ids": [m.id for m in messages],
        "user": who.user,
    }
    if payload.get("pending_totp"):
        pending = factors.reopen_totp(who.user, payload["pending_totp"])
        ctx["totp_qr"] = pending.qr_svg
        ctx["totp_secret"] = " ".join(pending.secret[i : i + 4] for i in range(0, len(pending.secret), 4))
    if payload.get("challenge"):
        methods = await factors.methods(who.user)
        ctx["webauthn_options"] = registration_options(
            factors.rp,
            user_handle=factors.user_handle(who.user),
            username=f"{who.user.username}@{p.deps.domain}",
            display_name=who.user.name,
            challenge=payload["challenge"],
            existing=[m for m in methods if m.kind is MethodKind.WEBAUTHN],
        )
    return template(request, "account/add_method.html", ctx, 400 if messages else 200)


async def add_submit(request: Request) -> Response:
    await rate_limit(request, "account")
    form = await http.read_form(request)
    who, refusal = await _changer(request)
    if refusal is not None:
        return refusal
    assert who is not None
    p = http.portal(request)
    try:
        record, payload = await _settings_flow(request, who.user.id)
    except (FlowInvalid, FlowExpired):
        return _back()
    if not http.check_form_token(request, http.field(form, "csrf_token")):
        raise CsrfFailed("add method without a valid token")
    factors = p.login.factors
    ctx = http.context(request)
    name = http.field(form, "name")
    try:
        if payload.get("pending_totp"):
            await factors.confirm_totp(who.user, payload["pending_totp"], http.field(form, "code"), name, ctx)
        else:
            await factors.confirm_webauthn(
                who.user, payload["challenge"], http.field(form, "credential", max_length=16_384), name, ctx
            )
    except FactorRefused as exc:
        text = (
            "That code didn't match. Try the current code."
            if exc.code.startswith("totp")
            else ("The security key could not be registered. Try again.")
        )
        if payload.get("challenge"):
            # A WebAuthn challenge is single-use, whatever the outcome.
            payload["challenge"] = new_challenge()
            async with p.deps.store.transaction() as tx:
                await tx.flows.save(replace(record, payload=json.dumps(payload)))
        return await add_page(request, (Message(exc.code, text),))
    async with p.deps.store.transaction() as tx:
        await tx.flows.delete(record.id)
    return _back(done="method_added")


# -- re-authentication (step-up) --------------------------------------------------------------------
_NEXT = {"/account/security", "/account/password"}
# Console pages: /admin and lower-case segments of letters, digits and dashes (ids are UUIDs). No scheme,
# no host, no query, no dots, so the redirect after step-up can only land on the portal's own console.
_ADMIN_NEXT = re.compile(r"/admin(/[a-z0-9-]{1,64}){0,4}")


def _next(value: str) -> str:
    """Where step-up returns to: one of the allowed local paths, else Security info."""
    if value in _NEXT or (len(value) <= 300 and _ADMIN_NEXT.fullmatch(value)):
        return value
    return "/account/security"


async def reauth_page(request: Request, messages: tuple[Message, ...] = ()) -> Response:
    who = await current(request)
    if who is None:
        return RedirectResponse("/login", status_code=303)
    secret, _ = http.ensure_browser_secret(request)
    nxt = request.query_params.get("next", "/account/security")
    return template(
        request,
        "account/reauth.html",
        {
            "user": who.user,
            "csrf_token": http.form_token(request, secret),
            "next": _next(nxt),
            "messages": messages,
            "message_ids": [m.id for m in messages],
        },
        400 if messages else 200,
    )


async def reauth_submit(request: Request) -> Response:
    await rate_limit(request, "account")
    values = await _form(request)
    who = await current(request)
    if who is None:
        return RedirectResponse("/login", status_code=303)
    p = http.portal(request)
    method = PasswordMethod(p.deps)
    identifier = f"{who.user.username}@{p.deps.domain}"
    ctx = http.context(request)
    now = p.deps.clock.now()
    password = values.get("password", "")[:1024]
    claimed = await attempts.claim(p.deps, identifier)
    if claimed is None:
        # Locked, or its guesses all in flight: this session goes like every other of the account.
        await method.verify(None, password)
        response = RedirectResponse("/login", status_code=303)
        http.clear_cookie(request, response, SESSION_COOKIE)
        return response
    if not await method.verify(who.user, password):
        async with p.deps.store.transaction() as tx:
            updated, _ = await attempts.settle(tx, claimed, p.deps)
            await tx.audit.append(
                AuditEvent(
                    EventType.REAUTHENTICATION_FAILED,
                    Outcome.FAILURE,
                    "password_wrong",
                    actor_id=who.user.id,
                    subject_id=who.user.id,
                    subject_name=identifier,
                    agency_id=who.user.agency_id,
                    details={"consecutive_failures": updated.failures},
                ),
                ctx,
            )
            if updated.locked_at is not None:
                await tx.audit.append(
                    AuditEvent(
                        EventType.ACCOUNT_LOCKED,
                        Outcome.INFO,
                        "too_many_failures",
                        subject_id=who.user.id,
                        subject_name=identifier,
                        agency_id=who.user.agency_id,
                        details={"failures": updated.failures},
                    ),
                    ctx,
                )
                await tx.sessions.end_all_for_user(who.user.id, now, EndReason.LOCKED)
        if updated.locked_at is not None:
            await notify(p.deps, who.user, "account_locked", ctx)
            response = RedirectResponse("/login", status_code=303)
            http.clear_cookie(request, response, SESSION_COOKIE)
            return response
        return await reauth_page(request, (Message("current_password_wrong", "Your password is incorrect."),))
    await attempts.release(p.deps, claimed)
    async with p.deps.store.transaction() as tx:
        await tx.sessions.reauthenticated(who.session.id_hash, now)
        await tx.audit.append(
            AuditEvent(
                EventType.REAUTHENTICATED,
                Outcome.SUCCESS,
                "password",
                actor_id=who.user.id,
                subject_id=who.user.id,
                subject_name=identifier,
                agency_id=who.user.agency_id,
            ),
            ctx,
        )
    nxt = values.get("next", "/account/security")
    target = _next(nxt)
    if target == "/account/password":
        return RedirectResponse(target, 303)
    return RedirectResponse(f"{target}?done=reauthenticated", 303)
