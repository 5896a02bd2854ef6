"""New User Registration and account activation: parse the form, call the core, render or redirect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from alacop.core.approvals import ActivationRefused
from alacop.core.captcha import Challenge
from alacop.core.errors import CsrfFailed, FlowExpired, FlowInvalid, NotFound
from alacop.core.registration import RegistrationStatus
from alacop.flows.base import Message
from alacop.flows.registration import FIELDS, RegistrationFlow, RegistrationState, rules_of_behavior
from alacop.web import http
from alacop.web.render import template
from alacop.web.routes._common import captcha_media, flow_step, rate_limit

EXPIRED = Message("flow_expired", "This took too long. Start again; what you typed was not kept.", "info")
_TEMPLATES = {
    RegistrationState.FORM: "register/form.html",
    RegistrationState.VERIFY: "register/verify.html",
    RegistrationState.SUBMITTED: "register/submitted.html",
}


def _flow_id(request: Request) -> str:
    return request.query_params.get("flow", "")[:64]


async def _restart(request: Request, secret: str, *messages: Message) -> Response:
    await rate_limit(request, "flow", factor=4)
    flow = await http.portal(request).registration.start(secret)
    if messages:
        flow = replace(flow, messages=messages)
    return await render(request, flow)


async def render(request: Request, flow: RegistrationFlow, status: int = 200) -> Response:
    service = http.portal(request).registration
    rules, _ = rules_of_behavior()
    ctx: dict[str, object] = {
        "flow": flow,
        "messages": flow.messages,
        "message_ids": [m.id for m in flow.messages],
        "problems": {p.field: p.message for p in flow.problems},
        "draft": flow.draft,
    }
    if flow.state is RegistrationState.FORM:
        ctx["agencies"] = await service.agencies()
        ctx["rules"] = [p.strip() for p in rules.split("\n\n") if p.strip()]
        ctx["captcha_nonce"] = flow.captcha.nonce if flow.captcha else ""
    if flow.state is RegistrationState.SUBMITTED:
        ctx["status_token"] = service.status_token(flow)
    return template(request, _TEMPLATES[flow.state], ctx, status)


async def page(request: Request) -> Response:
    p = http.portal(request)
    secret, _ = http.ensure_browser_secret(request)
    flow_id = _flow_id(request)
    if not flow_id:
        return await _restart(request, secret)
    try:
        flow = await p.registration.load(flow_id, secret)
    except FlowExpired:
        await p.registration.expired(flow_id, http.context(request))
        return await _restart(request, secret, EXPIRED)
    except FlowInvalid:
        return await _restart(request, secret, EXPIRED)
    return await render(request, flow)


async def _step(
    request: Request,
    action: Callable[[RegistrationFlow, dict[str, str]], Awaitable[RegistrationFlow]],
    fields: tuple[str, ...],
) -> Response:
    service = http.portal(request).registration
    loaded = await flow_step(
        request,
        bucket="register",
        fields=fields,
        load=service.load,
        expired=lambda flow_id, secret: service.expired(flow_id, http.context(request), secret),
        # Registration never returns anywhere: a fresh flow is a fresh flow.
        restart=lambda secret, _return_to: _restart(request, secret, EXPIRED),
    )
    if isinstance(loaded, Response):
        return loaded
    flow, values = loaded
    moved = await action(flow, values)
    return RedirectResponse(f"/register?flow={moved.id}", status_code=303)


async def submit(request: Request) -> Response:
    service = http.portal(request).registration

    async def act(flow: RegistrationFlow, v: dict[str, str]) -> RegistrationFlow:
        return await service.submit_form(flow, v, v["captcha"], v["csrf_token"], http.context(request))

    return await _step(request, act, (*FIELDS, "captcha"))


async def new_captcha(request: Request) -> Response:
    service = http.portal(request).registration

    async def act(flow: RegistrationFlow, v: dict[str, str]) -> RegistrationFlow:
        return await service.new_captcha(flow, v, v["csrf_token"])

    return await _step(request, act, FIELDS)


async def verify(request: Request) -> Response:
    service = http.portal(request).registration

    async def act(flow: RegistrationFlow, v: dict[str, str]) -> RegistrationFlow:
        return await service.verify(flow, v["code"], v["csrf_token"], http.context(request))

    return await _step(request, act, ("code",))


async def resend(request: Request) -> Response:
    service = http.portal(request).registration

    async def act(flow: RegistrationFlow, v: dict[str, str]) -> RegistrationFlow:
        return await service.resend(flow, v["csrf_token"], http.context(request))

    return await _step(request, act, ())


async def edit(request: Request) -> Response:
    service = http.portal(request).registration

    async def act(flow: RegistrationFlow, v: dict[str, str]) -> RegistrationFlow:
        return await service.edit(flow, v["csrf_token"])

    return await _step(request, act, ())


async def _challenge(request: Request, flow_id: str, secret: str) -> Challenge | None:
    flow = await http.portal(request).registration.load(flow_id, secret)
    return flow.captcha if flow.state is RegistrationState.FORM else None


async def captcha_picture(request: Request) -> Response:
    return await captcha_media(request, lambda flow_id, secret: _challenge(request, flow_id, secret), audio=False)


async def captcha_audio(request: Request) -> Response:
    return await captcha_media(request, lambda flow_id, secret: _challenge(request, flow_id, secret), audio=True)


async def status(request: Request) -> Response:
    """Where a request stands, for whoever holds its status link; an unknown link reads as not found."""
    await rate_limit(request, "status")
    http.ensure_browser_secret(request)
    found = await http.portal(request).approvals.status(request.query_params.get("t", "")[:64])
    if found is None:
        raise NotFound("no such registration")
    registration, agency = found
    return template(
        request,
        "register/status.html",
        {
            "registration": registration,
            "agency": agency,
            "pending": registration.status is RegistrationStatus.PENDING,
            "approved": registration.status is RegistrationStatus.APPROVED,
            "denied": registration.status is RegistrationStatus.DENIED,
            "expired": registration.status is RegistrationStatus.EXPIRED,
        },
    )


# -- activation ---------------------------------------------------------------------------------------
async def _activation_refused(request: Request, reason: str) -> Response:
    await http.portal(request).approvals.refused(reason, http.context(request))
    return template(request, "register/activation_refused.html", {}, 410)


async def activate_page(request: Request, messages: tuple[Message, ...] = ()) -> Response:
    await rate_limit(request, "activate")
    secret, _ = http.ensure_browser_secret(request)
    token = request.query_params.get("token", "")[:128]
    try:
        user = await http.portal(request).approvals.activation_user(token)
    except ActivationRefused as exc:
        return await _activation_refused(request, str(exc))
    return template(
        request,
        "register/activate.html",
        {
            "user": user,
            "token": token,
            "policy": http.portal(request).settings.policy,
            "csrf_token": http.form_token(request, secret),
            "messages": messages,
            "message_ids": [m.id for m in messages],
        },
    )


async def activate_submit(request: Request) -> Response:
    await rate_limit(request, "activate")
    p = http.portal(request)
    form = await http.read_form(request)
    if not http.check_form_token(request, http.field(form, "csrf_token")):
        raise CsrfFailed("activation without a valid token")
    token = request.query_params.get("token", "")[:128]
    new, confirm = http.field(form, "new_password"), http.field(form, "confirm_password")
    ctx = http.context(request)
    try:
        user = await p.approvals.activation_user(token)
        problem = p.approvals.password_problem(user, new, confirm)
        if problem is not None:
            return await activate_page(request, (Message(problem.code, problem.message),))
        user = await p.approvals.activate(token, new, ctx)
    except ActivationRefused as exc:
        return await _activation_refused(request, str(exc))
    secret, _ = http.ensure_browser_secret(request)
    flow = await p.login.after_activation(secret, user, ctx)
    # On to the first-sign-in setup of a second factor, in the sign-in flow itself.
    return RedirectResponse(f"/login?flow={flow.id}", status_code=303)
