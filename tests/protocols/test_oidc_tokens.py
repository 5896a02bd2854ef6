"""alacop/protocols/oidc/tokens.py (and userinfo.py): codes for tokens, ID tokens, refresh rotation."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from alacop.core.accounts import UserStatus
from alacop.core.context import RequestContext
from alacop.core.directory import Directory
from alacop.core.oidc import TokenFormat
from tests.conftest import Harness, audit_details
from tests.protocols.conftest import ISSUER, RP, code_for, exchange, pkce, register, verify


def _at_hash(token: str) -> str:
    digest = hashlib.sha256(token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def _refresh(h: Harness, rp: RP, refresh_token: str) -> Any:
    return h.client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}, auth=rp.auth
    )


def test_code_flow_id_token_userinfo_and_refresh_rotation(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    verifier, challenge = pkce()
    code = code_for(
        h,
        rp,
        scope="openid profile email agency roles offline_access",
        code_challenge=challenge,
        code_challenge_method="S256",
        acr_values="aal2",
    )
    response = exchange(h, rp, code, verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    tokens = response.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 300 and tokens["refresh_token"]
    user = h.user("cs0101")
    assert user is not None
    claims = verify(h, tokens["id_token"], iss=ISSUER, aud=rp.client_id, nonce="n-456", sub=user.id)
    now = int(h.clock.now().timestamp())
    assert claims["iat"] == now and claims["exp"] == now + 300
    assert claims["at_hash"] == _at_hash(tokens["access_token"])
    assert claims["acr"] == "aal2"
    assert "pwd" in claims["amr"] and "otp" in claims["amr"]
    assert now - 120 < claims["auth_time"] <= now
    assert claims["preferred_username"] == "cs0101@alacop.gov" and claims["email"] == "cs0101@test.al.gov"
    assert claims["agency_ori"] == "AL0010000" and claims["roles"] == ["user"]
    # The access token: an RFC 9068 JWT.
    access = verify(h, tokens["access_token"], iss=ISSUER, aud=rp.client_id, client_id=rp.client_id)
    header = jwt.decode(tokens["access_token"], KeySet.import_key_set(h.client.get("/oauth/jwks").json())).header
    assert header["typ"] == "at+jwt" and access["sub"] == user.id and access["jti"]
    # userinfo, by header and by form.
    info = h.client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 200 and info.json()["sub"] == user.id and info.json()["name"] == "Casey Smith"
    posted = h.client.post("/oauth/userinfo", data={"access_token": tokens["access_token"]})
    assert posted.json()["email"] == "cs0101@test.al.gov"
    # Refresh: a new pair, the old refresh token spent.
    h.clock.advance(timedelta(minutes=1))
    second = _refresh(h, rp, tokens["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert verify(h, rotated["id_token"], iss=ISSUER, aud=rp.client_id)["auth_time"] == claims["auth_time"]
    assert [audit_details(e)["client_id"] for e in h.events("TokenRefreshed")] == [rp.client_id]
    issued = h.events("TokenIssued")
    assert len(issued) == 1 and tokens["access_token"] not in issued[0].details
    # Reusing the old refresh token ends the whole family.
    reused = _refresh(h, rp, tokens["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert len(h.events("RefreshTokenReuseDetected")) == 1
    assert _refresh(h, rp, rotated["refresh_token"]).json()["error"] == "invalid_grant"
    gone = h.client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {rotated['access_token']}"})
    assert gone.status_code == 401 and 'error="invalid_token"' in gone.headers["www-authenticate"]


def test_wrong_or_missing_verifier_is_refused(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, public=True)
    verifier, challenge = pkce()
    code = code_for(h, rp, code_challenge=challenge, code_challenge_method="S256")
    assert exchange(h, rp, code, pkce()[0]).json()["error"] == "invalid_grant"
    assert exchange(h, rp, code).json()["error"] == "invalid_grant"
    # A failed verifier does not spend the code; the right one still works.
    assert exchange(h, rp, code, verifier).status_code == 200


def test_verifier_for_a_code_without_challenge_is_refused(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    code = code_for(h, rp)
    assert exchange(h, rp, code, pkce()[0]).json()["error"] == "invalid_grant"


def test_reused_code_is_refused_and_revokes_its_tokens(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    code = code_for(h, rp)
    first = exchange(h, rp, code).json()
    again = exchange(h, rp, code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    revoked = h.events("TokenRevoked")
    assert [r.reason for r in revoked] == ["code_reused"] and audit_details(revoked[0])["revoked"] == 1
    info = h.client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {first['access_token']}"})
    assert info.status_code == 401


def test_expired_code_is_refused(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    code = code_for(h, rp)
    h.clock.advance(timedelta(seconds=61))
    assert exchange(h, rp, code).json()["error"] == "invalid_grant"


def test_code_bound_to_client_and_redirect_uri(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    other = register(h)
    code = code_for(h, rp)
    assert exchange(h, other, code).json()["error"] == "invalid_grant"
    assert exchange(h, rp, code, redirect_uri="https://records.example.gov/else").json()["error"] == "invalid_grant"
    assert exchange(h, rp, code).status_code == 200


def test_client_authentication(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    wrong = h.client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(rp.client_id, "nope"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    posted = h.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": rp.client_id, "client_secret": rp.secret or ""},
    )
    assert posted.status_code == 200
    both = h.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_secret": rp.secret or ""},
        auth=rp.auth,
    )
    assert both.json()["error"] == "invalid_request"
    confidential_without_secret = exchange(h, RP(rp.client, None), code_for(h, rp))
    assert confidential_without_secret.status_code == 401
    refused = [e for e in h.events("AuthorizationRefused") if audit_details(e).get("endpoint") == "token"]
    assert [e.reason for e in refused] == ["invalid_client", "invalid_request", "invalid_client"]


def test_client_credentials_token(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    response = h.client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=rp.auth)
    body = response.json()
    assert "refresh_token" not in body and "id_token" not in body
    claims = verify(h, body["access_token"], iss=ISSUER, aud=rp.client_id, sub=rp.client_id)
    assert "scope" not in claims
    public = register(h, public=True)
    refused = h.client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": public.client_id})
    assert refused.json()["error"] == "unauthorized_client"


def test_disabled_client_cannot_get_or_use_tokens(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    tokens = exchange(h, rp, code_for(h, rp)).json()
    disabled = rp.client.__class__(**{**_fields(rp.client), "disabled_at": h.clock.now()})

    async def save() -> None:
        async with h.portal.deps.store.transaction() as tx:
            await tx.clients.update(disabled)

    h.run(save)
    refused = h.client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=rp.auth)
    assert refused.status_code == 401
    info = h.client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 401


def test_opaque_access_tokens_and_expiry(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, access_token_format=TokenFormat.OPAQUE)
    tokens = exchange(h, rp, code_for(h, rp)).json()
    assert tokens["access_token"].count(".") == 0
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert h.client.get("/oauth/userinfo", headers=bearer).status_code == 200
    h.clock.advance(timedelta(seconds=301))
    assert h.client.get("/oauth/userinfo", headers=bearer).status_code == 401
    assert h.client.get("/oauth/userinfo").status_code == 401


def test_revocation_and_introspection(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    other = register(h)
    tokens = exchange(h, rp, code_for(h, rp, scope="openid offline_access")).json()
    seen = h.client.post("/oauth/introspect", data={"token": tokens["access_token"]}, auth=rp.auth).json()
    assert seen["active"] is True and seen["client_id"] == rp.client_id and seen["scope"] == "openid offline_access"
    foreign = h.client.post("/oauth/introspect", data={"token": tokens["access_token"]}, auth=other.auth).json()
    assert foreign == {"active": False}
    # Another client cannot revoke it either (and is not told so).
    assert h.client.post("/oauth/revoke", data={"token": tokens["refresh_token"]}, auth=other.auth).status_code == 200
    assert h.client.post("/oauth/introspect", data={"token": tokens["refresh_token"]}, auth=rp.auth).json()["active"]
    done = h.client.post(
        "/oauth/revoke", data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"}, auth=rp.auth
    )
    assert done.status_code == 200
    assert h.client.post("/oauth/introspect", data={"token": tokens["access_token"]}, auth=rp.auth).json() == {
        "active": False
    }
    assert [e.reason for e in h.events("TokenRevoked")] == ["revoked_by_client"]
    public = register(h, public=True)
    refused = h.client.post("/oauth/introspect", data={"token": "x", "client_id": public.client_id})
    assert refused.status_code == 401


def _fields(client: Any) -> dict[str, Any]:
    return {name: getattr(client, name) for name in client.__slots__}


@pytest.mark.parametrize("how", ["disable", "reset_methods", "unlock_no", "end_sessions"])
def test_tokens_end_with_the_accounts_sessions(signed_in: Harness, how: str) -> None:
    """Disabling, re-proofing or ending every session of an account revokes what applications hold."""
    h = signed_in
    rp = register(h)
    tokens = exchange(h, rp, code_for(h, rp, scope="openid offline_access")).json()
    user = h.user("cs0101")
    assert user is not None
    directory = Directory(h.portal.deps)
    ctx = RequestContext.system("test")
    if how == "disable":
        h.run(directory.set_status, "cs0101", UserStatus.DISABLED, ctx)
    elif how == "reset_methods":
        h.run(directory.reset_methods, "cs0101", "seen in person", ctx)
    elif how == "end_sessions":

        async def end_all() -> None:
            async with h.portal.deps.store.transaction() as tx:
                await tx.sessions.end_all_for_user(user.id, h.clock.now(), "ended_by_admin")

        h.run(end_all)
    else:
        # An unlock ends no session: the tokens stay good.
        h.run(directory.unlock, "cs0101", ctx)
    seen = h.client.post("/oauth/introspect", data={"token": tokens["refresh_token"]}, auth=rp.auth).json()
    assert seen["active"] is (how == "unlock_no")
    refreshed = _refresh(h, rp, tokens["refresh_token"])
    assert (refreshed.status_code == 200) is (how == "unlock_no")


def test_a_refresh_without_offline_access_ends_the_family(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    tokens = exchange(h, rp, code_for(h, rp, scope="openid profile offline_access")).json()
    narrowed = h.client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": "openid profile"},
        auth=rp.auth,
    ).json()
    assert narrowed["scope"] == "openid profile" and "refresh_token" not in narrowed


@pytest.mark.parametrize(
    "data",
    [
        {"grant_type": "client_credentials", "client_id": "a\x00b"},
        {"grant_type": "authorization_code", "code": "x\x00", "redirect_uri": "https://x"},
    ],
)
def test_control_characters_are_an_invalid_request_not_a_server_error(signed_in: Harness, data: dict[str, str]) -> None:
    h = signed_in
    for path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect"):
        answer = h.client.post(path, data=data)
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request", (path, answer.text)
    basic = h.client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("a\x00b", "c"))
    assert basic.status_code in (400, 401)


def test_userinfo_follows_the_applications_agency_restriction(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    tokens = exchange(h, rp, code_for(h, rp)).json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert h.client.get("/oauth/userinfo", headers=bearer).status_code == 200

    async def narrow() -> None:
        async with h.portal.deps.store.transaction() as tx:
            client = await tx.clients.get(rp.client_id)
            assert client is not None
            await tx.clients.update(replace(client, agency_ids=("some-other-agency",)))

    h.run(narrow)
    assert h.client.get("/oauth/userinfo", headers=bearer).status_code == 401


def test_a_code_from_a_sign_in_past_its_absolute_limit_is_refused(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    code = code_for(h, rp)
    user = h.user("cs0101")
    assert user is not None

    async def age_the_sign_in() -> None:
        # The code is seconds old; the sign-in behind it is now 13 hours old (the limit is 12).
        async with h.portal.deps.store.transaction() as tx:
            (session,) = await tx.sessions.active_for_user(user.id)
            await tx.sessions.reauthenticated(session.id_hash, h.clock.now() - timedelta(hours=13))

    h.run(age_the_sign_in)
    refused = exchange(h, rp, code)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert "ended" in refused.json()["error_description"]
