"""Request helpers for routes: the caller's address, the core's RequestContext, forms and cookies."""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from alacop.core.context import RequestContext
from alacop.core.errors import InvalidInput
from alacop.core.tokens import new_token

if TYPE_CHECKING:
    from alacop.web.app import Portal

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class BodyTooLarge(InvalidInput):
    code = "body_too_large"
    status = 413


def portal(request: Request) -> Portal:
    return request.app.state.portal  # type: ignore[no-any-return]


def client_ip(request: Request) -> str:
    cached = request.scope.get("state", {}).get("client_ip")
    if cached:
        return str(cached)
    peer = request.client.host if request.client else "unknown"
    networks = portal(request).proxy_networks
    address = peer
    if networks and _in(peer, networks):
        # Walk X-Forwarded-For from the right, skipping our own proxies; the first other hop is the client.
        hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
        for hop in reversed(hops):
            address = hop
            if not _in(hop, networks):
                break
    address = _normalised(address) or peer
    request.scope.setdefault("state", {})["client_ip"] = address
    return address


@functools.lru_cache(maxsize=4096)
def _normalised(address: str) -> str | None:
    """An address in its canonical spelling (so one client has one rate-limit key), or None."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def _in(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def context(request: Request) -> RequestContext:
    return RequestContext(
        source_ip=client_ip(request),
        user_agent=request.headers.get("user-agent", "")[:512],
        request_id=str(request.scope.get("state", {}).get("request_id", "")),
    )


async def _read_body(request: Request, types: tuple[str, ...], expected: str) -> bytes:
    """The body of a request of one of `types`, within the size cap (declared or streamed)."""
    limit = portal(request).settings.max_body_bytes
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in types:
        raise InvalidInput(expected, code="bad_content_type")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput("bad content-length", code="bad_request")
        if int(declared) > limit:
            raise BodyTooLarge("request body over the limit")
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge("request body over the limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, *, max_fields: int = 30, max_files: int = 0) -> FormData:
    """Read a form within the size cap; anything malformed is refused with a 4xx, never a 500.

    Files are refused unless a route asks for them (`max_files`); they count towards the same size cap."""
    # Starlette re-reads the body we cached; form parsing enforces field and file limits.
    request._body = await _read_body(request, FORM_TYPES, "expected a form")
    try:
        limit = portal(request).settings.max_body_bytes
        return await request.form(max_files=max_files, max_fields=max_fields, max_part_size=limit)
    except Exception as exc:  # python-multipart raises several types for malformed bodies
        raise InvalidInput("malformed form", code="malformed_form") from exc


async def read_urlencoded(request: Request, *, max_fields: int = 30) -> list[tuple[str, str]]:
    """An application/x-www-form-urlencoded body (what OAuth 2.0 endpoints take, RFC 6749 3.2) as its
    name/value pairs, in order, within the size cap; parsed by the standard library's C-backed
    `parse_qsl` rather than the general form parser, since the protocol endpoints are the hot path."""
    body = await _read_body(
        request, ("application/x-www-form-urlencoded",), "expected an application/x-www-form-urlencoded body"
    )
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, max_num_fields=max_fields, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("malformed form", code="malformed_form") from exc


def field(form: FormData, name: str, max_length: int = 1024) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise InvalidInput(f"field {name} is not text", code="malformed_form")
    if len(value) > max_length:
        raise InvalidInput(f"field {name} is too long", code="field_too_long")
    return value


# -- cookies --------------------------------------------------------------------------------------
def cookie_name(request: Request, base: str) -> str:
    return portal(request).cookie_prefix + base


def browser_secret(request: Request) -> str | None:
    value = request.cookies.get(cookie_name(request, "alacop_browser"))
    if value and 20 <= len(value) <= 64:
        return value
    return None


def ensure_browser_secret(request: Request) -> tuple[str, bool]:
    existing = browser_secret(request)
    if existing:
        return existing, False
    # Made earlier in this same request (one route binding two things to the browser): the same one,
    # or the cookie sent would not be the secret the first was bound to.
    made = request.scope.get("state", {}).get("new_browser_secret")
    if made:
        return str(made), True
    fresh = new_token(24)
    request.scope.setdefault("state", {})["new_browser_secret"] = fresh
    return fresh, True


def set_cookie(request: Request, response: Response, base: str, value: str) -> None:
    p = portal(request)
    # No Max-Age: the server decides when a session ends, the cookie only carries it (CJIS IA-5 o).
    response.set_cookie(
        p.cookie_prefix + base,
        value,
        path="/",
        secure=p.secure_cookies,
        httponly=True,
        samesite="lax",
    )


def clear_cookie(request: Request, response: Response, base: str) -> None:
    p = portal(request)
    response.delete_cookie(p.cookie_prefix + base, path="/", secure=p.secure_cookies, httponly=True, samesite="lax")


def apply_browser_cookie(request: Request, response: Response) -> Response:
    fresh = request.scope.get("state", {}).get("new_browser_secret")
    if fresh:
        set_cookie(request, response, "alacop_browser", fresh)
    return response


def form_token(request: Request, secret: str) -> str:
    """The CSRF token for forms outside a flow: an HMAC of the browser's secret cookie."""
    key = portal(request).settings.secret_key.encode("utf-8")
    return hmac.new(key, b"csrf:" + secret.encode("utf-8"), hashlib.sha256).hexdigest()


def check_form_token(request: Request, submitted: str) -> bool:
    secret = browser_secret(request)
    if not secret or not submitted:
        return False
    return hmac.compare_digest(form_token(request, secret), submitted)
