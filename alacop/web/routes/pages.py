"""Plain pages: home, placeholders for later features, health checks."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from alacop.web import http
from alacop.web.render import template


async def home(request: Request) -> Response:
    return RedirectResponse("/login", status_code=303)


def _coming(request: Request, title: str, text: str) -> Response:
    http.ensure_browser_secret(request)
    return template(request, "coming.html", {"title": title, "text": text})


async def register(request: Request) -> Response:
    return _coming(
        request,
        "New User Registration",
        "Self-registration is not available yet. Ask your agency coordinator to request an AlaCOP account for you.",
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    deps = http.portal(request).deps
    database = await deps.store.ping()
    limiter = await deps.limiter.ping()
    ok = database and limiter
    body = {"status": "ok" if ok else "unavailable", "database": database, "rate_limiter": limiter}
    return JSONResponse(body, status_code=200 if ok else 503)
