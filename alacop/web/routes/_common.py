"""Shared pieces of the thin routes."""

from __future__ import annotations

import logging

from starlette.requests import Request

from alacop.core.errors import RateLimited
from alacop.web import http

RATE_WINDOW_SECONDS = 60
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
