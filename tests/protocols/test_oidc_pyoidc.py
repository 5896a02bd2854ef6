"""Complete flows through pyoidc (`oic`), an OpenID-certified relying-party library that is not ours.

The library does the validating here: it discovers the provider, fetches the JWKS from jwks_uri, builds the
authorization request (S256 PKCE, state, nonce), checks the authorization response's `iss` (RFC 9207), and
verifies every ID token it is given: signature against the JWKS, iss, aud, exp, iat, nonce and, where it is
asked to, at_hash. The provider's refusals come back as the library's own error messages. The browser steps
(the authorization redirect and signing in) go through the TestClient; the RP's back channel goes through
tests/support/rp.py. The library's clock is the harness clock.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jwkest import BadSignature
from oic import rndstr
from oic.exception import IssuerMismatch, NotForMe, ParameterError
from oic.oauth2.exception import OtherError, VerificationError
from oic.oauth2.message import ErrorResponse
from oic.oic import Client
from oic.oic.message import (
    AccessTokenResponse,
    AtHashError,
    AuthorizationErrorResponse,
    AuthorizationRequest,
    AuthorizationResponse,
    EXPError,
    IATError,
    IdToken,
    OpenIDSchema,
    ProviderConfigurationResponse,
    TokenErrorResponse,
    verify_id_token,
)

from alacop.core.clock import FrozenClock
from tests.conftest import Harness
from tests.protocols.conftest import ISSUER, REDIRECT, RP, register, sign_in_from
from tests.support.rp import pyoidc_client

SCOPE = ["openid", "profile", "email", "offline_access"]


@pytest.fixture
def h(app_factory: Callable[..., Harness]) -> Harness:
    # The library keeps some checks on the real clock (a grant's ID token), so the portal's starts at it.
    harness = app_factory(clock=FrozenClock(datetime.now(UTC).replace(microsecond=0)))
    harness.create_user()
    return harness


class Flow:
    """One relying party's run through the code flow, every step taken by the library."""

    def __init__(self, h: Harness, rp: RP, monkeypatch: pytest.MonkeyPatch) -> None:
        self.h = h
        self.rp = rp
        self.client, self.adapter = pyoidc_client(h, rp, monkeypatch)
        self.state = rndstr()
        self.nonce = rndstr()
        self.verifier = ""
        self.request: AuthorizationRequest | None = None

    @property
    def authn(self) -> str:
        return "client_secret_basic" if self.rp.secret else ""

    def authorization_url(self, pkce: bool = True, **params: Any) -> str:
        args: dict[str, Any] = {
            "response_type": "code",
            "scope": SCOPE,
            "state": self.state,
            "nonce": self.nonce,
            "redirect_uri": REDIRECT,
            **params,
        }
        if pkce:
            challenge, self.verifier = self.client.add_code_challenge()
            args.update(challenge)
        # request_info is what the library's own do_authorization_request uses: it also records the nonce
        # against the state, for the check in do_access_token_request.
        url, _, _, self.request = self.client.request_info(AuthorizationRequest, method="GET", request_args=args)
        assert url.startswith(self.client.authorization_endpoint + "?")
        return str(url)

    def browse(self, url: str) -> str:
        """The user's browser follows the authorization request; returns the address it lands on at the RP."""
        first = self.h.client.get(url.removeprefix(ISSUER), follow_redirects=False)
        if first.status_code == 303:
            first = self.h.client.get(sign_in_from(self.h, first.headers["location"]), follow_redirects=False)
        assert first.status_code == 302, first.text
        location: str = first.headers["location"]
        assert location.startswith(REDIRECT + "?")
        return location

    def authorize(self, **params: Any) -> AuthorizationResponse:
        callback = self.browse(self.authorization_url(**params))
        response = self.client.parse_response(AuthorizationResponse, info=callback, sformat="urlencoded")
        assert isinstance(response, AuthorizationResponse) and response["state"] == self.state
        return response

    def tokens(self, verifier: str | None = None, **args: str) -> AccessTokenResponse | TokenErrorResponse:
        request_args = {"redirect_uri": REDIRECT, **args}
        verifier = self.verifier if verifier is None else verifier
        if verifier:
            request_args["code_verifier"] = verifier
        answer: AccessTokenResponse | TokenErrorResponse = self.client.do_access_token_request(
            state=self.state, request_args=request_args, authn_method=self.authn
        )
        return answer

    def refresh(self, **kwargs: Any) -> AccessTokenResponse | TokenErrorResponse:
        answer: AccessTokenResponse | TokenErrorResponse = self.client.do_access_token_refresh(
            state=self.state, authn_method=self.authn, **kwargs
        )
        return answer

    def userinfo(self, **kwargs: Any) -> OpenIDSchema | ErrorResponse:
        answer: OpenIDSchema | ErrorResponse = self.client.do_user_info_request(**kwargs)
        return answer


def test_code_flow_with_pkce_refresh_and_userinfo(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    rp = register(h)
    flow = Flow(h, rp, monkeypatch)
    # Discovery: the library checked that the document's issuer is the one it asked about.
    assert flow.client.issuer == ISSUER and flow.client.provider_info["issuer"] == ISSUER
    granted = flow.authorize(acr_values="aal2")
    assert granted["iss"] == ISSUER  # RFC 9207, checked by the library against the discovered issuer
    tokens = flow.tokens()
    assert isinstance(tokens, AccessTokenResponse), tokens.to_dict()
    # The library replaced the ID token by the IdToken it verified (ES256 against the fetched JWKS, iss, aud,
    # exp, iat) and matched its nonce to the one it sent for this state.
    idt = tokens["id_token"]
    assert isinstance(idt, IdToken) and idt.jws_header["alg"] == "ES256"
    assert idt["iss"] == ISSUER and idt["aud"] == [rp.client_id] and idt["nonce"] == flow.nonce
    assert ("GET", ISSUER + "/oauth/jwks") in flow.adapter.sent
    # The full ID-token check a pyoidc RP runs against its authentication request (iss, aud, exp, nonce, acr).
    assert flow.request is not None
    flow.client.verify_id_token(idt, flow.request)
    assert idt["acr"] == "aal2" and idt["auth_time"] <= idt["iat"] < idt["exp"]
    # at_hash (OIDC Core 3.1.3.8 makes it optional in the code flow, so the library checks it only when asked).
    _check_at_hash(flow.client, tokens)

    # userinfo, by the library's default (POST, token in the body) and with a GET and a Bearer header; each
    # time the library checks the answer's sub against the ID token's (OIDC Core 5.3.2).
    posted = flow.userinfo(state=flow.state)
    assert isinstance(posted, OpenIDSchema) and posted["sub"] == idt["sub"]
    assert posted["email"] == "cs0101@test.al.gov" and posted["name"] == "Casey Smith"
    got = flow.userinfo(state=flow.state, method="GET")
    assert isinstance(got, OpenIDSchema) and got.to_dict() == posted.to_dict()

    # Refresh: a new pair, a new ID token verified the same way (OIDC Core 12.2).
    h.clock.advance(timedelta(minutes=1))
    refreshed = flow.refresh()
    assert isinstance(refreshed, AccessTokenResponse), refreshed.to_dict()
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    assert refreshed["access_token"] != tokens["access_token"]
    new_idt = refreshed["id_token"]
    for claim in ("iss", "sub", "aud", "auth_time", "acr"):
        assert new_idt[claim] == idt[claim], claim
    assert new_idt["iat"] == idt["iat"] + 60
    _check_at_hash(flow.client, refreshed)
    assert flow.userinfo(state=flow.state)["sub"] == idt["sub"]  # with the new access token


def test_public_client_pkce_verifier_must_match(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = Flow(h, register(h, public=True), monkeypatch)
    flow.authorize()
    challenge_verifier = flow.verifier
    _, other_verifier = flow.client.add_code_challenge()
    wrong = flow.tokens(verifier=other_verifier)
    assert isinstance(wrong, TokenErrorResponse) and wrong["error"] == "invalid_grant"
    missing = flow.tokens(verifier="")
    assert isinstance(missing, TokenErrorResponse) and missing["error"] == "invalid_grant"
    right = flow.tokens(verifier=challenge_verifier)
    assert isinstance(right, AccessTokenResponse), right.to_dict()
    assert right["id_token"]["aud"] == [flow.rp.client_id]


def test_authorization_errors_reach_the_library_as_its_error_responses(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = Flow(h, register(h), monkeypatch)
    # prompt=none without a portal session: login_required, to the registered redirect, state echoed.
    answer = flow.client.parse_response(
        AuthorizationResponse, info=flow.browse(flow.authorization_url(prompt="none")), sformat="urlencoded"
    )
    assert isinstance(answer, AuthorizationErrorResponse)
    assert answer["error"] == "login_required" and answer["state"] == flow.state
    # A redirect_uri that is not registered: an error page on the portal, never a redirect.
    url = flow.authorization_url(redirect_uri="https://records.example.gov/elsewhere")
    unregistered = h.client.get(url.removeprefix(ISSUER), follow_redirects=False)
    assert unregistered.status_code == 400 and "location" not in unregistered.headers
    # A public client that sends no PKCE challenge: invalid_request.
    public = Flow(h, register(h, public=True), monkeypatch)
    answer = public.client.parse_response(
        AuthorizationResponse, info=public.browse(public.authorization_url(pkce=False)), sformat="urlencoded"
    )
    assert isinstance(answer, AuthorizationErrorResponse)
    assert answer["error"] == "invalid_request" and answer["state"] == public.state
    # RFC 9207: the provider names itself in every response; the library refuses one naming another issuer.
    callback = flow.browse(flow.authorization_url())
    forged = callback.replace("iss=http%3A%2F%2F127.0.0.1%3A8000", "iss=https%3A%2F%2Fidp.example.net")
    assert forged != callback
    with pytest.raises(VerificationError, match="Issuer"):
        flow.client.parse_response(AuthorizationResponse, info=forged, sformat="urlencoded")


def test_code_for_another_redirect_or_expired_is_refused(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = Flow(h, register(h), monkeypatch)
    flow.authorize()
    mismatch = flow.tokens(redirect_uri=REDIRECT + "/other")
    assert isinstance(mismatch, TokenErrorResponse) and mismatch["error"] == "invalid_grant"
    h.clock.advance(timedelta(seconds=61))  # codes live 60 s; the library's own grant lifetime is longer
    expired = flow.tokens()
    assert isinstance(expired, TokenErrorResponse) and expired["error"] == "invalid_grant"


def test_reused_code_is_refused_and_the_first_tokens_stop_working(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = Flow(h, register(h), monkeypatch)
    flow.authorize()
    first = flow.tokens()
    assert isinstance(first, AccessTokenResponse)
    again = flow.tokens()
    assert isinstance(again, TokenErrorResponse) and again["error"] == "invalid_grant"
    revoked = flow.userinfo(token=first["access_token"])
    assert isinstance(revoked, ErrorResponse) and revoked["error"] == "invalid_token"


def test_reused_refresh_token_is_refused_and_ends_the_family(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = Flow(h, register(h), monkeypatch)
    flow.authorize()
    assert isinstance(flow.tokens(), AccessTokenResponse)
    spent = flow.client.get_token(state=flow.state)
    rotated = flow.refresh()
    assert isinstance(rotated, AccessTokenResponse)
    reused = flow.refresh(token=spent)
    assert isinstance(reused, TokenErrorResponse) and reused["error"] == "invalid_grant"
    # The whole family is gone: the rotated refresh token and its access token too.
    after = flow.refresh()
    assert isinstance(after, TokenErrorResponse) and after["error"] == "invalid_grant"
    gone = flow.userinfo(token=rotated["access_token"])
    assert isinstance(gone, ErrorResponse) and gone["error"] == "invalid_token"


def test_library_rejects_id_tokens_that_are_not_exactly_right(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider's genuine response passes; each way of getting it wrong is caught by the library."""
    rp = register(h)
    flow = Flow(h, rp, monkeypatch)
    flow.authorize()
    tokens = flow.tokens()
    assert isinstance(tokens, AccessTokenResponse)
    raw = json.loads(flow.adapter.bodies[flow.client.token_endpoint])
    idt = tokens["id_token"]

    def parse(client: Client, body: dict[str, Any]) -> AccessTokenResponse:
        parsed: AccessTokenResponse = client.parse_response(AccessTokenResponse, info=json.dumps(body), state="x")
        return parsed

    assert parse(flow.client, raw)["id_token"]["sub"] == idt["sub"]
    # Signature: a payload changed under the provider's signature.
    with pytest.raises(BadSignature):
        parse(flow.client, {**raw, "id_token": _with_claims(raw["id_token"], sub="someone-else")})
    # aud: another application's RP does not accept it.
    other, _ = pyoidc_client(h, register(h), monkeypatch)
    with pytest.raises(NotForMe):
        parse(other, raw)
    # iss: an RP that discovered another issuer does not accept it.
    elsewhere, _ = pyoidc_client(h, rp, monkeypatch)
    elsewhere.provider_info["issuer"] = "https://idp.example.net"
    with pytest.raises(IssuerMismatch):
        parse(elsewhere, raw)
    # exp: 300 s after iat; one second past it, expired.
    assert idt["exp"] == idt["iat"] + 300
    h.clock.advance(timedelta(seconds=301))
    with pytest.raises(EXPError):
        parse(flow.client, raw)
    # iat: not in the future (an RP whose clock is behind by more than its allowed skew refuses it).
    h.clock.advance(timedelta(seconds=-302))
    with pytest.raises(IATError):
        parse(flow.client, raw)
    h.clock.advance(timedelta(seconds=1))
    # nonce: the one this state's request carried, checked by do_access_token_request and verify_id_token.
    assert flow.request is not None
    with pytest.raises(OtherError, match="nonce"):
        flow.client.verify_id_token(idt, AuthorizationRequest(**{**flow.request.to_dict(), "nonce": "replayed"}))
    assert flow.authorize()["code"]  # a new code for the same state, the nonce sent with it recorded
    flow.client.state2nonce[flow.state] = "another-request"
    with pytest.raises(ParameterError, match="nonce"):
        flow.tokens()
    # at_hash: bound to this access token and no other.
    with pytest.raises(AtHashError):
        _check_at_hash(flow.client, {**tokens.to_dict(), "access_token": raw["refresh_token"]})


def test_rp_initiated_logout(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenID Connect RP-Initiated Logout 1.0, with the library's EndSessionRequest (id_token_hint from its grant)."""
    done = "https://records.example.gov/signed-out"
    flow = Flow(h, register(h, post_logout_redirect_uris=(done,)), monkeypatch)
    if not flow.client.provider_info.get("end_session_endpoint"):
        pytest.skip("the provider does not advertise an end_session_endpoint yet")
    flow.authorize()
    tokens = flow.tokens()
    assert isinstance(tokens, AccessTokenResponse)
    request = flow.client.construct_EndSessionRequest(
        state=flow.state, request_args={"post_logout_redirect_uri": done, "state": "bye-1"}
    )
    assert request["id_token_hint"] == tokens["id_token_jwt"]
    response = h.client.get(
        request.request(flow.client.end_session_endpoint).removeprefix(ISSUER), follow_redirects=False
    )
    assert response.status_code in (302, 303), response.text
    assert response.headers["location"] == done + "?state=bye-1"
    # The portal session is over (prompt=none now needs a sign-in) and so are the tokens it issued.
    again = Flow(h, flow.rp, monkeypatch)
    answer = again.client.parse_response(
        AuthorizationResponse, info=again.browse(again.authorization_url(prompt="none")), sformat="urlencoded"
    )
    assert isinstance(answer, AuthorizationErrorResponse) and answer["error"] == "login_required"
    revoked = flow.userinfo(token=tokens["access_token"])
    assert isinstance(revoked, ErrorResponse) and revoked["error"] == "invalid_token"


def _check_at_hash(client: Client, tokens: Any) -> None:
    """The library's ID-token verification with its hash check on (what it does for implicit and hybrid)."""
    body = {"id_token": tokens["id_token_jwt"], "access_token": tokens["access_token"]}
    verify_id_token(body, check_hash=True, keyjar=client.keyjar, iss=ISSUER, client_id=client.client_id)


def _with_claims(token: str, **claims: Any) -> str:
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    changed = base64.urlsafe_b64encode(json.dumps({**decoded, **claims}).encode()).rstrip(b"=").decode()
    return f"{header}.{changed}.{signature}"


def test_discovery_document_passes_the_library_s_checks(app_factory: Callable[..., Harness]) -> None:
    # provider_config() parses without verifying; verify() adds the Discovery 1.0 section 3 rules, among them
    # an https issuer, so the portal runs at an https address here.
    origin = "https://127.0.0.1:8443"
    h = app_factory(base_url=origin, ALACOP_PUBLIC_URL=origin)
    document = ProviderConfigurationResponse().from_json(h.client.get("/.well-known/openid-configuration").text)
    assert document.verify()
    assert document["issuer"] == origin and "openid" in document["scopes_supported"]
