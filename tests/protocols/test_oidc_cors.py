"""CORS on the token, userinfo and revocation endpoints: only for browser applications (public clients),
only from their redirect URIs' origins, never with credentials."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from tests.conftest import Harness
from tests.protocols.conftest import register

SPA = "https://spa.example.gov"


def preflight(h: Harness, path: str, origin: str, method: str = "POST") -> dict[str, str]:
    response = h.client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["vary"] == "Origin"
    return dict(response.headers)


def test_a_public_clients_origin_may_call_token_userinfo_and_revoke(harness: Harness) -> None:
    h = harness
    register(h, public=True, redirect_uris=(SPA + "/callback",))
    for path, method in (("/oauth/token", "POST"), ("/oauth/revoke", "POST"), ("/oauth/userinfo", "GET")):
        granted = preflight(h, path, SPA, method)
        assert granted["access-control-allow-origin"] == SPA
        assert method in granted["access-control-allow-methods"]
        assert "authorization" in granted["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in granted
    # The answer itself, an error included, is readable by that page, and only by it.
    answer = h.client.post("/oauth/token", data={"grant_type": "authorization_code"}, headers={"Origin": SPA})
    assert answer.status_code in (400, 401)
    assert answer.headers["access-control-allow-origin"] == SPA and answer.headers["vary"] == "Origin"
    userinfo = h.client.get("/oauth/userinfo", headers={"Origin": SPA})
    assert userinfo.status_code == 401 and userinfo.headers["access-control-allow-origin"] == SPA


def test_other_origins_methods_and_confidential_clients_get_no_grant(harness: Harness) -> None:
    h = harness
    register(h, public=True, redirect_uris=(SPA + "/callback",))
    register(h, redirect_uris=("https://server.example.gov/callback",))
    for origin in ("https://evil.example", "https://server.example.gov", "null", SPA + ".evil.example", ""):
        assert "access-control-allow-origin" not in preflight(h, "/oauth/token", origin)
        answer = h.client.post("/oauth/token", data={"grant_type": "x"}, headers={"Origin": origin})
        assert "access-control-allow-origin" not in answer.headers
    assert "access-control-allow-origin" not in preflight(h, "/oauth/token", SPA, "PUT")
    # Introspection is for resource servers, never a browser: no preflight route at all.
    introspect = h.client.options("/oauth/introspect", headers={"Origin": SPA, "Access-Control-Request-Method": "POST"})
    assert introspect.status_code == 405 and "access-control-allow-origin" not in introspect.headers


def test_a_disabled_public_client_loses_its_origin_within_a_minute(harness: Harness) -> None:
    h = harness
    rp = register(h, public=True, redirect_uris=(SPA + "/callback",))
    assert preflight(h, "/oauth/token", SPA)["access-control-allow-origin"] == SPA

    async def disable() -> None:
        async with h.portal.deps.store.transaction() as tx:
            await tx.clients.update(replace(rp.client, disabled_at=h.clock.now()))

    h.run(disable)
    h.clock.advance(timedelta(seconds=61))
    assert "access-control-allow-origin" not in preflight(h, "/oauth/token", SPA)


def test_origins_are_compared_as_browsers_send_them(harness: Harness) -> None:
    h = harness
    # Registered with an upper-case host and the default port; the browser sends neither.
    register(h, public=True, redirect_uris=("https://SPA.Example.gov:443/callback", "http://127.0.0.1:5173/cb"))
    assert preflight(h, "/oauth/token", SPA)["access-control-allow-origin"] == SPA
    local = "http://127.0.0.1:5173"
    assert preflight(h, "/oauth/token", local)["access-control-allow-origin"] == local
    assert "access-control-allow-origin" not in preflight(h, "/oauth/token", "http://127.0.0.1:5174")
