"""alacop/protocols/oidc/authorization.py: the authorization endpoint, and the sign-in it sends users through."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from alacop.core.oidc import CODE_LIFETIME
from tests.conftest import Harness, audit_details
from tests.protocols.conftest import REDIRECT, authorize, pkce, query_of, register, sign_in_from


def test_signed_out_user_signs_in_then_returns_with_a_code(harness: Harness) -> None:
    h = harness
    h.create_user()
    rp = register(h)
    first = authorize(h, rp, login_hint="cs0101@alacop.gov")
    assert first.status_code == 303
    login = first.headers["location"]
    # The request waits in the sign-in flow on the server; the address only names the flow.
    assert login.startswith("/login?flow=") and "authorize" not in login
    page = h.client.get(login)
    assert page.context["flow"].return_to.startswith("/oauth/authorize?")
    assert page.context["application"] == "Records Search"
    assert page.context["flow"].typed == "cs0101@alacop.gov"
    assert "to continue to Records Search" in page.text
    back = sign_in_from(h, login)
    assert back.startswith("/oauth/authorize?")
    done = h.client.get(back, follow_redirects=False)
    assert done.status_code == 302
    answer = query_of(done.headers["location"])
    assert answer["state"] == "st-123" and answer["code"]
    granted = h.events("AuthorizationGranted")
    assert len(granted) == 1
    details = audit_details(granted[0])
    assert details["client_id"] == rp.client_id and details["client_name"] == "Records Search"
    assert answer["code"] not in granted[0].details


def test_unknown_client_gets_the_portal_error_page_and_no_redirect(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    for params in ({"client_id": "nobody-knows-this-client"}, {"redirect_uri": "https://evil.example/cb"}, {}):
        query = {"client_id": rp.client_id, "redirect_uri": REDIRECT, **params}
        if not params:
            query["redirect_uri"] = REDIRECT + "/other"
        response = h.client.get("/oauth/authorize", params={"response_type": "code", **query}, follow_redirects=False)
        assert response.status_code == 400
        assert "location" not in response.headers
        assert response.template.name == "error.html"
    reasons = [r.reason for r in h.events("AuthorizationRefused")]
    assert reasons == ["client_unknown", "redirect_uri_unregistered", "redirect_uri_unregistered"]
    assert h.events("RequestRefused") == []  # recorded once, by the provider


def test_disabled_client_is_refused_on_the_portal(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, disabled_at=h.clock.now())
    response = authorize(h, rp)
    assert response.status_code == 400 and "location" not in response.headers
    assert [r.reason for r in h.events("AuthorizationRefused")] == ["client_disabled"]


def test_public_client_must_use_pkce_and_plain_is_refused(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, public=True)
    missing = query_of(authorize(h, rp).headers["location"])
    assert missing["error"] == "invalid_request" and missing["state"] == "st-123"
    _, challenge = pkce()
    plain = query_of(authorize(h, rp, code_challenge=challenge, code_challenge_method="plain").headers["location"])
    assert plain["error"] == "invalid_request"
    implicit_plain = query_of(authorize(h, rp, code_challenge=challenge).headers["location"])
    assert implicit_plain["error"] == "invalid_request"
    ok = query_of(authorize(h, rp, code_challenge=challenge, code_challenge_method="S256").headers["location"])
    assert "code" in ok


def test_only_the_code_flow(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    for response_type in ("token", "id_token", "code id_token"):
        answer = query_of(authorize(h, rp, response_type=response_type).headers["location"])
        assert answer["error"] == "unsupported_response_type"


def test_scope_outside_the_registration_is_refused(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, scopes=("openid", "profile"))
    answer = query_of(authorize(h, rp, scope="openid email").headers["location"])
    assert answer["error"] == "invalid_scope"


def test_prompt_none_without_a_session_returns_login_required(harness: Harness) -> None:
    h = harness
    rp = register(h)
    response = authorize(h, rp, prompt="none")
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    answer = query_of(location)
    assert answer["error"] == "login_required" and answer["state"] == "st-123"


def test_prompt_login_and_max_age_send_a_signed_in_user_to_sign_in_again(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h)
    forced = authorize(h, rp, prompt="login")
    assert forced.status_code == 303
    page = h.client.get(forced.headers["location"])
    assert page.status_code == 200 and page.template.name == "login/identifier.html"
    return_to = page.context["flow"].return_to
    assert return_to.startswith("/oauth/authorize?")
    assert "prompt" not in return_to  # back here, the new sign-in satisfies the request
    back = sign_in_from(h, forced.headers["location"])
    assert "code" in query_of(h.client.get(back, follow_redirects=False).headers["location"])
    h.clock.advance(timedelta(minutes=5))
    assert authorize(h, rp, max_age="60").status_code == 303
    assert authorize(h, rp, max_age="3600").status_code == 302


def test_user_of_another_agency_is_denied(signed_in: Harness) -> None:
    h = signed_in
    rp = register(h, agency_ids=("some-other-agency",))
    answer = query_of(authorize(h, rp).headers["location"])
    assert answer["error"] == "access_denied"
    assert h.events("AuthorizationRefused")[-1].reason == "access_denied"


def test_code_lifetime_is_sixty_seconds() -> None:
    assert timedelta(seconds=60) == CODE_LIFETIME


def test_cant_access_your_account_leads_back_to_the_application(harness: Harness) -> None:
    h = harness
    h.create_user()
    rp = register(h)
    login = authorize(h, rp).headers["location"]
    page = h.client.get(login)
    return_to = page.context["flow"].return_to
    assert return_to.startswith("/oauth/authorize?")
    found = re.search(r'href="(/recover\?return_to=[^"]+)">Can\'t access your account\?', page.text)
    assert found, "the recovery link does not carry the way back"
    link = html.unescape(found.group(1))
    assert parse_qs(urlsplit(link).query)["return_to"] == [return_to]
    recovery = h.client.get(link)
    assert recovery.template.name == "recover/account_type.html"
    assert recovery.context["flow"].return_to == return_to
    # Only local addresses are carried; anything else starts a plain recovery.
    for outside in ("https://evil.example/x", "//evil.example/x", "/\\evil.example"):
        plain = h.client.get(f"/recover?return_to={quote(outside, safe='')}")
        assert plain.context["flow"].return_to is None


@pytest.mark.parametrize(
    "path",
    [
        "/oauth/authorize?client_id=a%00b&redirect_uri=https://x&response_type=code&scope=openid",
        "/oauth/authorize?client_id=AAAAAAAAAAAAAAAAAAAAAAAA&state=s%00&response_type=code&scope=openid",
        "/oauth/logout?client_id=a%00b",
        "/login?return_to=%2Foauth%2Fauthorize%3Fclient_id%3Da%2500b",
    ],
)
def test_nul_bytes_never_reach_the_database(signed_in: Harness, path: str) -> None:
    answer = signed_in.client.get(path, follow_redirects=False)
    assert answer.status_code in (200, 303, 400), (path, answer.status_code)
    assert "location" not in answer.headers or not answer.headers["location"].startswith("https://x")


def test_authorization_requests_are_rate_limited(app_factory: Any) -> None:
    h = app_factory(ALACOP_POLICY__RATE_LIMIT_PER_MINUTE=1)
    codes = {h.client.get("/oauth/authorize?client_id=nope", follow_redirects=False).status_code for _ in range(110)}
    assert 429 in codes


def test_a_long_authorization_request_survives_the_sign_in(harness: Harness) -> None:
    h = harness
    h.create_user()
    long_redirect = "https://records.example.gov/callback/" + "segment/" * 200
    rp = register(h, redirect_uris=(long_redirect,))
    state = "é&=/ " * 200  # every character escaped: the request grows to several kilobytes
    first = authorize(h, rp, redirect_uri=long_redirect, state=state, nonce="n" * 512)
    assert first.status_code == 303 and len(first.headers["location"]) < 100
    assert len(h.client.get(first.headers["location"]).context["flow"].return_to) > 4096
    back = sign_in_from(h, first.headers["location"])
    done = h.client.get(back, follow_redirects=False)
    assert done.status_code == 302 and done.headers["location"].startswith(long_redirect + "?")
    answer = query_of(done.headers["location"])
    assert answer["state"] == state and answer["code"]


def test_an_authorization_request_too_long_to_keep_is_refused_to_the_application(harness: Harness) -> None:
    h = harness
    rp = register(h)
    # Unknown parameters are ignored but kept for the way back; past MAX_RETURN_TO the request is refused.
    first = authorize(h, rp, padding="x" * 9000)
    assert first.status_code == 302 and first.headers["location"].startswith(REDIRECT + "?")
    answer = query_of(first.headers["location"])
    assert answer["error"] == "invalid_request" and answer["state"] == "st-123"
    assert "too long" in answer["error_description"]


def test_a_sign_in_that_took_too_long_still_returns_to_the_application(harness: Harness) -> None:
    h = harness
    h.create_user()
    rp = register(h)
    login = authorize(h, rp).headers["location"]
    page = h.client.get(login)
    return_to = page.context["flow"].return_to
    lifetime = h.portal.deps.policy.flow_lifetime
    h.clock.advance(lifetime + timedelta(seconds=1))
    # Reloading the page: a fresh flow, "This took too long", the same way back.
    again = h.client.get(login, follow_redirects=True)
    assert again.context["flow"].id != page.context["flow"].id
    assert again.context["flow"].return_to == return_to
    assert [m.id for m in again.context["messages"]] == ["flow_expired"]
    assert again.context["application"] == "Records Search"
    # Submitting a step of an expired flow does the same.
    h.clock.advance(lifetime + timedelta(seconds=1))
    flow = again.context["flow"]
    stepped = h.client.post(
        f"/login/identifier?flow={flow.id}", data={"identifier": "cs0101", "csrf_token": flow.csrf_token}
    )
    assert stepped.context["flow"].return_to == return_to
    # Another browser's expired flow gives nothing away: its way back stays with its own browser.
    h.clock.advance(lifetime + timedelta(seconds=1))
    stranger = stepped.context["flow"].id
    h.client.cookies.clear()
    assert h.client.get(f"/login?flow={stranger}").context["flow"].return_to is None


def test_a_recovery_that_took_too_long_still_leads_back_to_the_application(harness: Harness) -> None:
    h = harness
    h.create_user()
    rp = register(h)
    page = h.client.get(authorize(h, rp).headers["location"])
    return_to = page.context["flow"].return_to
    recovery = h.client.get(f"/recover?return_to={quote(return_to, safe='')}")
    flow = recovery.context["flow"]
    assert flow.return_to == return_to
    h.clock.advance(h.portal.deps.policy.flow_lifetime + timedelta(seconds=1))
    again = h.client.get(f"/recover?flow={flow.id}")
    assert again.context["flow"].id != flow.id and again.context["flow"].return_to == return_to
    h.clock.advance(h.portal.deps.policy.flow_lifetime + timedelta(seconds=1))
    stale = again.context["flow"]
    stepped = h.client.post(f"/recover/type?flow={stale.id}", data={"csrf_token": stale.csrf_token, "type": "work"})
    assert stepped.status_code in (200, 303)
    landed = h.client.get(stepped.headers["location"]) if stepped.status_code == 303 else stepped
    assert landed.context["flow"].return_to == return_to
