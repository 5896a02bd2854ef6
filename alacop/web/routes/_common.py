"""Shared pieces of the thin routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from alacop.core.captcha import Challenge
from alacop.core.errors import FlowExpired, FlowInvalid, NotFound, RateLimited
from alacop.web import http

RATE_WINDOW_SECONDS = 60
LONG_FIELD = 16_384  # a WebAuthn answer; every other field is at most 1,024 characters
F = TypeVar("F")
log = logging.getLogger("alacop")


async def rate_limit(request: Request, bucket: str, *, factor: int = 1) -> None:
    """Per-address limit on state-changing requests; bursts get a 429 page (OWASP ASVS 6.3.1)."""
    p = http.portal(request)
    limit = p.settings.policy.rate_limit_per_minute * factor
    try:
        allowed = await p.deps.limiter.hit(f"{bucket}:{http.client_ip(request)}", limit, RATE_WINDOW_SECONDS)
    except Exception:
        # A Redis outage must not stop every sign-in; the per-account lockout still holds, and
        # /readyz reports the limiter down so the load balancer and the operators see it.
        log.exception("rate limiter unavailable; allowing the request")
        return
    if not allowed:
        raise RateLimited("per-address limit reached")


async def flow_step(
    request: Request,
    *,
    bucket: str,
    fields: tuple[str, ...],
    long_fields: tuple[str, ...] = (),
    load: Callable[[str, str], Awaitable[F]],
    expired: Callable[[str, str], Awaitable[str | None]],
    restart: Callable[[str, str | None], Awaitable[Response]],
) -> tuple[F, dict[str, str]] | Response:
    """The common start of every flow step: limit, parse, and load the browser's flow (or start over).

    `expired(flow_id, browser_secret)` drops an expired flow and returns its way back (`return_to`) if it
    was this browser's; `restart(browser_secret, return_to)` starts a fresh flow still going there.
    """
    await rate_limit(request, bucket)
    form = await http.read_form(request)
    values = {
        name: http.field(form, name, max_length=LONG_FIELD if name in long_fields else 1024)
        for name in ("csrf_token", *fields)
    }
    flow_id = request.query_params.get("flow", "")[:64]
    secret = http.browser_secret(request)
    if secret is None:
        secret, _ = http.ensure_browser_secret(request)
        return await restart(secret, None)
    try:
        flow = await load(flow_id, secret)
    except FlowExpired:
        return await restart(secret, await expired(flow_id, secret))
    except FlowInvalid:
        return await restart(secret, None)
    return flow, values


async def captcha_media(
    request: Request, challenge_of: Callable[[str, str], Awaitable[Challenge | None]], *, audio: bool
) -> Response:
    """The picture or audio of this browser's current challenge in a flow; nothing for anyone else's.

    `challenge_of(flow_id, browser_secret)` loads the flow and returns its challenge while the flow is at
    the step that shows one (None otherwise).
    """
    await rate_limit(request, "captcha")
    try:
        challenge = await challenge_of(request.query_params.get("flow", "")[:64], http.browser_secret(request) or "")
    except (FlowExpired, FlowInvalid) as exc:
        raise NotFound("no challenge") from exc
    nonce = request.query_params.get("c", "")
    if challenge is None or nonce != challenge.nonce:
        raise NotFound("no such challenge")
    captcha = http.portal(request).deps.captcha
    render, media_type = (captcha.audio, "audio/wav") if audio else (captcha.picture, "image/png")
    body = await asyncio.to_thread(render, nonce)
    return Response(body, media_type=media_type, headers={"cache-control": "no-store"})
