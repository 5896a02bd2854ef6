"""OpenID Connect routes: parse the request, call the provider (alacop/protocols/oidc), send its answer.

No CSRF tokens here: the authorization endpoint is a GET that only issues a code to a registered
redirect URI, and the others are called by applications, protected by client authentication, PKCE
and bearer tokens.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from alacop.core.errors import AlacopError
from alacop.protocols.oidc.authorization import Redirect
from alacop.web import http
from alacop.web.routes.account import current

_PUBLIC_JSON = {"Cache-Control": "public, max-age=60", "Access-Control-Allow-Origin": "*"}


def _json(status: int, body: dict[str, object], headers: list[tuple[str, str]]) -> Response:
    response = JSONResponse(body, status_code=status)
    for name, value in headers:
        response.headers[name] = value
    return response


async def discovery(request: Request) -> Response:
    return JSONResponse(http.portal(request).oidc.metadata(), headers=_PUBLIC_JSON)


async def jwks(request: Request) -> Response:
    body = await http.portal(request).oidc.jwks()
    return JSONResponse(body, headers=_PUBLIC_JSON, media_type="application/jwk-set+json")


async def authorize(request: Request) -> Response:
    p = http.portal(request)
    who = await current(request)
    outcome = await p.oidc.authorize(list(request.query_params.multi_items()), who, http.context(request))
    if isinstance(outcome, Redirect):
        return RedirectResponse(outcome.location, status_code=302)
    return RedirectResponse(f"/login?{urlencode({'return_to': outcome.return_to})}", status_code=303)


async def _form(request: Request) -> list[tuple[str, str]] | Response:
    try:
        form = await http.read_form(request)
    except AlacopError:
        return _json(400, {"error": "invalid_request", "error_description": "expected a form body"}, [])
    return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]


async def token(request: Request) -> Response:
    items = await _form(request)
    if isinstance(items, Response):
        return items
    p = http.portal(request)
    answer = await p.oidc.token(items, request.headers.get("authorization"), http.context(request))
    return _json(answer.status, answer.body, answer.headers)


async def userinfo(request: Request) -> Response:
    form_token = None
    if request.method == "POST" and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        items = await _form(request)
        if isinstance(items, Response):
            return items
        form_token = dict(items).get("access_token")
    answer = await http.portal(request).oidc.userinfo(request.headers.get("authorization"), form_token)
    return _json(answer.status, answer.body, answer.headers)


async def revoke(request: Request) -> Response:
    items = await _form(request)
    if isinstance(items, Response):
        return items
    p = http.portal(request)
    answer = await p.oidc.revoke(items, request.headers.get("authorization"), http.context(request))
    return _json(answer.status, answer.body, answer.headers)


async def introspect(request: Request) -> Response:
    items = await _form(request)
    if isinstance(items, Response):
        return items
    p = http.portal(request)
    answer = await p.oidc.introspect(items, request.headers.get("authorization"), http.context(request))
    return _json(answer.status, answer.body, answer.headers)
