"""alacop/protocols/oidc/server.py: Authlib's server core deciding over records read beforehand."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749 import errors as oauth_errors
from cryptography.fernet import Fernet

from alacop.core.context import RequestContext
from alacop.core.oidc import Client, IssuedToken, client_secret_hash, new_client_secret
from alacop.protocols.oidc._util import secret_hash
from alacop.protocols.oidc.server import (
    CodeModel,
    OAuthClient,
    PortalRequest,
    PortalServer,
    TokenModel,
    basic_credentials,
    transport_base,
)
from alacop.protocols.oidc.tokens import ClientCache, TokenResponse
from tests.conftest import Harness, audit_details
from tests.protocols.conftest import ISSUER, REDIRECT, authorize, code_for, exchange, pkce, query_of, register

CTX = RequestContext("192.0.2.1", "pytest", "req-1")


def test_the_token_endpoint_runs_authlibs_grants(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    server = h.portal.oidc._token.server
    assert isinstance(server, PortalServer)
    grants = {cls.GRANT_TYPE for cls, _ in server._token_grants}
    assert grants == {"authorization_code", "refresh_token", "client_credentials"}
    # Authlib's own wording for what it refuses: an unknown grant type, a missing code.
    unknown = h.client.post("/oauth/token", data={"grant_type": "password"}, auth=rp.auth)
    assert unknown.status_code == 400 and unknown.json()["error"] == "unsupported_grant_type"
    missing = h.client.post("/oauth/token", data={"grant_type": "authorization_code"}, auth=rp.auth)
    assert missing.json() == {"error": "invalid_request", "error_description": "Missing 'code' in request."}
    refused = [audit_details(e)["description"] for e in h.events("AuthorizationRefused")]
    assert "Missing 'code' in request." in refused


def test_a_public_client_cannot_use_client_credentials(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, public=True)
    answer = h.client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": rp.client_id})
    assert answer.status_code == 400 and answer.json()["error"] == "unauthorized_client"


@pytest.mark.parametrize(
    "data",
    [
        {"grant_type": "client_credentials", "resource": "https://api.example.gov"},
        {"grant_type": "client_credentials", "scope": "openid"},
    ],
)
def test_client_credentials_refuses_resources_and_user_scopes(signed_in: Harness, data: dict[str, str]) -> None:
    h = signed_in
    rp = register(h)
    answer = h.client.post("/oauth/token", data=data, auth=rp.auth)
    expected = "invalid_target" if "resource" in data else "invalid_scope"
    assert answer.status_code == 400 and answer.json()["error"] == expected
    assert h.events("TokenIssued") == []


def test_a_confidential_client_without_its_secret_is_not_a_public_client(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    code = code_for(h, rp)
    answer = h.client.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": rp.client_id},
    )
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    # Still unspent: the real client can redeem it.
    assert exchange(h, rp, code).status_code == 200


def test_two_redemptions_at_once_issue_once_and_revoke_the_winner(signed_in: Harness) -> None:
    """Both read the code unspent before either writes; the conditional spend lets one win, and the
    loser revokes what the winner got (RFC 6749 4.1.2)."""
    h = signed_in
    rp = register(h)
    code = code_for(h, rp)
    items = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", REDIRECT)]
    basic = "Basic " + base64.b64encode(f"{rp.client_id}:{rp.secret}".encode()).decode()

    async def both() -> list[TokenResponse]:
        provider = h.portal.oidc
        return list(await asyncio.gather(*(provider.token(list(items), basic, CTX) for _ in range(2))))

    answers = h.run(both)
    statuses = sorted(a.status for a in answers)
    assert statuses == [200, 400]
    loser = next(a for a in answers if a.status == 400)
    assert loser.body["error"] == "invalid_grant"
    assert [e.reason for e in h.events("TokenRevoked")] == ["code_reused"]
    assert len(h.events("TokenIssued")) == 1
    winner = next(a for a in answers if a.status == 200)
    info = h.client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {winner.body['access_token']}"})
    assert info.status_code == 401


def test_error_redirects_name_the_issuer_and_keep_state(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    answer = authorize(h, rp, scope="openid records:admin")
    assert answer.status_code == 302
    query = query_of(answer.headers["location"])
    assert query["error"] == "invalid_scope" and query["state"] == "st-123" and query["iss"] == ISSUER
    assert h.events("AuthorizationRefused")[-1].reason == "invalid_scope"


def test_plain_pkce_and_a_missing_method_are_refused(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    _, challenge = pkce()
    for extra in ({"code_challenge": challenge}, {"code_challenge": challenge, "code_challenge_method": "plain"}):
        query = query_of(authorize(h, rp, **extra).headers["location"])
        assert query["error"] == "invalid_request" and "S256" in query["error_description"]
    assert h.events("AuthorizationGranted") == []


def test_basic_credentials_are_form_decoded_and_malformed_ones_refused() -> None:
    assert basic_credentials(None) is None
    assert basic_credentials("Bearer abc") is None
    assert basic_credentials("Basic " + "YSUyMGI6YytkJTNB") == ("a b", "c d:")
    for bad in ("Basic !!!", "Basic " + "bm9jb2xvbg=="):
        with pytest.raises(oauth_errors.InvalidClientError) as refused:
            basic_credentials(bad)
        assert refused.value.status_code == 401


def test_models_answer_authlib_from_the_portals_values(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, public=True)
    client = OAuthClient(rp.client, h.portal.deps.pepper)
    assert client.check_endpoint_auth_method("none", "token")
    assert not client.check_endpoint_auth_method("client_secret_basic", "token")
    assert not client.check_grant_type("client_credentials") and client.check_grant_type("refresh_token")
    assert client.get_allowed_scope("openid openid profile") == "openid profile"
    assert client.get_allowed_scope("openid admin") is None and client.get_allowed_scope(None) is None
    assert client.check_redirect_uri(REDIRECT) and not client.check_redirect_uri(REDIRECT + "/")
    assert client.get_default_redirect_uri() is None
    assert not client.check_client_secret("anything")


def test_token_model_sees_spent_refresh_tokens_as_expired(signed_in: Harness) -> None:
    now = signed_in.clock.now()
    record = IssuedToken(
        id="t1",
        family_id="f1",
        client_id="c" * 20,
        scope="openid",
        issued_at=now,
        access_expires_at=now + timedelta(minutes=5),
        access_hash="a",
        refresh_hash="r",
        refresh_expires_at=now + timedelta(hours=8),
    )
    assert not TokenModel(record, "refresh_token", now).is_expired()
    assert TokenModel(record, "access_token", now + timedelta(minutes=5)).is_expired()
    spent = TokenModel(replace(record, refreshed_at=now), "refresh_token", now)
    assert spent.is_expired() and not spent.is_revoked()
    assert TokenModel(record, "refresh_token", now).get_expires_in() == 8 * 3600


def test_portal_request_keeps_repeated_values_for_authlibs_checks() -> None:
    request = PortalRequest("GET", ISSUER + "/oauth/authorize", [("scope", "openid"), ("scope", "x")], None)
    assert request.payload.datalist["scope"] == ["openid", "x"] and request.form["scope"] == "openid"
    assert request.headers == {}


def test_code_model_exposes_what_openid_code_reads(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    code = code_for(h, rp)

    async def read() -> CodeModel:
        async with h.portal.deps.store.read() as tx:
            record = await tx.codes.get(secret_hash(code))
        assert record is not None
        return CodeModel(record)

    model = h.run(read)
    assert model.get_redirect_uri() == REDIRECT and model.get_nonce() == "n-456"
    assert model.get_acr() == "aal2" and "pwd" in model.get_amr()
    assert model.get_auth_time() == int(model.record.auth_time.timestamp())


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"grant_type=client_credentials", "multipart/form-data; boundary=x"),
        (b"grant_type=client_credentials", "application/json"),
        (b"grant_type=client_credentials&scope=\xff\xfe", "application/x-www-form-urlencoded"),
        (b"&".join(b"f%d=1" % n for n in range(31)), "application/x-www-form-urlencoded"),
        (b"grant_type=client_credentials&pad=" + b"x" * 70_000, "application/x-www-form-urlencoded"),
    ],
    ids=["multipart", "json", "not-utf8", "too-many-fields", "too-large"],
)
def test_a_body_that_is_not_a_small_urlencoded_form_is_refused(
    signed_in: Harness, body: bytes, content_type: str
) -> None:
    h = signed_in
    rp = register(h)
    answer = h.client.post("/oauth/token", content=body, headers={"Content-Type": content_type}, auth=rp.auth)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert h.events("TokenIssued") == []
    # The same credentials with a proper body still work.
    fine = h.client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=rp.auth)
    assert fine.status_code == 200


def test_authlib_is_told_the_https_address_behind_a_tls_proxy() -> None:
    assert transport_base("https://portal.example.gov") == "https://portal.example.gov"
    assert transport_base("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    # Allowed by configuration only with behind_tls_proxy: applications reach it over https.
    assert transport_base("http://portal.example.gov") == "https://portal.example.gov"
    request = PortalRequest("POST", transport_base("http://portal.example.gov") + "/oauth/token", [], None)
    assert request.uri == "https://portal.example.gov/oauth/token"


def test_tokens_are_issued_behind_a_tls_proxy_with_a_plain_http_public_url(app_factory: Any) -> None:
    """Configuration allows http://portal.example.gov only behind a TLS proxy; Authlib's https check
    must see the address applications use there, not refuse every request with a server error."""
    h = app_factory(
        base_url="https://portal.example.gov",
        ALACOP_ENV="production",
        ALACOP_PUBLIC_URL="http://portal.example.gov",
        ALACOP_BEHIND_TLS_PROXY="true",
        ALACOP_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALACOP_SMTP_HOST="127.0.0.1",
    )
    rp = register(h)
    answer = h.client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=rp.auth)
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "Bearer"


def test_userinfo_runs_authlibs_endpoint_and_bearer_validator(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    server = h.portal.oidc._token.server
    assert type(server._endpoints["userinfo"][0]).__mro__[1].__name__ == "UserInfoEndpoint"
    tokens = exchange(h, rp, code_for(h, rp)).json()
    header = {"Authorization": f"Bearer {tokens['access_token']}"}
    # No credentials: a bare challenge, no error code (RFC 6750 3.1).
    bare = h.client.get("/oauth/userinfo")
    assert bare.status_code == 401 and bare.json() == {}
    assert bare.headers["www-authenticate"] == 'Bearer realm="userinfo"'
    # Header and form body together: one token per request.
    both = h.client.post("/oauth/userinfo", data={"access_token": tokens["access_token"]}, headers=header)
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"
    # An unknown token: Authlib's invalid_token with the realm.
    unknown = h.client.get("/oauth/userinfo", headers={"Authorization": "Bearer " + "x" * 43})
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_token"
    assert 'realm="userinfo"' in unknown.headers["www-authenticate"]
    # A client_credentials token is about no user: insufficient_scope, with the challenge naming it.
    machine = h.client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=rp.auth).json()
    scoped = h.client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {machine['access_token']}"})
    assert scoped.status_code == 403 and scoped.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in scoped.headers["www-authenticate"]
    # The user's own token still works, by header and by form.
    assert h.client.get("/oauth/userinfo", headers=header).json()["sub"] == h.user("cs0101").id
    assert h.client.post("/oauth/userinfo", data={"access_token": tokens["access_token"]}).status_code == 200
    # An expired token is refused (a disabled application's: test_oidc_tokens.py).
    h.clock.advance(timedelta(seconds=rp.client.access_token_seconds))
    assert h.client.get("/oauth/userinfo", headers=header).status_code == 401


def _save_client(h: Harness, client: Client) -> None:
    async def save() -> None:
        async with h.portal.deps.store.transaction() as tx:
            await tx.clients.update(client)

    h.run(save)


def _client_credentials(h: Harness, auth: tuple[str, str] | None, **extra: str) -> Any:
    return h.client.post("/oauth/token", data={"grant_type": "client_credentials", **extra}, auth=auth)


def test_the_client_cache_spares_the_read_but_never_decides_alone(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, scopes=("openid", "profile"))
    assert _client_credentials(h, rp.auth).status_code == 200
    endpoint = h.portal.oidc._token
    assert endpoint.clients.get(rp.client_id, h.clock.now()) == rp.client
    reads = 0
    store = h.portal.deps.store
    real_read = store.read

    def counting_read() -> Any:
        nonlocal reads
        reads += 1
        return real_read()

    store.read = counting_read  # type: ignore[method-assign]
    try:
        assert _client_credentials(h, rp.auth).status_code == 200
        assert reads == 0  # decided on the cached application, checked inside the write
    finally:
        store.read = real_read  # type: ignore[method-assign]
    issued = len(h.events("TokenIssued"))

    # A rotated secret: the old one stops at once, the new one works at once.
    new_secret = new_client_secret()
    _save_client(h, replace(rp.client, secret_hash=client_secret_hash(h.portal.deps.pepper, new_secret)))
    assert _client_credentials(h, rp.auth).status_code == 401
    assert _client_credentials(h, (rp.client_id, new_secret)).status_code == 200
    assert len(h.events("TokenIssued")) == issued + 1

    # Disabled: refused at once, though the cache still held it as enabled, and nothing written.
    cached = endpoint.clients.get(rp.client_id, h.clock.now())
    assert cached is not None and cached.active
    _save_client(h, replace(cached, disabled_at=h.clock.now()))
    refused = _client_credentials(h, (rp.client_id, new_secret))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert len(h.events("TokenIssued")) == issued + 1


def test_a_cached_client_older_than_its_lifetime_is_read_again(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    assert _client_credentials(h, rp.auth).status_code == 200
    cache = h.portal.oidc._token.clients
    assert cache.get(rp.client_id, h.clock.now()) is not None
    h.clock.advance(ClientCache.TTL)
    assert cache.get(rp.client_id, h.clock.now()) is None
    assert _client_credentials(h, rp.auth).status_code == 200
    assert cache.get(rp.client_id, h.clock.now()) is not None


def test_portal_request_sets_what_authlibs_request_sets() -> None:
    """PortalRequest skips OAuth2Request.__init__ (its https check is made once, at start); it must
    still set every attribute Authlib's own initialiser sets, or a grant would fail on a missing one."""
    ours = PortalRequest("POST", ISSUER + "/oauth/token", [("a", "1")], "Basic x")
    theirs = OAuth2Request("POST", ISSUER + "/oauth/token", headers={"Authorization": "Basic x"})
    assert set(vars(theirs)) <= set(vars(ours))
    assert {k: v for k, v in vars(ours).items() if k != "payload"} == {
        k: v for k, v in vars(theirs).items() if k != "payload"
    }


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/oauth/introspect"])
def test_a_basic_header_that_is_not_ascii_is_invalid_client_not_a_server_error(signed_in: Harness, path: str) -> None:
    h = signed_in
    answer = h.client.post(
        path,
        content=b"grant_type=client_credentials&token=x",
        headers={"Authorization": b"Basic \xe9\xe9\xe9\xe9", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    assert h.events("AuthorizationRefused")[-1].reason == "invalid_client"


def test_an_empty_client_secret_counts_as_omitted(signed_in: Harness) -> None:
    """RFC 6749 3.1: a parameter sent without a value is treated as omitted, so a public client whose
    library always sends client_secret= is still a public client."""
    h = signed_in
    rp = register(h, public=True)
    verifier, challenge = pkce()
    code = code_for(h, rp, code_challenge=challenge, code_challenge_method="S256")
    answer = exchange(h, rp, code, verifier, client_secret="")
    assert answer.status_code == 200, answer.text
    revoked = h.client.post(
        "/oauth/revoke", data={"token": answer.json()["access_token"], "client_id": rp.client_id, "client_secret": ""}
    )
    assert revoked.status_code == 200 and len(h.events("TokenRevoked")) == 1


def _after_read(h: Harness, then: Callable[[], Awaitable[None]]) -> None:
    """Runs `then` between the token endpoint's read and its write, once."""
    endpoint = h.portal.oidc._token
    real = endpoint._read
    done = False

    async def read_then(*args: Any, **kwargs: Any) -> None:
        nonlocal done
        await real(*args, **kwargs)
        if not done:
            done = True
            await then()

    endpoint._read = read_then  # type: ignore[method-assign]


def test_a_sign_out_between_reading_and_writing_a_code_exchange_issues_nothing(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    code = code_for(h, rp)
    user = h.user("cs0101")
    assert user is not None
    session_hash = h.run(_only_session_hash, h, user.id)

    async def sign_out() -> None:
        async with h.portal.deps.store.transaction() as tx:
            assert await tx.sessions.end(session_hash, h.clock.now(), "signed_out")

    _after_read(h, sign_out)
    answer = exchange(h, rp, code)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    assert "ended" in answer.json()["error_description"]
    assert h.events("TokenIssued") == [] and h.events("TokenRevoked") == []


def test_a_refresh_racing_a_revocation_is_refused_without_a_reuse_alarm(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    tokens = exchange(h, rp, code_for(h, rp, scope="openid offline_access")).json()
    family = h.events("TokenIssued")[0]

    async def revoke() -> None:
        async with h.portal.deps.store.transaction() as tx:
            assert await tx.tokens.revoke_family(str(audit_details(family)["family_id"]), h.clock.now()) == 1

    _after_read(h, revoke)
    answer = h.client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=rp.auth
    )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    assert h.events("RefreshTokenReuseDetected") == [] and h.events("TokenRefreshed") == []


async def _only_session_hash(h: Harness, user_id: str) -> str:
    async with h.portal.deps.store.read() as tx:
        sessions = list(await tx.sessions.active_for_user(user_id))
    assert len(sessions) == 1
    return sessions[0].id_hash
