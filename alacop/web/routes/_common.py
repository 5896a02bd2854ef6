"""Shared pieces of the thin routes."""

from __future__ import annotations

from starlette.requests import Request

from alacop.core.errors import RateLimited
from alacop.web import http

RATE_WINDOW_SECONDS = 60


async def rate_limit(request: Request, bucket: str) -> None:
    """Per-address limit on state-changing requests; bursts get a 429 page (OWASP ASVS 6.3.1)."""
    p = http.portal(request)
    allowed = await p.deps.limiter.hit(
        f"{bucket}:{http.client_ip(request)}", p.settings.policy.rate_limit_per_minute, RATE_WINDOW_SECONDS
    )
    if not allowed:
        raise RateLimited("per-address limit reached")
