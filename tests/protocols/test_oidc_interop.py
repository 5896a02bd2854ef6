"""A full code flow driven by Authlib's own client library, which validates the ID token itself."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from authlib.integrations.httpx_client import OAuth2Client
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.jwk import KeySet

from alacop.core.clock import FrozenClock
from tests.conftest import Harness
from tests.protocols.conftest import ISSUER, REDIRECT, register, sign_in_from


def test_authlib_client_code_flow_with_pkce(app_factory: Callable[..., Harness]) -> None:
    # Authlib checks exp and iat against the real time, so the portal's clock starts at it.
    h = app_factory(clock=FrozenClock(datetime.now(UTC).replace(microsecond=0)))
    h.create_user()
    rp = register(h)
    metadata = h.client.get("/.well-known/openid-configuration").json()
    client = OAuth2Client(
        client_id=rp.client_id,
        client_secret=rp.secret,
        scope="openid profile email offline_access",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    client._transport = h.client._transport  # send through the app, as a real client would over HTTP
    verifier = "v" * 20 + "x" * 30
    url, state = client.create_authorization_url(
        metadata["authorization_endpoint"], nonce="authlib-nonce", code_verifier=verifier
    )
    login = h.client.get(url.removeprefix(ISSUER), follow_redirects=False).headers["location"]
    back = sign_in_from(h, login)
    callback = h.client.get(back, follow_redirects=False).headers["location"]
    token = client.fetch_token(
        metadata["token_endpoint"], authorization_response=callback, state=state, code_verifier=verifier
    )
    keys = KeySet.import_key_set(h.client.get("/oauth/jwks").json())
    decoded = jwt.decode(token["id_token"], keys)
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        options={"iss": {"value": ISSUER}, "aud": {"value": rp.client_id}, "nonce": {"value": "authlib-nonce"}},
        params={"nonce": "authlib-nonce", "access_token": token["access_token"]},
    )
    # The harness moved its clock 30 s for the authenticator-app step.
    claims.validate(leeway=120)
    info = client.get(metadata["userinfo_endpoint"]).json()
    assert info["sub"] == claims["sub"]
    refreshed = client.refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"])
    assert refreshed["refresh_token"] != token["refresh_token"]
