"""Plain pages: home, placeholders for later features, health checks."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from alacop.web import http


async def home(request: Request) -> Response:
    return RedirectResponse("/login", status_code=303)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    deps = http.portal(request).deps
    database = await deps.store.ping()
    limiter = await deps.limiter.ping()
    ok = database and limiter
    body = {"status": "ok" if ok else "unavailable", "database": database, "rate_limiter": limiter}
    return JSONResponse(body, status_code=200 if ok else 503)
