"""alacop/protocols/oidc/logout.py: RP-initiated logout, back-channel logout; and the OAuth rate limits."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from alacop.core.accounts import UserStatus
from alacop.core.context import RequestContext
from alacop.core.directory import Directory
from alacop.protocols.oidc.logout import BACKCHANNEL_EVENT
from tests.conftest import Harness, audit_details
from tests.protocols.conftest import ISSUER, RP, code_for, exchange, register, verify

POST_LOGOUT = "https://records.example.gov/signed-out"


class Receiver:
    """A tiny application back end on 127.0.0.1 that records what is POSTed to it."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, dict[str, list[str]]]] = []
        # Statuses to answer with, in order; 200 once they run out.
        self.statuses: list[int] = []
        received, statuses = self.posts, self.statuses

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
                received.append((self.path, self.headers.get("content-type", ""), parse_qs(body)))
                self.send_response(statuses.pop(0) if statuses else 200)
                self.send_header("Cache-Control", "no-store")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/backchannel-logout"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _tokens(h: Harness, rp: RP) -> dict[str, Any]:
    response = exchange(h, rp, code_for(h, rp, scope="openid profile offline_access"))
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def _logout(h: Harness, **params: str) -> Any:
    return h.client.get("/oauth/logout?" + urlencode(params), follow_redirects=False)


def _signed_in_now(h: Harness) -> bool:
    return bool(h.client.get("/apps", follow_redirects=False).status_code == 200)


def _drain(h: Harness) -> None:
    h.run(h.portal.oidc.backchannel.drain)


def test_end_session_with_hint_ends_session_revokes_tokens_and_redirects(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, post_logout_redirect_uris=(POST_LOGOUT,))
    tokens = _tokens(h, rp)
    claims = verify(h, tokens["id_token"], iss=ISSUER, aud=rp.client_id)
    assert len(claims["sid"]) == 32
    # The ID token has expired (5 min): a hint is still good for logging out (RP-Initiated Logout 2).
    h.clock.advance(timedelta(minutes=10))
    response = _logout(h, id_token_hint=tokens["id_token"], post_logout_redirect_uri=POST_LOGOUT, state="bye-1")
    assert response.status_code == 303
    assert response.headers["location"] == POST_LOGOUT + "?state=bye-1"
    assert not _signed_in_now(h)
    assert h.events("SessionEnded")[-1].reason == "signed_out"
    revoked = h.events("TokenRevoked")
    assert [audit_details(e)["client_id"] for e in revoked] == [rp.client_id]
    assert revoked[0].reason == "session_ended" and audit_details(revoked[0])["revoked"] == 1
    refreshed = h.client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=rp.auth
    )
    assert refreshed.json()["error"] == "invalid_grant"
    introspected = h.client.post("/oauth/introspect", data={"token": tokens["access_token"]}, auth=rp.auth)
    assert introspected.json() == {"active": False}


def test_unregistered_post_logout_uri_is_never_redirected_to(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, post_logout_redirect_uris=(POST_LOGOUT,))
    tokens = _tokens(h, rp)
    response = _logout(
        h, id_token_hint=tokens["id_token"], post_logout_redirect_uri="https://evil.example/phish", state="x"
    )
    assert response.status_code == 200 and "location" not in response.headers
    assert response.template.name == "oidc/signed_out.html"
    assert "evil.example" not in response.text
    # The hint named the user, so the sign-out itself happened; only the redirect was refused.
    assert not _signed_in_now(h)
    refused = h.events("AuthorizationRefused")
    assert refused[-1].reason == "post_logout_redirect_uri_unregistered"


def test_forged_hint_asks_first_and_ends_nothing(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, post_logout_redirect_uris=(POST_LOGOUT,))
    tokens = _tokens(h, rp)
    claims = verify(h, tokens["id_token"], iss=ISSUER, aud=rp.client_id)
    # The same claims signed by someone else's key, and our token with its payload changed.
    forged = jwt.encode({"alg": "ES256", "typ": "JWT"}, claims, ECKey.generate_key("P-256"))
    head, _, rest = tokens["id_token"].partition(".")
    tampered = head + ".e30." + rest.partition(".")[2]  # payload replaced by {}, signature kept
    for hint in (forged, tampered):
        response = _logout(h, id_token_hint=hint, post_logout_redirect_uri=POST_LOGOUT, state="s")
        assert response.status_code == 200 and "location" not in response.headers
        assert response.template.name == "oidc/logout_confirm.html"
        assert "Sign out of AlaCOP?" in response.text
        assert _signed_in_now(h)
    assert h.events("TokenRevoked") == []
    assert h.events("AuthorizationRefused")[-1].reason == "id_token_hint_invalid"
    # Confirming signs out, but a failed hint never earns a redirect.
    page = _logout(h, id_token_hint=forged, post_logout_redirect_uri=POST_LOGOUT, state="s")
    fields = {**page.context["params"], "csrf_token": page.context["csrf_token"]}
    done = h.client.post("/oauth/logout", data=fields, follow_redirects=False)
    assert done.status_code == 200 and done.template.name == "oidc/signed_out.html"
    assert not _signed_in_now(h)


def test_get_without_hint_asks_first_then_the_confirmed_post_signs_out(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, post_logout_redirect_uris=(POST_LOGOUT,))
    params = {"client_id": rp.client_id, "post_logout_redirect_uri": POST_LOGOUT, "state": "s2"}
    page = _logout(h, **params)
    assert page.status_code == 200 and page.template.name == "oidc/logout_confirm.html"
    assert "Records Search" in page.text and _signed_in_now(h)
    # A cross-site form without the CSRF token is just another request to confirm.
    again = h.client.post("/oauth/logout", data=params, follow_redirects=False)
    assert again.template.name == "oidc/logout_confirm.html" and _signed_in_now(h)
    wrong = h.client.post("/oauth/logout", data={**params, "csrf_token": "0" * 64}, follow_redirects=False)
    assert wrong.template.name == "oidc/logout_confirm.html" and _signed_in_now(h)
    done = h.client.post(
        "/oauth/logout", data={**params, "csrf_token": page.context["csrf_token"]}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == POST_LOGOUT + "?state=s2"
    assert not _signed_in_now(h)


def test_without_a_session_a_bare_request_shows_the_signed_out_page(harness: Harness) -> None:
    response = _logout(harness)
    assert response.status_code == 200 and response.template.name == "oidc/signed_out.html"


def test_backchannel_logout_token_reaches_the_application(signed_in: Harness, receiver: Receiver) -> None:
    h = signed_in
    rp = register(h, backchannel_logout_uri=receiver.uri)
    other = register(h)  # no back-channel URI: nothing is sent to it
    tokens = _tokens(h, rp)
    _tokens(h, other)
    sid = verify(h, tokens["id_token"], iss=ISSUER, aud=rp.client_id)["sid"]
    user = h.user("cs0101")
    assert user is not None
    page = h.client.get("/apps")
    out = h.client.post("/logout", data={"csrf_token": page.context["csrf_token"]}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    _drain(h)
    assert len(receiver.posts) == 1
    path, content_type, form = receiver.posts[0]
    assert path == "/backchannel-logout" and content_type.startswith("application/x-www-form-urlencoded")
    token = form["logout_token"][0]
    claims = verify(h, token, iss=ISSUER, aud=rp.client_id, sub=user.id, sid=sid)
    assert claims["events"] == {BACKCHANNEL_EVENT: {}}
    assert "nonce" not in claims and claims["jti"]
    assert claims["exp"] - claims["iat"] == 120
    header = jwt.decode(token, KeySet.import_key_set(h.client.get("/oauth/jwks").json())).header
    assert header["typ"] == "logout+jwt" and header["alg"] == "ES256"
    propagated = h.events("LogoutPropagated")
    assert len(propagated) == 1 and propagated[0].outcome == "success"
    assert audit_details(propagated[0])["client_id"] == rp.client_id
    assert {audit_details(e)["client_id"] for e in h.events("TokenRevoked")} == {rp.client_id, other.client_id}


def test_end_session_also_propagates(signed_in: Harness, receiver: Receiver) -> None:
    h = signed_in
    rp = register(h, backchannel_logout_uri=receiver.uri, post_logout_redirect_uris=(POST_LOGOUT,))
    tokens = _tokens(h, rp)
    response = _logout(h, id_token_hint=tokens["id_token"], post_logout_redirect_uri=POST_LOGOUT)
    assert response.status_code == 303 and response.headers["location"] == POST_LOGOUT
    _drain(h)
    assert len(receiver.posts) == 1


def test_unreachable_application_is_audited_and_sign_out_still_works(signed_in: Harness) -> None:
    h = signed_in
    h.portal.oidc.backchannel.retry_delays = (0.0, 0.0)
    rp = register(h, backchannel_logout_uri=f"http://127.0.0.1:{_closed_port()}/bcl")
    _tokens(h, rp)
    page = h.client.get("/apps")
    out = h.client.post("/logout", data={"csrf_token": page.context["csrf_token"]}, follow_redirects=False)
    assert out.status_code == 303 and not _signed_in_now(h)
    _drain(h)
    propagated = h.events("LogoutPropagated")
    assert len(propagated) == 1
    assert propagated[0].outcome == "failure" and propagated[0].reason == "unreachable"
    assert audit_details(propagated[0])["client_id"] == rp.client_id
    assert audit_details(propagated[0])["attempts"] == 3  # tried, then retried twice, then given up


def _sign_out(h: Harness) -> None:
    page = h.client.get("/apps")
    h.client.post("/logout", data={"csrf_token": page.context["csrf_token"]}, follow_redirects=False)
    _drain(h)


def test_a_transient_failure_is_retried_and_delivered(signed_in: Harness, receiver: Receiver) -> None:
    h = signed_in
    h.portal.oidc.backchannel.retry_delays = (0.0, 0.0)
    rp = register(h, backchannel_logout_uri=receiver.uri)
    _tokens(h, rp)
    receiver.statuses.extend([503, 429])
    _sign_out(h)
    assert len(receiver.posts) == 3
    # The same logout token each time: one logout, delivered late.
    assert len({p[2]["logout_token"][0] for p in receiver.posts}) == 1
    (propagated,) = h.events("LogoutPropagated")
    assert propagated.outcome == "success" and propagated.reason == "delivered"
    assert audit_details(propagated)["attempts"] == 3 and audit_details(propagated)["status"] == 200


def test_an_application_that_answers_400_is_not_retried(signed_in: Harness, receiver: Receiver) -> None:
    h = signed_in
    h.portal.oidc.backchannel.retry_delays = (0.0, 0.0)
    rp = register(h, backchannel_logout_uri=receiver.uri)
    _tokens(h, rp)
    receiver.statuses.extend([400, 200])
    _sign_out(h)
    assert len(receiver.posts) == 1
    (propagated,) = h.events("LogoutPropagated")
    assert propagated.outcome == "failure" and propagated.reason == "refused"
    assert audit_details(propagated)["status"] == 400 and audit_details(propagated)["attempts"] == 1


def test_oauth_endpoints_are_rate_limited_per_address(app_factory: Callable[..., Harness]) -> None:
    # 1/min times the OAuth factor (100): the 101st request in the minute is refused.
    h = app_factory(ALACOP_POLICY__RATE_LIMIT_PER_MINUTE=1)
    for _ in range(100):
        assert h.client.get("/oauth/userinfo").status_code == 401
    refused = h.client.get("/oauth/userinfo")
    assert refused.status_code == 429
    assert refused.json()["error"] == "temporarily_unavailable"
    assert refused.headers["retry-after"] == "60" and refused.headers["cache-control"] == "no-store"
    # Each endpoint has its own allowance.
    assert h.client.post("/oauth/token", data={"grant_type": "client_credentials"}).status_code == 401
    assert "RateLimited" in h.audit_types()


def test_a_disabled_account_is_logged_out_of_its_applications_once(signed_in: Harness, receiver: Receiver) -> None:
    """Sessions ended in bulk leave notices on the tokens; the sweep sends each one exactly once."""
    h = signed_in
    rp = register(h, backchannel_logout_uri=receiver.uri)
    quiet = register(h)  # no back-channel URI: its notice is taken and dropped
    tokens = _tokens(h, rp)
    _tokens(h, quiet)
    sid = verify(h, tokens["id_token"], iss=ISSUER, aud=rp.client_id)["sid"]
    user = h.user("cs0101")
    assert user is not None
    ctx = RequestContext.system("test")
    assert h.run(h.portal.oidc.sweep_logouts, ctx) == 0, "nothing is pending before the account changes"
    h.run(Directory(h.portal.deps).set_status, "cs0101", UserStatus.DISABLED, ctx)
    assert h.run(h.portal.oidc.sweep_logouts, ctx) == 1
    assert h.run(h.portal.oidc.sweep_logouts, ctx) == 0, "a notice is sent once"
    (post,) = receiver.posts
    claims = verify(h, post[2]["logout_token"][0], iss=ISSUER, aud=rp.client_id, sub=user.id, sid=sid)
    assert claims["events"] == {BACKCHANNEL_EVENT: {}}
    assert [e.outcome for e in h.events("LogoutPropagated")] == ["success"]
