"""Pure ASGI middleware: request ids, security headers and the structured access log."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alacop.core.errors import AlacopError

access_log = logging.getLogger("alacop.access")
log = logging.getLogger("alacop")
SERVER_ERROR_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Something went wrong</title>"
    b"<h1>Something went wrong</h1><p>Try again in a moment. If it keeps happening, contact the "
    b"Support Center and give them the time of the error.</p></html>"
)

# No inline script anywhere; frames refused; forms post only back to us.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _security_headers(request_id: str, hsts: bool) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-request-id", request_id.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    ]
    if hsts:
        headers.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
    return headers


# Public JSON documents every relying party polls (OpenID Connect discovery and the JWKS): the same bytes
# for everyone, so they are answered before routing and the access log, like static files.
PublicDocument = Callable[[], Awaitable[tuple[bytes, str]]]


class PublicDocuments:
    """Answers GET and HEAD for a few public, cacheable JSON documents from bytes kept ready."""

    def __init__(self, app: ASGIApp, *, documents: Callable[[Scope], dict[str, PublicDocument]], hsts: bool) -> None:
        self.app = app
        self.documents = documents
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        document = self.documents(scope).get(scope["path"])
        if document is None:
            await self.app(scope, receive, send)
            return
        try:
            body, media_type = await document()
        except Exception:  # the database behind the JWKS is down, say: the full stack answers with its 500 page
            log.exception("public document %s failed", scope["path"])
            await self.app(scope, receive, send)
            return
        headers = [
            (b"content-type", media_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"public, max-age=60"),
            (b"access-control-allow-origin", b"*"),
            (b"content-security-policy", CSP.encode()),
            *_security_headers(secrets.token_hex(8), self.hsts),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


class PortalMiddleware:
    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        is_static = scope["path"].startswith("/static/")

        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                extra = _security_headers(request_id, False)
                if b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", CSP.encode()))
                if not is_static and b"cache-control" not in present:
                    # Sign-in pages must not be kept by a shared terminal's browser or any proxy.
                    extra.append((b"cache-control", b"no-store"))
                    extra.append((b"pragma", b"no-cache"))
                if self.hsts:
                    extra.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
                message["headers"] = headers + extra
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # Caught here, inside the headers, so even a failure page carries CSP and no-store.
            log.exception("unhandled error (request %s)", request_id)
            if response_started:
                raise
            await send_wrapper(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"text/html; charset=utf-8"),
                        (b"content-length", str(len(SERVER_ERROR_PAGE)).encode()),
                    ],
                }
            )
            await send_wrapper({"type": "http.response.body", "body": SERVER_ERROR_PAGE})
        finally:
            if not is_static:
                _log_access(scope, status, started, request_id)


def _log_access(scope: Scope, status: int, started: float, request_id: str) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    headers = dict(scope.get("headers") or [])
    entry: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1_000_000:06d}Z",
        "request_id": request_id,
        "method": scope.get("method"),
        # The path only: query strings can carry codes and tokens, which never reach the logs.
        "path": scope.get("path"),
        "status": status,
        "ms": round((time.perf_counter() - started) * 1000, 2),
        "client": scope.get("state", {}).get("client_ip") or (scope.get("client") or ("", 0))[0],
        "ua": headers.get(b"user-agent", b"").decode("latin-1")[:200],
    }
    access_log.info(json.dumps(entry, separators=(",", ":")))


Handler = Callable[[Request], Awaitable[Response]]


class ApiRoutes:
    """The endpoints applications' servers call many times a second (token, revocation, introspection,
    userinfo), answered before Starlette's exception middleware and router, inside PortalMiddleware
    (so with the portal's headers and the access log). Their handlers are the same route functions the
    router holds; a portal error they raise gets the same page as through the router."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: dict[tuple[str, str], Handler],
        on_error: Callable[[Request, Exception], Awaitable[Response]],
    ) -> None:
        self.app = app
        self.routes = routes
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.routes.get((scope.get("method", ""), scope.get("path", ""))) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await handler(request)
        except AlacopError as exc:
            response = await self.on_error(request, exc)
        await response(scope, receive, send)
