"""alacop/protocols/oidc/discovery.py and keys.py: metadata, JWKS, rotation."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from joserfc import jwt

from alacop.core.context import RequestContext
from alacop.protocols.oidc.keys import KEY_OVERLAP, PROPAGATION, KeyRing, rotate
from tests.conftest import Harness, audit_details
from tests.protocols.conftest import ISSUER, code_for, exchange, register


def test_discovery_names_only_what_exists(harness: Harness) -> None:
    doc = harness.client.get("/.well-known/openid-configuration").json()
    assert doc["issuer"] == ISSUER
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "none",
    }
    assert doc["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
        "end_session_endpoint",
    ):
        path = doc[name].removeprefix(ISSUER)
        # Every advertised endpoint answers (not 404) on this portal.
        method = harness.client.get if name in ("jwks_uri", "authorization_endpoint") else harness.client.post
        assert method(path).status_code != 404, name
    assert doc["backchannel_logout_supported"] is True and doc["backchannel_logout_session_supported"] is True
    assert doc["frontchannel_logout_supported"] is False


def test_jwks_publishes_one_es256_and_one_rs256_key(harness: Harness) -> None:
    keys = harness.client.get("/oauth/jwks").json()["keys"]
    assert sorted(k["alg"] for k in keys) == ["ES256", "RS256"]
    for key in keys:
        assert key["use"] == "sig"
        assert "d" not in key and "p" not in key  # public halves only


def test_rotation_keeps_old_key_published_then_switches(harness: Harness) -> None:
    h = harness
    h.create_user()
    h.sign_in()
    rp = register(h)
    before = {k["kid"] for k in h.client.get("/oauth/jwks").json()["keys"]}
    h.run(rotate, h.portal.deps, RequestContext.system("test"))
    h.clock.advance(timedelta(seconds=61))  # past the per-process cache
    after = {k["kid"] for k in h.client.get("/oauth/jwks").json()["keys"]}
    assert before < after and len(after) == 4
    assert h.events("SigningKeysRotated")
    # Once every instance has had time to publish the new key, it signs.
    h.clock.advance(PROPAGATION)
    tokens = exchange(h, rp, code_for(h, rp)).json()
    header = jwt.decode(tokens["id_token"], _keyset(h)).header
    assert header["kid"] in after - before
    # After the overlap, the old keys are gone from the JWKS.
    h.clock.advance(KEY_OVERLAP)
    final = {k["kid"] for k in h.client.get("/oauth/jwks").json()["keys"]}
    assert final == after - before


def _keyset(h: Harness):  # type: ignore[no-untyped-def]
    from joserfc.jwk import KeySet

    return KeySet.import_key_set(h.client.get("/oauth/jwks").json())


def test_discovery_and_jwks_carry_the_portals_headers_and_answer_head(harness: Harness) -> None:
    # Answered before routing (web/middleware.PublicDocuments): the same headers as every other page.
    for path, media_type in (
        ("/.well-known/openid-configuration", "application/json"),
        ("/oauth/jwks", "application/jwk-set+json"),
    ):
        response = harness.client.get(path)
        assert response.status_code == 200 and response.headers["content-type"] == media_type
        assert response.headers["cache-control"] == "public, max-age=60"
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert len(response.headers["x-request-id"]) == 16
        assert int(response.headers["content-length"]) == len(response.content)
        head = harness.client.head(path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == response.headers["content-length"]
    # Other methods still reach the routes, which refuse them.
    assert harness.client.post("/oauth/jwks").status_code == 405


def test_instances_starting_together_make_one_key_per_algorithm(harness: Harness) -> None:
    """Each instance has its own KeyRing; on an empty table they race to make the first keys. The
    audit head lock lets one make them; the others look again under it and use those."""
    h = harness

    async def start_four() -> list[str]:
        rings = [KeyRing(h.portal.deps) for _ in range(4)]
        signers = await asyncio.gather(*(ring.signer() for ring in rings))
        return [s.kid for s in signers]

    async def stored() -> list[str]:
        async with h.portal.deps.store.read() as tx:
            return sorted(k.alg for k in await tx.signing_keys.list())

    assert h.run(stored) == []
    kids = h.run(start_four)
    assert len(set(kids)) == 1
    assert h.run(stored) == ["ES256", "RS256"]
    created = h.events("SigningKeysCreated")
    assert len(created) == 1 and created[0].reason == "first_keys"
    assert sorted(a.split(":")[0] for a in audit_details(created[0])["added"]) == ["ES256", "RS256"]
