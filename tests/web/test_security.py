"""Web hardening: CSRF, security headers, hostile input, rate limits, health checks, access log."""

from __future__ import annotations

import json
import logging

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from alacop.core.errors import InvalidInput
from alacop.web.middleware import ApiRoutes
from tests.conftest import Harness


def _refusals(h: Harness) -> list[str]:
    return [r.reason for r in h.audit() if r.type in {"RequestRefused", "RateLimited"}]


# -- CSRF --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["", "forged-token", "x" * 64])
def test_login_steps_refuse_a_missing_or_wrong_csrf_token(harness: Harness, token: str) -> None:
    flow = harness.flow_of(harness.start())
    response = harness.client.post(
        f"/login/identifier?flow={flow.id}", data={"identifier": "cs0101", "csrf_token": token}
    )
    assert response.status_code == 403
    assert response.context["code"] == "csrf_failed"
    assert _refusals(harness) == ["csrf_failed"]
    # Nothing moved: the flow is still waiting for its identifier.
    again = harness.client.get(f"/login?flow={flow.id}")
    assert again.template.name == "login/identifier.html"


def test_password_change_refuses_a_forged_token(harness: Harness) -> None:
    harness.create_user()
    harness.sign_in()
    response = harness.client.post(
        "/account/password",
        data={
            "csrf_token": "forged",
            "current_password": "granite harbor lantern 77",
            "new_password": "another fine passphrase",
            "confirm_password": "another fine passphrase",
        },
    )
    assert response.status_code == 403
    assert "PasswordChanged" not in harness.audit_types()


# -- headers -----------------------------------------------------------------------------------------
def test_security_headers_on_sign_in_pages(harness: Harness) -> None:
    response = harness.start()
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "no-store" in response.headers["cache-control"]
    assert response.headers["x-frame-options"] == "DENY"
    assert "<script>" not in response.text
    assert "onclick=" not in response.text
    assert "style=" not in response.text


def test_static_files_may_be_cached_but_pages_may_not(harness: Harness) -> None:
    assert "cache-control" not in harness.client.get("/static/css/portal.css").headers
    assert "no-store" in harness.client.get("/login/options").headers["cache-control"]


# -- hostile input -----------------------------------------------------------------------------------
def test_oversized_body_gets_413_and_an_audit_event(harness: Harness) -> None:
    flow = harness.flow_of(harness.start())
    response = harness.client.post(
        f"/login/identifier?flow={flow.id}", data={"identifier": "x" * 70_000, "csrf_token": flow.csrf_token}
    )
    assert response.status_code == 413
    assert "too large" in response.text
    assert _refusals(harness) == ["body_too_large"]


def test_chunked_body_over_the_limit_is_refused(harness: Harness) -> None:
    flow = harness.flow_of(harness.start())

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"identifier=" + b"a" * 1000

    response = harness.client.post(
        f"/login/identifier?flow={flow.id}",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "ctype", "code"),
    [
        (b'{"identifier": "cs0101"}', "application/json", "bad_content_type"),
        (
            b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n',
            "multipart/form-data",
            "malformed_form",
        ),
        (
            b'--b\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\nhi\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
            "malformed_form",
        ),
        (b"&".join(b"f%d=1" % i for i in range(100)), "application/x-www-form-urlencoded", "malformed_form"),
        (
            b"identifier=" + b"a" * 2000 + b"&csrf_token=x",
            "application/x-www-form-urlencoded",
            "field_too_long",
        ),
    ],
)
def test_malformed_forms_get_a_clear_4xx_and_an_audit_event(
    harness: Harness, body: bytes, ctype: str, code: str
) -> None:
    flow = harness.flow_of(harness.start())
    response = harness.client.post(f"/login/identifier?flow={flow.id}", content=body, headers={"content-type": ctype})
    assert 400 <= response.status_code < 500
    assert response.context["code"] == code
    assert _refusals(harness) == [code]


def test_unknown_flow_id_starts_over(harness: Harness) -> None:
    response = harness.client.get("/login?flow=" + "A" * 5000)
    assert response.status_code == 200
    assert response.template.name == "login/identifier.html"


def test_404_and_405_are_pages_not_tracebacks(harness: Harness) -> None:
    missing = harness.client.get("/no/such/page")
    assert missing.status_code == 404
    assert "Page not found" in missing.text
    wrong = harness.client.delete("/login")
    assert wrong.status_code == 405


# -- rate limit --------------------------------------------------------------------------------------
def test_bursts_from_one_address_get_429(app_factory) -> None:  # type: ignore[no-untyped-def]
    h = app_factory(ALACOP_POLICY__RATE_LIMIT_PER_MINUTE="3")
    statuses = []
    for _ in range(5):
        page = h.start()
        flow = h.flow_of(page)
        statuses.append(
            h.client.post(
                f"/login/identifier?flow={flow.id}",
                data={"identifier": "cs0101", "csrf_token": flow.csrf_token},
            ).status_code
        )
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3:] == [429, 429]
    limited = h.client.post("/login/identifier?flow=x", data={"identifier": "a", "csrf_token": "b"})
    assert "Too many attempts" in limited.text
    assert "RateLimited" in h.audit_types()


def test_forwarded_for_is_ignored_unless_from_a_trusted_proxy(app_factory) -> None:  # type: ignore[no-untyped-def]
    h = app_factory(ALACOP_POLICY__RATE_LIMIT_PER_MINUTE="2")
    for i in range(3):
        flow = h.flow_of(h.start())
        last = h.client.post(
            f"/login/identifier?flow={flow.id}",
            headers={"x-forwarded-for": f"10.0.0.{i}"},
            data={"identifier": "cs0101", "csrf_token": flow.csrf_token},
        )
    assert last.status_code == 429


def test_trusted_proxy_forwarded_address_is_used(app_factory) -> None:  # type: ignore[no-untyped-def]
    h = app_factory(ALACOP_TRUSTED_PROXIES="127.0.0.0/8,10.0.0.0/8")
    flow = h.flow_of(h.start())
    h.client.post(
        f"/login/identifier?flow={flow.id}",
        data={"identifier": "cs0101", "csrf_token": flow.csrf_token},
        headers={"x-forwarded-for": "198.51.100.7, 203.0.113.9, 10.1.1.1"},
    )
    # The right-most hop that is not one of our proxies is the client; hops left of it are forgeable.
    assert h.audit()[-1].source_ip == "203.0.113.9"


def test_untrusted_peer_forwarded_header_is_not_believed(app_factory) -> None:  # type: ignore[no-untyped-def]
    h = app_factory(ALACOP_TRUSTED_PROXIES="10.0.0.0/8", peer=("192.0.2.50", 4000))
    flow = h.flow_of(h.start())
    h.client.post(
        f"/login/identifier?flow={flow.id}",
        data={"identifier": "cs0101", "csrf_token": flow.csrf_token},
        headers={"x-forwarded-for": "203.0.113.9"},
    )
    assert h.audit()[-1].source_ip == "192.0.2.50"


# -- health and logs ---------------------------------------------------------------------------------
def test_health_and_readiness(harness: Harness) -> None:
    assert harness.client.get("/healthz").json() == {"status": "ok"}
    ready = harness.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] is True


def test_access_log_is_json_without_query_strings(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="alacop.access"):
        harness.client.get("/login?flow=SECRET-FLOW-ID&code=123456")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "alacop.access"]
    assert lines
    assert lines[0]["path"] == "/login"
    assert all("SECRET-FLOW-ID" not in json.dumps(line) and "123456" not in json.dumps(line) for line in lines)
    assert {"ts", "request_id", "method", "status", "ms", "client"} <= set(lines[0])


def test_no_secret_reaches_the_audit_trail(harness: Harness) -> None:
    harness.create_user(must_change=True)
    page = harness.sign_in()
    flow = harness.flow_of(page)
    harness.finish(
        harness.client.post(
            f"/login/new-password?flow={flow.id}",
            data={
                "csrf_token": flow.csrf_token,
                "current_password": "granite harbor lantern 77",
                "new_password": "secret new passphrase 1",
                "confirm_password": "secret new passphrase 1",
            },
        )
    )
    dumped = json.dumps([r.as_dict() for r in harness.audit()])
    for secret in (
        "granite harbor lantern 77",
        "secret new passphrase 1",
        flow.csrf_token,
        harness.totp_secret,
        harness.totp_code(),
        *harness.recovery_codes,
    ):
        assert secret not in dumped
    token = harness.client.cookies.get("alacop_session")
    assert token
    assert token not in dumped


def test_rate_limit_is_shared_through_redis_when_configured(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import redis
    from starlette.testclient import TestClient

    from alacop.core.passwords import PasswordHasher
    from alacop.store.ratelimit import RedisRateLimiter
    from alacop.web.app import create_app
    from tests.conftest import make_settings
    from tests.store.test_ratelimit import REDIS_URL

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        from tests.conftest import unavailable

        unavailable(f"Redis unreachable: {exc}")
    redis.Redis.from_url(REDIS_URL).flushdb()
    settings = make_settings(
        database_url, tmp_path / "d", ALACOP_REDIS_URL=REDIS_URL, ALACOP_POLICY__RATE_LIMIT_PER_MINUTE="2"
    )
    app = create_app(settings, hasher=PasswordHasher(memory_cost=1024, time_cost=1))
    statuses = []
    for _ in range(2):  # two "instances" behind one load balancer, one shared count
        with TestClient(app, base_url="http://127.0.0.1:8000", client=("192.0.2.77", 1)) as client:
            assert isinstance(app.state.portal.deps.limiter, RedisRateLimiter)
            for _ in range(2):
                page = client.get("/login")
                flow = page.context["flow"]
                statuses.append(
                    client.post(
                        f"/login/identifier?flow={flow.id}",
                        data={"identifier": "cs0101", "csrf_token": flow.csrf_token},
                    ).status_code
                )
    assert statuses == [200, 200, 429, 429]


def test_rate_limiter_outage_fails_open_and_readyz_reports_it(harness: Harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    limiter = harness.portal.deps.limiter

    async def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ConnectionError("redis down")

    monkeypatch.setattr(limiter, "hit", broken)
    monkeypatch.setattr(limiter, "ping", broken)
    harness.create_user()
    assert harness.sign_in().url.path == "/apps"
    monkeypatch.setattr(limiter, "ping", lambda: _false())
    ready = harness.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "database": True, "rate_limiter": False}


async def _false() -> bool:
    return False


def test_unexpected_failure_is_a_plain_500_with_security_headers(harness: Harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async def explode(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("database on fire")

    monkeypatch.setattr(harness.portal.login, "start", explode)
    harness.client.cookies.clear()
    from starlette.testclient import TestClient

    client = TestClient(harness.client.app, raise_server_exceptions=False, base_url="http://127.0.0.1:8000")
    response = client.get("/login")
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "database on fire" not in response.text
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


def test_return_to_accepts_only_local_paths() -> None:
    from alacop.web.routes.login import _LOCAL_PATH

    for good in ("/apps", "/authorize?client_id=abc&state=x%20y"):
        assert _LOCAL_PATH.fullmatch(good), good
    for bad in (
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "javascript:alert(1)",
        "/a b",
        "",
    ):
        assert not _LOCAL_PATH.fullmatch(bad), bad


def test_flow_creation_is_rate_limited_per_address(app_factory) -> None:  # type: ignore[no-untyped-def]
    h = app_factory(ALACOP_POLICY__RATE_LIMIT_PER_MINUTE="2")
    statuses = []
    for _ in range(10):
        h.client.cookies.clear()
        statuses.append(h.client.get("/login", follow_redirects=False).status_code)
    assert statuses[:8] == [200] * 8
    assert statuses[8:] == [429, 429]


# -- ApiRoutes (web/middleware.py) ------------------------------------------------------------------
def test_api_routes_answer_inside_the_portal_headers_and_leave_other_methods_to_the_router(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="alacop.access"):
        answer = harness.client.post("/oauth/token", data={"grant_type": "client_credentials"})
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    # PortalMiddleware still wraps it: security headers, a request id and an access-log line.
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"
    assert any(json.loads(r.getMessage())["path"] == "/oauth/token" for r in caplog.records)
    # Methods ApiRoutes does not take still reach the router.
    assert harness.client.get("/oauth/token").status_code == 405
    assert harness.client.options("/oauth/token", headers={"Origin": "https://x.example"}).status_code == 204


async def test_a_portal_error_raised_by_an_api_route_gets_the_portals_error_answer() -> None:
    sent: list[dict[str, object]] = []

    async def handler(request: Request) -> Response:
        raise InvalidInput("bad", code="bad_thing")

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidInput)
        return PlainTextResponse(exc.code, status_code=exc.status)

    async def router(scope: object, receive: object, send: object) -> None:
        raise AssertionError("the router is not reached")

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    app = ApiRoutes(router, routes={("POST", "/oauth/token"): handler}, on_error=on_error)  # type: ignore[arg-type]
    scope = {"type": "http", "method": "POST", "path": "/oauth/token", "headers": [], "query_string": b""}
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 400 and sent[1]["body"] == b"bad_thing"
