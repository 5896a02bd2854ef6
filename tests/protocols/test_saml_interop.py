"""The portal's SAML Responses checked by python3-saml (OneLogin's toolkit, on xmlsec), a service
provider library that is not ours: signatures, audience, InResponseTo, Recipient, time window and
attributes. python3-saml also builds and signs the AuthnRequests here, so the portal's check of the
Redirect binding's signature is tested against an independent signer."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from onelogin.saml2.auth import OneLogin_Saml2_Auth

from tests.conftest import Harness
from tests.protocols.conftest import sign_in_from
from tests.support.saml import (
    ACS,
    IDP_ENTITY,
    IDP_SSO,
    SP_ENTITY,
    SpKeys,
    authn_request,
    idp_certificate,
    posted,
    python3_saml_settings,
    redirect_query,
    register_sp,
    sp_keys,
    sp_metadata,
)


def settings(h: Harness, keys: SpKeys | None = None) -> dict[str, Any]:
    """Requests are signed when the application has keys."""
    idp = {
        "entityId": IDP_ENTITY,
        "singleSignOnService": {"url": IDP_SSO, "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"},
        "x509cert": idp_certificate(h),
    }
    return python3_saml_settings(SP_ENTITY, ACS, keys, idp, reject_unsolicited=False)


def acs_request(saml_response: str, relay_state: str | None = None) -> dict[str, Any]:
    parts = urlsplit(ACS)
    post = {"SAMLResponse": saml_response}
    if relay_state is not None:
        post["RelayState"] = relay_state
    return {
        "https": "on",
        "http_host": parts.hostname,
        "script_name": parts.path,
        "get_data": {},
        "post_data": post,
    }


def sp_login(h: Harness, config: dict[str, Any], relay_state: str = "/records/42") -> tuple[str, str]:
    """python3-saml's own AuthnRequest, as the redirect it builds; returns (portal path, request ID)."""
    auth = OneLogin_Saml2_Auth(acs_request(""), config)
    location = auth.login(return_to=relay_state)
    assert location.startswith(IDP_SSO + "?")
    return location[len("http://127.0.0.1:8000") :], auth.get_last_request_id()


@pytest.fixture
def frozen_now(harness: Harness) -> Harness:
    # python3-saml checks times against the real clock; the portal's clock is pinned to it here.
    harness.clock.set(datetime.now(UTC).replace(microsecond=0))
    return harness


def test_python3_saml_accepts_the_response_to_its_own_signed_request(frozen_now: Harness) -> None:
    h = frozen_now
    h.create_user()
    keys = sp_keys()
    register_sp(h, metadata=sp_metadata(keys=keys, signed_requests=True))
    config = settings(h, keys)
    path, request_id = sp_login(h, config)
    first = h.client.get(path, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/login?flow=")
    back = sign_in_from(h, first.headers["location"])
    form = posted(h.client.get(back))
    assert form.action == ACS and form.relay_state == "/records/42"
    auth = OneLogin_Saml2_Auth(acs_request(form.saml_response, form.relay_state), config)
    auth.process_response(request_id=request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.is_authenticated()
    attributes = auth.get_attributes()
    assert attributes["username"] == ["cs0101@alacop.gov"]
    assert attributes["email"] == ["cs0101@test.al.gov"]
    assert attributes["agencyOri"] == ["AL0010000"]
    assert attributes["aal"] == ["aal2"]
    assert auth.get_nameid_format() == "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
    assert auth.get_nameid().startswith("_")


def _answered(h: Harness, config: dict[str, Any]) -> tuple[str, str]:
    """A signed-in user's Response to python3-saml's own request: (SAMLResponse, request ID)."""
    path, request_id = sp_login(h, config)
    form = posted(h.client.get(path))
    return form.saml_response, request_id


def _errors(config: dict[str, Any], saml_response: str, request_id: str | None) -> list[str]:
    auth = OneLogin_Saml2_Auth(acs_request(saml_response), config)
    auth.process_response(request_id=request_id)
    assert not auth.is_authenticated()
    return [auth.get_last_error_reason() or ""]


def test_python3_saml_refuses_a_tampered_a_misdirected_and_a_foreign_response(frozen_now: Harness) -> None:
    h = frozen_now
    h.create_user()
    h.sign_in()
    register_sp(h)
    config = settings(h)
    saml_response, request_id = _answered(h, config)
    # Intact and for this request: accepted (so each refusal below is for its one fault).
    accepted = OneLogin_Saml2_Auth(acs_request(saml_response), config)
    accepted.process_response(request_id=request_id)
    assert accepted.get_errors() == [] and accepted.is_authenticated()

    xml = base64.b64decode(saml_response)
    tampered = base64.b64encode(xml.replace(b"Test County Sheriff", b"Test County Sherif_")).decode()
    assert "Signature validation failed" in _errors(config, tampered, request_id)[0]
    assert "InResponseTo" in _errors(config, saml_response, "_another-request")[0]
    other_audience = settings(h)
    other_audience["sp"]["entityId"] = "https://someone-else.example/sp"
    assert "audience" in _errors(other_audience, saml_response, request_id)[0].lower()
    other_idp = settings(h)
    other_idp["idp"]["x509cert"] = sp_keys().cert_body  # a certificate the portal never signed with
    assert "Signature validation failed" in _errors(other_idp, saml_response, request_id)[0]


def test_python3_saml_refuses_an_expired_response(frozen_now: Harness) -> None:
    h = frozen_now
    # Issued ten minutes ago by the portal's clock: past NotOnOrAfter (5 min) by python3-saml's real clock.
    h.clock.advance(timedelta(minutes=-10))
    h.create_user()
    h.sign_in()
    register_sp(h)
    config = settings(h)
    # The request is dated by the portal's clock too (python3-saml's would be ten minutes ahead: stale).
    form = posted(h.client.get("/saml/sso?" + redirect_query(authn_request(h.clock.now(), request_id="_old"))))
    reason = _errors(config, form.saml_response, "_old")[0]
    # python3-saml reads the bearer confirmation's NotOnOrAfter first: past it, no confirmation is valid.
    assert reason == "A valid SubjectConfirmation was not found on this Response"
