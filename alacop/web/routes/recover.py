"""“Can't access your account?” routes: parse the form, call the recovery flow, render or redirect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from alacop.core.captcha import Challenge
from alacop.core.credentials import AuthMethod, MethodKind
from alacop.core.errors import FlowExpired, FlowInvalid
from alacop.flows.base import Message
from alacop.flows.recovery import RecoveryFlow, RecoveryState
from alacop.methods.webauthn import authentication_options
from alacop.web import http
from alacop.web.render import template
from alacop.web.routes._common import captcha_media, flow_step, rate_limit
from alacop.web.routes.login import local_return_to

EXPIRED = Message("flow_expired", "This took too long. Start again.", "info")
_TEMPLATES = {
    RecoveryState.ACCOUNT_TYPE: "recover/account_type.html",
    RecoveryState.PERSONAL: "recover/personal.html",
    RecoveryState.IDENTIFY: "recover/identify.html",
    RecoveryState.VERIFY: "recover/verify.html",
    RecoveryState.CHOOSE: "recover/choose.html",
    RecoveryState.NEW_PASSWORD: "recover/new_password.html",
    RecoveryState.UNLOCK: "recover/unlock.html",
    RecoveryState.DONE: "recover/done.html",
}
_LABELS = {
    MethodKind.TOTP: "Enter a code from my authenticator app",
    MethodKind.WEBAUTHN: "Use my security key or passkey",
    MethodKind.RECOVERY_CODE: "Enter a recovery code",
}


def _flow_id(request: Request) -> str:
    return request.query_params.get("flow", "")[:64]


async def _restart(request: Request, secret: str, *messages: Message, return_to: str | None = None) -> Response:
    await rate_limit(request, "flow", factor=4)
    flow = await http.portal(request).recovery.start(secret, return_to=local_return_to(return_to))
    if messages:
        flow = replace(flow, messages=messages)
    return await render(request, flow)


async def render(request: Request, flow: RecoveryFlow, status: int = 200) -> Response:
    p = http.portal(request)
    service = p.recovery
    ctx: dict[str, object] = {
        "flow": flow,
        "messages": flow.messages,
        "message_ids": [m.id for m in flow.messages],
        "policy": p.settings.policy,
    }
    if flow.state is RecoveryState.IDENTIFY and flow.captcha is not None:
        ctx["captcha_nonce"] = flow.captcha.nonce
    if flow.state is RecoveryState.VERIFY:
        ctx["choices"] = [(str(k), _LABELS[k]) for k in service.offered(flow)]
        if flow.method_kind == MethodKind.WEBAUTHN and flow.challenge and flow.identifier:
            ctx["webauthn_options"] = await _assertion_options(request, flow)
    return template(request, _TEMPLATES[flow.state], ctx, status)


async def _assertion_options(request: Request, flow: RecoveryFlow) -> str:
    """The account's own keys, or a fixed stand-in id: the list never tells whether keys exist."""
    p = http.portal(request)
    service = p.recovery
    keys = []
    if flow.user_id:
        async with p.deps.store.read() as db:
            keys = [m for m in await db.methods.for_user(flow.user_id) if m.kind is MethodKind.WEBAUTHN]
    if not keys:
        keys = [
            AuthMethod(
                id="-",
                user_id="-",
                kind=MethodKind.WEBAUTHN,
                name="-",
                created_at=datetime.now(UTC),
                credential_id=service.fake_credential_id(flow.identifier or ""),
            )
        ]
    # Transports are left out for real and stand-in keys alike, so the lists look the same.
    keys = [replace(m, transports=()) for m in keys]
    return authentication_options(service.factors.rp, challenge=flow.challenge or "", methods=keys, require_uv=False)


async def page(request: Request) -> Response:
    p = http.portal(request)
    secret, _ = http.ensure_browser_secret(request)
    flow_id = _flow_id(request)
    if not flow_id:
        # From a sign-in on its way back to an application: recovery ends with a link back there.
        return await _restart(request, secret, return_to=local_return_to(request.query_params.get("return_to")))
    try:
        flow = await p.recovery.load(flow_id, secret)
    except FlowExpired:
        return_to = await p.recovery.expired(flow_id, http.context(request), secret)
        return await _restart(request, secret, EXPIRED, return_to=return_to)
    except FlowInvalid:
        return await _restart(request, secret, EXPIRED)
    return await render(request, flow)


async def _step(
    request: Request,
    action: Callable[[RecoveryFlow, dict[str, str]], Awaitable[RecoveryFlow]],
    fields: tuple[str, ...],
    *,
    long_fields: tuple[str, ...] = (),
) -> Response:
    service = http.portal(request).recovery
    loaded = await flow_step(
        request,
        bucket="recover",
        fields=fields,
        long_fields=long_fields,
        load=service.load,
        expired=lambda flow_id, secret: service.expired(flow_id, http.context(request), secret),
        restart=lambda secret, return_to: _restart(request, secret, EXPIRED, return_to=return_to),
    )
    if isinstance(loaded, Response):
        return loaded
    flow, values = loaded
    moved = await action(flow, values)
    return RedirectResponse(f"/recover?flow={moved.id}", status_code=303)


async def account_type(request: Request) -> Response:
    service = http.portal(request).recovery

    async def act(flow: RecoveryFlow, v: dict[str, str]) -> RecoveryFlow:
        return await service.choose_type(flow, v["type"], v["csrf_token"])

    return await _step(request, act, ("type",))


async def identify(request: Request) -> Response:
    service = http.portal(request).recovery

    async def act(flow: RecoveryFlow, v: dict[str, str]) -> RecoveryFlow:
        return await service.identify(flow, v["identifier"], v["captcha"], v["csrf_token"], http.context(request))

    return await _step(request, act, ("identifier", "captcha"))


async def new_captcha(request: Request) -> Response:
    service = http.portal(request).recovery

    async def act(flow: RecoveryFlow, v: dict[str, str]) -> RecoveryFlow:
        return await service.new_captcha(flow, v["csrf_token"])

    return await _step(request, act, ())


async def method(request: Request) -> Response:
    service = http.portal(request).recovery

    async def act(flow: RecoveryFlow, v: dict[str, str]) -> RecoveryFlow:
        return await service.choose_method(flow, v["kind"], v["csrf_token"])

    return await _step(request, act, ("kind",))


async def verify(request: Request) -> Response:
    service = http.portal(request).recovery

    async def act(flow: RecoveryFlow, v: dict[str, str]) -> RecoveryFlow:
        return await service.verify(
            flow, code=v["code"], credential=v["credential"], csrf=v["csrf_token"], ctx=http.context(request)
        )

    return await _step(request, act, ("code", "credential"), long_fields=("credential",))


async def choose(request: Request) -> Response:
    service = http.portal(request).recovery

    async def act(flow: RecoveryFlow, v: dict[str, str]) -> RecoveryFlow:
        return await service.choose_action(flow, v["action"], v["csrf_token"])

    return await _step(request, act, ("action",))


async def new_password(request: Request) -> Response:
    service = http.portal(request).recovery

    async def act(flow: RecoveryFlow, v: dict[str, str]) -> RecoveryFlow:
        return await service.reset_password(
            flow,
            new=v["new_password"],
            confirm=v["confirm_password"],
            csrf=v["csrf_token"],
            ctx=http.context(request),
        )

    return await _step(request, act, ("new_password", "confirm_password"))


async def unlock(request: Request) -> Response:
    service = http.portal(request).recovery

    async def act(flow: RecoveryFlow, v: dict[str, str]) -> RecoveryFlow:
        return await service.unlock(flow, password=v["password"], csrf=v["csrf_token"], ctx=http.context(request))

    return await _step(request, act, ("password",))


async def _challenge(request: Request, flow_id: str, secret: str) -> Challenge | None:
    flow = await http.portal(request).recovery.load(flow_id, secret)
    return flow.captcha if flow.state is RecoveryState.IDENTIFY else None


async def captcha_picture(request: Request) -> Response:
    return await captcha_media(request, lambda flow_id, secret: _challenge(request, flow_id, secret), audio=False)


async def captcha_audio(request: Request) -> Response:
    return await captcha_media(request, lambda flow_id, secret: _challenge(request, flow_id, secret), audio=True)
