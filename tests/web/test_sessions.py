"""Server-side sessions: cookie attributes, idle and absolute expiry, sign-out (CJIS AC-11, AC-12)."""

from __future__ import annotations

from datetime import timedelta

from alacop.core.tokens import token_hash
from tests.conftest import Harness


def _session_cookie(h: Harness) -> str:
    value = h.client.cookies.get("alacop_session")
    assert value
    return value


def test_session_id_is_long_random_and_stored_only_as_a_hash(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    token = _session_cookie(harness)
    assert len(token) >= 43  # 32 random bytes, base64url

    async def lookup() -> tuple[object, object]:
        async with harness.portal.deps.store.transaction() as tx:
            return await tx.sessions.get(token), await tx.sessions.get(token_hash(token))

    raw, hashed = harness.run(lookup)
    assert raw is None
    assert hashed is not None


def test_session_id_rotates_at_each_sign_in(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    first = _session_cookie(harness)
    harness.client.cookies.delete("alacop_session")
    page = harness.identifier("cs0101")
    # A cookie planted (or left) in the browser before sign-in is never promoted (session fixation).
    harness.client.cookies.set("alacop_session", first, domain="127.0.0.1")
    harness.finish(harness.password(page, "granite harbor lantern 77"))
    second = _session_cookie(harness)
    assert first != second
    harness.client.cookies.set("alacop_session", first, domain="127.0.0.1")
    assert harness.client.get("/apps").url.path == "/login"
    ended = [r for r in harness.audit() if r.type == "SessionEnded"]
    assert ended
    assert ended[-1].reason == "rotated"


def test_idle_timeout_after_30_minutes(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    harness.clock.advance(timedelta(minutes=29))
    assert harness.client.get("/apps").url.path == "/apps"
    harness.clock.advance(timedelta(minutes=29))  # activity above kept it alive
    assert harness.client.get("/apps").url.path == "/apps"
    harness.clock.advance(timedelta(minutes=30))
    response = harness.client.get("/apps")
    assert response.url.path == "/login"
    expired = [r for r in harness.audit() if r.type == "SessionExpired"]
    assert expired
    assert expired[-1].reason == "idle_timeout"
    # Once expired it stays expired, even if the clock could be argued back.
    assert harness.client.get("/apps").url.path == "/login"


def test_absolute_timeout_after_12_hours_despite_activity(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    for _ in range(30):
        harness.clock.advance(timedelta(minutes=29, seconds=59))
        if harness.client.get("/apps").url.path != "/apps":
            break
    expired = [r for r in harness.audit() if r.type == "SessionExpired"]
    assert expired
    assert expired[-1].reason == "absolute_timeout"


def test_absolute_limit_is_exactly_12_hours(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    start = harness.clock.now()
    while harness.clock.now() - start < timedelta(hours=11, minutes=50):
        harness.clock.advance(timedelta(minutes=10))
        assert harness.client.get("/apps").url.path == "/apps"
    harness.clock.set(start + timedelta(hours=12))
    assert harness.client.get("/apps").url.path == "/login"


def test_sign_out_ends_the_session_on_the_server(harness: Harness) -> None:
    harness.create_user()
    apps = harness.sign_in()
    token = _session_cookie(harness)
    out = harness.client.post("/logout", data={"csrf_token": apps.context["csrf_token"]})
    assert out.url.path == "/login"
    assert "alacop_session" not in harness.client.cookies
    harness.client.cookies.set("alacop_session", token, domain="127.0.0.1")  # replaying the old cookie
    assert harness.client.get("/apps").url.path == "/login"
    assert "SessionEnded" in harness.audit_types()


def test_sign_out_without_csrf_token_is_refused(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    response = harness.client.post("/logout", data={"csrf_token": "forged"})
    assert response.status_code == 403
    assert harness.client.get("/apps").url.path == "/apps"


def test_disabling_an_account_ends_its_sessions(harness: Harness) -> None:
    from alacop.core.accounts import UserStatus
    from alacop.core.context import RequestContext
    from alacop.core.directory import Directory

    harness.create_user()
    harness.sign_in()
    harness.run(Directory(harness.portal.deps).set_status, "cs0101", UserStatus.DISABLED, RequestContext.system())
    assert harness.client.get("/apps").url.path == "/login"


def test_garbage_session_cookie_is_ignored(harness: Harness) -> None:
    for value in ("x", "y" * 500, "../../etc/passwd", "%00%ff"):
        harness.client.cookies.set("alacop_session", value, domain="127.0.0.1")
        assert harness.client.get("/apps").url.path == "/login"
    harness.client.cookies.clear()
    raw = harness.client.get("/apps", headers={b"cookie": "alacop_session=\u00e9t\u00e9".encode("latin-1")})
    assert raw.url.path == "/login"


def test_production_cookies_are_host_prefixed_secure_httponly_lax(app_factory) -> None:  # type: ignore[no-untyped-def]
    from cryptography.fernet import Fernet

    h = app_factory(
        ALACOP_ENV="production",
        ALACOP_PUBLIC_URL="https://portal.example.gov",
        ALACOP_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALACOP_SMTP_HOST="127.0.0.1",
        ALACOP_SMTP_PORT="9",  # nothing listens: notices fail, and are audited, without a mail server
        base_url="https://portal.example.gov",
    )
    h.create_user()
    page = h.client.get("/login", follow_redirects=False)
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("__Host-alacop_browser=")
    for part in ("Secure", "HttpOnly", "Path=/", "SameSite=lax"):
        assert part.lower() in cookie.lower()
    assert "domain=" not in cookie.lower()
    assert "max-age" not in cookie.lower()
    assert "expires" not in cookie.lower()
    h.client.follow_redirects = False
    flow = page.context["flow"]
    h.client.post(f"/login/identifier?flow={flow.id}", data={"identifier": "cs0101", "csrf_token": flow.csrf_token})
    h.client.post(
        f"/login/password?flow={flow.id}",
        data={"password": "granite harbor lantern 77", "csrf_token": flow.csrf_token},
    )
    signed = h.client.post(
        f"/login/second-factor?flow={flow.id}",
        data={"code": h.totp_code(), "credential": "", "csrf_token": flow.csrf_token},
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == "/apps"
    session_cookie = signed.headers["set-cookie"]
    assert session_cookie.startswith("__Host-alacop_session=")
    assert "secure" in session_cookie.lower()
    assert "httponly" in session_cookie.lower()
    assert "strict-transport-security" in signed.headers


def test_localhost_development_drops_secure_and_prefix(harness: Harness) -> None:
    page = harness.client.get("/login", follow_redirects=False)
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("alacop_browser=")
    assert "secure" not in cookie.lower()
    assert "strict-transport-security" not in page.headers
