"""Helpers for driving the OpenID Connect provider end to end: registered clients, sign-in, code, tokens."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from authlib.oauth2.rfc7636.challenge import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import KeySet

from alacop.core.oidc import Client, ClientType, TokenFormat, client_secret_hash, new_client_id, new_client_secret
from tests.conftest import STRONG, Harness

ISSUER = "http://127.0.0.1:8000"
REDIRECT = "https://records.example.gov/callback"
ALL_SCOPES = ("openid", "profile", "email", "agency", "roles", "offline_access")


@dataclass(frozen=True)
class RP:
    client: Client
    secret: str | None

    @property
    def client_id(self) -> str:
        return self.client.client_id

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.client_id, self.secret) if self.secret else None


def register(h: Harness, *, public: bool = False, **changes: Any) -> RP:
    secret = None if public else new_client_secret()
    client = Client(
        client_id=new_client_id(),
        name="Records Search",
        client_type=ClientType.PUBLIC if public else ClientType.CONFIDENTIAL,
        redirect_uris=(REDIRECT,),
        created_at=h.clock.now(),
        secret_hash=client_secret_hash(h.portal.deps.pepper, secret) if secret else None,
        scopes=ALL_SCOPES,
        access_token_format=TokenFormat.JWT,
    )
    client = replace(client, **changes)

    async def add() -> None:
        async with h.portal.deps.store.transaction() as tx:
            await tx.clients.add(client)

    h.run(add)
    return RP(client, secret)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, create_s256_code_challenge(verifier)


def authorize(h: Harness, rp: RP, **params: str) -> Any:
    query = {
        "response_type": "code",
        "client_id": rp.client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid profile email",
        "state": "st-123",
        "nonce": "n-456",
        **params,
    }
    query = {k: v for k, v in query.items() if v is not None}
    return h.client.get("/oauth/authorize?" + urlencode(query), follow_redirects=False)


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def sign_in_from(h: Harness, login_location: str, identifier: str = "cs0101") -> str:
    """Sign in on the page the provider sent the browser to; returns where the sign-in redirects."""
    page = h.client.get(login_location)
    assert page.status_code == 200
    second = h.password(h.identifier(identifier, page), STRONG)
    flow = h.flow_of(second)
    h.clock.advance(timedelta(seconds=30))
    done = h.client.post(
        f"/login/second-factor?flow={flow.id}",
        data={"csrf_token": flow.csrf_token, "code": h.totp_code(), "credential": ""},
        follow_redirects=False,
    )
    # Back to the request through a page that moves on by itself (form-action 'self' would stop a redirect).
    assert done.status_code == 200 and done.template.name == "login/continue.html", done.text
    location: str = done.context["target"]
    assert f'http-equiv="refresh" content="0;url={location.replace("&", "&amp;")}"' in done.text
    return location


def code_for(h: Harness, rp: RP, **params: str) -> str:
    response = authorize(h, rp, **params)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    answer = query_of(location)
    assert answer["iss"] == ISSUER
    return answer["code"]


def exchange(h: Harness, rp: RP, code: str, verifier: str | None = None, **extra: str) -> Any:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **extra}
    if verifier:
        data["code_verifier"] = verifier
    if rp.secret is None:
        data["client_id"] = rp.client_id
    return h.client.post("/oauth/token", data=data, auth=rp.auth)


def verify(h: Harness, token: str, **expected: Any) -> dict[str, Any]:
    """Verify a JWT against the published JWKS, at the harness clock's time; returns its claims."""
    keys = KeySet.import_key_set(h.client.get("/oauth/jwks").json())
    decoded = jwt.decode(token, keys, algorithms=["ES256", "RS256"])
    now = int(h.clock.now().timestamp())
    options = {name: {"essential": True, "value": value} for name, value in expected.items()}
    jwt.JWTClaimsRegistry(now=now, **options).validate(decoded.claims)
    claims: dict[str, Any] = decoded.claims
    return claims


@pytest.fixture
def signed_in(harness: Harness) -> Harness:
    harness.create_user()
    harness.sign_in()
    return harness
