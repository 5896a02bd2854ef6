"""Records Search (demo): a separate web application that signs in through the AlaCOP Portal.

It is a confidential OpenID Connect client built with Authlib's Starlette client: authorization code
with PKCE (S256), a nonce, the ID token validated by Authlib against the portal's JWKS, userinfo, and
RP-initiated sign-out. `alacop demo` registers it and writes its client id and secret to
`data/records_demo.json`; `./scripts/records-demo` runs it on http://localhost:8001.
"""

from __future__ import annotations

import html
import json
import os
import secrets
from pathlib import Path
from typing import Any

from authlib.integrations.starlette_client import OAuth, OAuthError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

HERE = os.environ.get("RECORDS_DEMO_URL", "http://localhost:8001")
CREDENTIALS = Path(os.environ.get("RECORDS_DEMO_CREDENTIALS", "data/records_demo.json"))


def _credentials() -> dict[str, str]:
    try:
        data: dict[str, str] = json.loads(CREDENTIALS.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"records demo: {CREDENTIALS} is missing or unreadable; run `alacop demo` first") from exc
    return data


def build_app() -> Starlette:
    creds = _credentials()
    portal = os.environ.get("RECORDS_DEMO_PORTAL") or creds.get("portal") or "http://localhost:8000"
    oauth = OAuth()
    oauth.register(
        "alacop",
        client_id=creds["client_id"],
        client_secret=creds["client_secret"],
        server_metadata_url=f"{portal}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile email agency roles", "code_challenge_method": "S256"},
    )

    def page(body: str) -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<link rel='icon' href='data:,'><title>Records Search (demo)</title></head><body>"
            f"<header><strong>Records Search</strong> (demo application)</header><main>{body}</main></body></html>"
        )

    async def home(request: Request) -> Response:
        user: dict[str, Any] | None = request.session.get("user")
        if not user:
            return page(
                "<h1>Records Search</h1><p>You are not signed in.</p><p><a href='/login'>Sign in with AlaCOP</a></p>"
            )
        rows = "".join(
            f"<tr><th scope='row'>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
            for k, v in sorted(user.items())
        )
        return page(
            f"<h1>Signed in as {html.escape(str(user.get('preferred_username', user.get('sub'))))}</h1>"
            f"<table><caption>The claims AlaCOP sent</caption>{rows}</table>"
            "<form method='post' action='/logout'><button type='submit'>Sign out</button></form>"
        )

    async def login(request: Request) -> Response:
        return await oauth.alacop.authorize_redirect(request, f"{HERE}/callback", nonce=secrets.token_urlsafe(16))

    async def callback(request: Request) -> Response:
        try:
            token = await oauth.alacop.authorize_access_token(request)
        except OAuthError as exc:
            return page(f"<h1>Sign-in failed</h1><p>{html.escape(exc.error or 'error')}</p><p><a href='/'>Back</a></p>")
        claims = dict(token.get("userinfo") or {})
        claims.update(await oauth.alacop.userinfo(token=token))
        request.session["user"] = claims
        request.session["id_token"] = token.get("id_token")
        return RedirectResponse("/", status_code=303)

    async def logout(request: Request) -> Response:
        id_token = request.session.pop("id_token", None)
        request.session.pop("user", None)
        metadata = await oauth.alacop.load_server_metadata()
        if not metadata.get("end_session_endpoint"):
            # A portal without RP-initiated logout: this application's own session is all there is to end.
            return RedirectResponse("/", status_code=303)
        return await oauth.alacop.logout_redirect(request, post_logout_redirect_uri=f"{HERE}/", id_token_hint=id_token)

    return Starlette(
        routes=[
            Route("/", home),
            Route("/login", login),
            Route("/callback", callback),
            Route("/logout", logout, methods=["POST"]),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=creds.get("session_key") or secrets.token_urlsafe(32),
                same_site="lax",
                https_only=HERE.startswith("https://"),
            )
        ],
    )
