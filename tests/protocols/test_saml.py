"""alacop/protocols/saml: the SAML identity provider end to end through the web app, with every refusal.

Responses are checked here with signxml against the certificate the metadata publishes (pinned, as a
service provider must); tests/protocols/test_saml_interop.py and test_saml_node.py check them with
service-provider libraries that are not ours.
"""

from __future__ import annotations

import base64
import re
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from lxml import etree
from signxml.verifier import XMLVerifier

from alacop.core.saml import NameIdFormat
from tests.conftest import Harness, audit_details
from tests.protocols.conftest import sign_in_from
from tests.support.saml import (
    ACS,
    ACS_2,
    IDP_ENTITY,
    IDP_SSO,
    RSA_SHA1,
    SP_ENTITY,
    authn_request,
    deflate,
    posted,
    redirect_query,
    register_sp,
    sp_keys,
    sp_metadata,
)

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
}


def idp_certs(h: Harness) -> list[str]:
    root = etree.fromstring(h.client.get("/saml/metadata").content)
    return [c.text for c in root.iterfind(".//ds:X509Certificate", NS)]


def pem(body: str) -> str:
    return "-----BEGIN CERTIFICATE-----\n" + body + "\n-----END CERTIFICATE-----\n"


def verified(h: Harness, xml: bytes) -> etree._Element:
    """The Response as verified with the published certificate: both it and its Assertion are signed,
    and what is returned is only what the signatures cover (the guard against signature wrapping)."""
    cert = pem(idp_certs(h)[0])
    outer = XMLVerifier().verify(xml, x509_cert=cert, id_attribute="ID")
    response = outer.signed_xml
    assert response.tag == "{%s}Response" % NS["samlp"]  # noqa: UP031
    assertion = response.find("saml:Assertion", NS)
    if assertion is not None:
        inner = XMLVerifier().verify(etree.tostring(assertion), x509_cert=cert, id_attribute="ID")
        assert inner.signed_xml.tag == "{%s}Assertion" % NS["saml"]  # noqa: UP031
    return response


def sso(h: Harness, query: str) -> Any:
    return h.client.get("/saml/sso?" + query, follow_redirects=False)


def request_query(h: Harness, **options: Any) -> str:
    keys = options.pop("keys", None)
    relay = options.pop("relay_state", "state-1")
    return redirect_query(authn_request(h.clock.now(), **options), relay_state=relay, keys=keys)


def refusals(h: Harness) -> list[str]:
    return [r.reason for r in h.events("SamlRequestRefused")]


def assert_refused_on_portal(h: Harness, response: Any, reason: str) -> None:
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert response.template.name == "error.html"
    assert "This application can" in response.text
    assert refusals(h)[-1] == reason
    assert h.events("RequestRefused") == []  # recorded once, by the provider


# -- metadata ---------------------------------------------------------------------------------------------------
def test_metadata_publishes_the_certificate_the_sso_endpoint_and_nameid_formats(harness: Harness) -> None:
    response = harness.client.get("/saml/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/samlmetadata+xml")
    root = etree.fromstring(response.content)
    assert root.get("entityID") == IDP_ENTITY
    sso_service = root.find(".//md:SingleSignOnService", NS)
    assert sso_service is not None and sso_service.get("Location") == IDP_SSO
    assert sso_service.get("Binding") == "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
    formats = [e.text for e in root.iterfind(".//md:NameIDFormat", NS)]
    assert str(NameIdFormat.PERSISTENT) in formats and str(NameIdFormat.EMAIL) in formats
    (key,) = root.iterfind(".//md:KeyDescriptor", NS)
    assert key.get("use") == "signing"
    assert b"DOCTYPE" not in response.content


def test_certificate_rotation_publishes_both_then_switches_then_retires_the_old(signed_in: Harness) -> None:
    from alacop.core.context import RequestContext
    from alacop.protocols.saml import certs

    h = signed_in
    register_sp(h)
    (old,) = idp_certs(h)
    added = h.run(certs.rotate, h.portal.deps, RequestContext.system("test"), timedelta(days=7))
    h.run(h.portal.saml.certs.refresh)
    assert set(idp_certs(h)) == {old, certs.certificate_body(added.cert_pem)}
    assert h.events("SamlCertificateRotated")[0].reason == "rotated"

    def signing_cert() -> str:
        form = posted(sso(h, request_query(h)))
        found = etree.fromstring(form.xml).findtext(".//ds:X509Certificate", namespaces=NS) or ""
        return "".join(found.split())

    assert signing_cert() == old  # during the overlap the old one still signs
    h.clock.advance(timedelta(days=7, minutes=2))
    h.run(h.portal.saml.certs.refresh)
    h.sign_in()  # the old session has long ended
    assert signing_cert() == certs.certificate_body(added.cert_pem)
    assert len(idp_certs(h)) == 2  # the old one stays published for a day after the switch
    h.clock.advance(timedelta(days=1))
    h.run(h.portal.saml.certs.refresh)
    assert idp_certs(h) == [certs.certificate_body(added.cert_pem)]


# -- SP-initiated sign-in ------------------------------------------------------------------------------------
def test_signed_out_user_signs_in_and_the_response_is_exact(harness: Harness) -> None:
    h = harness
    h.create_user()
    register_sp(h)
    first = sso(h, request_query(h, request_id="_req-1", relay_state="/records/42"))
    assert first.status_code == 303
    login = first.headers["location"]
    assert login.startswith("/login?flow=")
    page = h.client.get(login)
    assert page.context["flow"].return_to.startswith("/saml/continue?request=")
    assert page.context["application"] == "Records Search"
    assert "to continue to Records Search" in page.text
    back = sign_in_from(h, login)
    now = h.clock.now()
    answer = h.client.get(back)
    form = posted(answer)
    assert form.action == ACS and form.relay_state == "/records/42"
    # The page's own policy: the one inline script by hash, posting only to the consumer's origin.
    csp = answer.headers["content-security-policy"]
    assert re.search(r"script-src 'self' 'sha256-[A-Za-z0-9+/=]{44}'", csp)
    # Posting by scheme: a consumer may redirect to another host after reading the Response.
    assert "form-action https:;" in csp and "unsafe-inline" not in csp
    assert 'id="continue"' in answer.text  # for browsers without JavaScript

    response = verified(h, form.xml)
    assert response.get("InResponseTo") == "_req-1" and response.get("Destination") == ACS
    assert response.findtext("saml:Issuer", namespaces=NS) == IDP_ENTITY
    status = response.find("samlp:Status/samlp:StatusCode", NS)
    assert status is not None and status.get("Value") == "urn:oasis:names:tc:SAML:2.0:status:Success"
    assertion = response.find("saml:Assertion", NS)
    conditions = assertion.find("saml:Conditions", NS)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    assert conditions.get("NotBefore") == (now - timedelta(seconds=60)).strftime(fmt)
    assert conditions.get("NotOnOrAfter") == (now + timedelta(minutes=5)).strftime(fmt)
    assert conditions.findtext("saml:AudienceRestriction/saml:Audience", namespaces=NS) == SP_ENTITY
    data = assertion.find("saml:Subject/saml:SubjectConfirmation/saml:SubjectConfirmationData", NS)
    assert data.get("Recipient") == ACS and data.get("InResponseTo") == "_req-1"
    assert data.get("NotOnOrAfter") == (now + timedelta(minutes=5)).strftime(fmt)
    name_id = assertion.find("saml:Subject/saml:NameID", NS)
    assert name_id.get("Format") == str(NameIdFormat.PERSISTENT) and name_id.get("SPNameQualifier") == SP_ENTITY
    context = assertion.findtext("saml:AuthnStatement/saml:AuthnContext/saml:AuthnContextClassRef", namespaces=NS)
    assert context == "http://idmanagement.gov/ns/assurance/aal/2"
    attributes = {
        a.get("Name"): [v.text for v in a.iterfind("saml:AttributeValue", NS)]
        for a in assertion.iterfind("saml:AttributeStatement/saml:Attribute", NS)
    }
    assert attributes == {
        "username": ["cs0101@alacop.gov"],
        "email": ["cs0101@test.al.gov"],
        "name": ["Casey Smith"],
        "agencyName": ["Test County Sheriff"],
        "agencyOri": ["AL0010000"],
        "roles": ["user"],
        "aal": ["aal2"],
        "amr": attributes["amr"],
    }
    assert "pwd" in attributes["amr"] and len(attributes["amr"]) >= 2
    # Exclusive c14n, RSA-SHA256, SHA-256 digests; no SHA-1 anywhere; no QName hidden in attribute values.
    raw = form.xml.decode()
    assert raw.count("http://www.w3.org/2001/10/xml-exc-c14n#") == 4
    assert raw.count('Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"') == 2
    assert "sha1" not in raw.lower() and "xsi:type" not in raw

    received = h.events("SamlRequestReceived")
    issued = h.events("SamlAssertionIssued")
    assert len(received) == 1 and len(issued) == 1
    assert audit_details(received[0])["request_id"] == "_req-1"
    details = audit_details(issued[0])
    assert details["sp_name"] == "Records Search" and details["entity_id"] == SP_ENTITY
    assert details["assertion_id"] == assertion.get("ID") and issued[0].subject_id == h.user("cs0101").id
    assert form.saml_response not in issued[0].details and name_id.text not in issued[0].details


def test_signed_in_user_is_answered_at_once_and_the_nameid_is_stable_per_application(signed_in: Harness) -> None:
    h = signed_in
    register_sp(h)
    register_sp(h, name="Warrants", metadata=sp_metadata("https://warrants.example.gov/sp", (ACS_2,)))
    first = posted(sso(h, request_query(h)))
    again = posted(sso(h, request_query(h)))
    other = posted(
        sso(h, request_query(h, issuer="https://warrants.example.gov/sp", acs=ACS_2)),
    )

    def name_id(xml: bytes) -> str:
        return etree.fromstring(xml).findtext(".//saml:NameID", namespaces=NS) or ""

    assert name_id(first.xml) == name_id(again.xml)
    assert name_id(first.xml) != name_id(other.xml)  # unlinkable across applications
    assert h.user("cs0101").id not in name_id(first.xml)


def test_email_nameid_and_a_chosen_subset_of_attributes(signed_in: Harness) -> None:
    h = signed_in
    register_sp(h, nameid="email", attributes=["username", "roles"])
    response = verified(h, posted(sso(h, request_query(h))).xml)
    name_id = response.find(".//saml:NameID", NS)
    assert name_id.get("Format") == str(NameIdFormat.EMAIL) and name_id.text == "cs0101@test.al.gov"
    names = [a.get("Name") for a in response.iterfind(".//saml:Attribute", NS)]
    assert names == ["username", "roles"]


def test_acs_by_index_and_the_default_acs(signed_in: Harness) -> None:
    h = signed_in
    register_sp(h, metadata=sp_metadata(acs=(ACS, ACS_2)))
    assert posted(sso(h, request_query(h, acs=None))).action == ACS  # isDefault
    xml = authn_request(h.clock.now(), acs=None).replace(b"Version=", b'AssertionConsumerServiceIndex="1" Version=')
    assert posted(sso(h, redirect_query(xml))).action == ACS_2


def test_force_authn_asks_for_a_new_sign_in_even_with_a_session(signed_in: Harness) -> None:
    h = signed_in
    register_sp(h)
    h.clock.advance(timedelta(minutes=1))
    first = sso(h, request_query(h, force_authn=True))
    assert first.status_code == 303 and first.headers["location"].startswith("/login?flow=")
    # The continue address alone does not answer: the session predates the request.
    pending = h.client.get(first.headers["location"]).context["flow"].return_to
    early = h.client.get(pending, follow_redirects=False)
    assert early.status_code == 303 and early.headers["location"].startswith("/login?")
    back = sign_in_from(h, first.headers["location"])
    response = verified(h, posted(h.client.get(back)).xml)
    assert response.find(".//saml:AuthnStatement", NS) is not None


def test_is_passive_without_a_session_answers_no_passive_to_the_application(harness: Harness) -> None:
    h = harness
    register_sp(h)
    form = posted(sso(h, request_query(h, is_passive=True)))
    response = verified(h, form.xml)
    codes = [c.get("Value") for c in response.iterfind(".//samlp:StatusCode", NS)]
    assert codes == ["urn:oasis:names:tc:SAML:2.0:status:Responder", "urn:oasis:names:tc:SAML:2.0:status:NoPassive"]
    assert response.find("saml:Assertion", NS) is None
    assert refusals(h) == ["no_passive"]


def test_an_unsupported_nameid_policy_is_answered_with_invalid_nameid_policy(signed_in: Harness) -> None:
    h = signed_in
    register_sp(h)
    form = posted(sso(h, request_query(h, nameid_format=str(NameIdFormat.EMAIL))))
    codes = [c.get("Value") for c in verified(h, form.xml).iterfind(".//samlp:StatusCode", NS)]
    assert codes[-1] == "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"
    assert refusals(h) == ["nameid_policy_unsupported"]


def test_an_application_limited_to_other_agencies_is_denied(signed_in: Harness) -> None:
    from alacop.core.context import RequestContext
    from alacop.core.directory import Directory

    h = signed_in
    h.run(Directory(h.portal.deps).create_agency, "AL0020000", "Other PD", ["other.al.gov"], RequestContext.system("t"))
    register_sp(h, agency_oris=["AL0020000"])
    form = posted(sso(h, request_query(h)))
    codes = [c.get("Value") for c in verified(h, form.xml).iterfind(".//samlp:StatusCode", NS)]
    assert codes[-1] == "urn:oasis:names:tc:SAML:2.0:status:RequestDenied"
    assert refusals(h) == ["agency_not_allowed"] and h.events("SamlAssertionIssued") == []


# -- replays -------------------------------------------------------------------------------------------------
def test_a_request_replayed_after_it_was_answered_is_refused(signed_in: Harness) -> None:
    h = signed_in
    register_sp(h)
    query = request_query(h, request_id="_once")
    posted(sso(h, query))
    assert_refused_on_portal(h, sso(h, query), "request_replayed")
    assert len(h.events("SamlAssertionIssued")) == 1


def test_the_continue_address_answers_once_and_expires(harness: Harness) -> None:
    h = harness
    h.create_user()
    register_sp(h)
    login = sso(h, request_query(h)).headers["location"]
    back = sign_in_from(h, login)
    posted(h.client.get(back))
    assert_refused_on_portal(h, h.client.get(back), "request_already_answered")
    h.forget_session()
    later = h.client.get(sso(h, request_query(h)).headers["location"]).context["flow"].return_to
    # It waits through a sign-in flow that expires and the one after it, then no longer.
    assert h.portal.saml.pending_lifetime() >= 2 * h.portal.deps.policy.flow_lifetime
    h.clock.advance(h.portal.saml.pending_lifetime() + timedelta(seconds=1))
    assert_refused_on_portal(h, h.client.get(later), "request_expired")
    assert_refused_on_portal(h, h.client.get("/saml/continue?request=nonsense"), "request_unknown")


def test_the_same_unanswered_request_again_carries_on(harness: Harness) -> None:
    h = harness
    h.create_user()
    register_sp(h)
    query = request_query(h, request_id="_reload")

    def pending() -> str:
        return str(h.client.get(sso(h, query).headers["location"]).context["flow"].return_to)

    assert pending() == pending()  # a reload during the sign-in: the same pending request
    assert len(h.events("SamlRequestReceived")) == 1


# -- IdP-initiated ---------------------------------------------------------------------------------------------
def test_idp_initiated_start_from_my_applications(signed_in: Harness) -> None:
    h = signed_in
    allowed = register_sp(h, idp_initiated=True, relay_state="/dashboard")
    refused = register_sp(h, name="Warrants", metadata=sp_metadata("https://warrants.example.gov/sp", (ACS_2,)))
    apps = h.client.get("/apps")
    assert f'href="/saml/start/{allowed.id}"' in apps.text
    assert f"/saml/start/{refused.id}" not in apps.text
    form = posted(h.client.get(f"/saml/start/{allowed.id}"))
    assert form.action == ACS and form.relay_state == "/dashboard"
    response = verified(h, form.xml)
    assert response.get("InResponseTo") is None
    data = response.find(".//saml:SubjectConfirmationData", NS)
    assert data.get("InResponseTo") is None and data.get("Recipient") == ACS
    assert audit_details(h.events("SamlRequestReceived")[0])["acs_url"] == ACS
    assert h.events("SamlRequestReceived")[0].reason == "idp_initiated"
    assert_refused_on_portal(h, h.client.get(f"/saml/start/{refused.id}"), "idp_initiated_not_allowed")
    assert_refused_on_portal(h, h.client.get("/saml/start/sp_doesnotexistatallxxxxx"), "sp_unknown")


def test_idp_initiated_start_signs_in_first(harness: Harness) -> None:
    h = harness
    h.create_user()
    sp = register_sp(h, idp_initiated=True)
    first = h.client.get(f"/saml/start/{sp.id}", follow_redirects=False)
    assert first.status_code == 303
    back = sign_in_from(h, first.headers["location"])
    assert posted(h.client.get(back)).action == ACS


# -- bad input: each refused on the portal's page with an audit event, never a 500 ----------------------------------
def test_an_acs_url_not_in_the_metadata_is_refused_without_redirect(signed_in: Harness) -> None:
    h = signed_in
    register_sp(h)
    for acs in ("https://evil.example/acs", ACS + "/", ACS.upper()):
        assert_refused_on_portal(h, sso(h, request_query(h, acs=acs)), "acs_unregistered")
    xml = authn_request(h.clock.now(), acs=None).replace(b"Version=", b'AssertionConsumerServiceIndex="7" Version=')
    assert_refused_on_portal(h, sso(h, redirect_query(xml)), "acs_unregistered")
    assert h.events("SamlAssertionIssued") == []


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "request_missing"),
        ("SAMLRequest=%%%%", "malformed_base64"),
        ("SAMLRequest=" + quote(base64.b64encode(b"not deflate at all").decode()), "malformed_deflate"),
        ("SAMLRequest=" + quote(base64.b64encode(zlib.compress(b"<a/>")[2:-5]).decode()), "malformed_deflate"),
        ("SAMLRequest=" + quote(deflate(b"<a>unclosed")), "malformed_xml"),
        ("SAMLRequest=" + quote(deflate(b"<samlp:Response xmlns:samlp='urn:x'/>")), "not_authn_request"),
        ("SAMLRequest=a&SAMLRequest=b", "repeated_parameter"),
        ("SAMLRequest=" + "A" * 50_000, "request_too_large"),
    ],
)
def test_malformed_requests_are_refused(harness: Harness, query: str, reason: str) -> None:
    assert_refused_on_portal(harness, sso(harness, query), reason)


def test_a_deflate_bomb_is_refused_past_64_kb(harness: Harness) -> None:
    h = harness
    register_sp(h)
    padding = "<!--" + "x" * 70_000 + "-->"
    bomb = authn_request(h.clock.now(), extra=padding)
    assert len(deflate(bomb)) < 2_000  # small on the wire, large inflated
    assert_refused_on_portal(h, sso(h, redirect_query(bomb)), "request_too_large")
    fits = authn_request(h.clock.now(), extra="<!--" + "x" * 60_000 + "-->")
    assert posted(sso(h, redirect_query(fits)) if False else None) if False else True
    assert sso(h, redirect_query(fits)).status_code == 303  # under the cap: read, then on to the sign-in


def test_dtds_and_entities_are_refused(harness: Harness) -> None:
    h = harness
    register_sp(h)
    request = authn_request(h.clock.now()).decode()
    xxe = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + request.replace(
        "</saml:Issuer>", "&x;</saml:Issuer>"
    )
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>' + request.replace("</saml:Issuer>", "&c;</saml:Issuer>")
    )
    plain_dtd = '<!DOCTYPE samlp:AuthnRequest SYSTEM "http://evil.example/x.dtd">' + request
    for document in (xxe, laughs, plain_dtd):
        assert_refused_on_portal(h, sso(h, redirect_query(document.encode())), "dtd_forbidden")


def test_unknown_issuer_and_disabled_application_are_refused(signed_in: Harness) -> None:
    from alacop.core.authz import Actor
    from alacop.core.context import RequestContext
    from alacop.protocols.saml.registry import ServiceProviders

    h = signed_in
    sp = register_sp(h)
    assert_refused_on_portal(h, sso(h, request_query(h, issuer="https://stranger.example/sp")), "unknown_issuer")
    assert audit_details(h.events("SamlRequestRefused")[-1])["issuer"] == "https://stranger.example/sp"
    h.run(ServiceProviders(h.portal.deps).disable, Actor.operator(), sp.id, RequestContext.system("t"))
    assert_refused_on_portal(h, sso(h, request_query(h)), "sp_disabled")


def test_an_issuer_hidden_behind_a_comment_is_read_whole(signed_in: Harness) -> None:
    h = signed_in
    register_sp(h, metadata=sp_metadata("https://records.example.gov/saml/metadata.evil"))
    xml = authn_request(h.clock.now(), issuer="https://records.example.gov/saml/metadata.evil")
    xml = xml.replace(b"metadata.evil", b"metadata<!---->.evil")
    # Comments are dropped at parse time, so the issuer is the registered one (not a truncated lookalike).
    assert posted(sso(h, redirect_query(xml))).action == ACS


def test_stale_or_future_issue_instants_are_refused(signed_in: Harness) -> None:
    h = signed_in
    register_sp(h)
    for offset in (timedelta(minutes=-6), timedelta(minutes=6)):
        xml = authn_request(h.clock.now() + offset)
        assert_refused_on_portal(h, sso(h, redirect_query(xml)), "stale_request")
    assert posted(sso(h, redirect_query(authn_request(h.clock.now() - timedelta(minutes=4))))).action == ACS


def test_wrong_destination_and_binding_are_refused(signed_in: Harness) -> None:
    h = signed_in
    register_sp(h)
    assert_refused_on_portal(
        h, sso(h, request_query(h, destination="https://other-idp.example/sso")), "wrong_destination"
    )
    xml = authn_request(h.clock.now()).replace(b"bindings:HTTP-POST", b"bindings:HTTP-Artifact")
    assert_refused_on_portal(h, sso(h, redirect_query(xml)), "unsupported_binding")
    posted_request = h.client.post("/saml/sso", data={"SAMLRequest": deflate(authn_request(h.clock.now()))})
    assert_refused_on_portal(h, posted_request, "unsupported_binding")


# -- request signatures --------------------------------------------------------------------------------------
def test_signed_requests_are_verified_over_the_raw_query(signed_in: Harness) -> None:
    h = signed_in
    keys = sp_keys()
    register_sp(h, metadata=sp_metadata(keys=keys, signed_requests=True))
    good = request_query(h, keys=keys, relay_state="a b+c/é")
    assert posted(sso(h, good)).relay_state == "a b+c/é"
    assert audit_details(h.events("SamlRequestReceived")[-1])["signed"] is True
    # The same values, encoded differently (lower-case escapes): still the same request, but the signed
    # octets changed, so it must fail; re-encoding before checking would wrongly accept it.
    relay = re.search(r"RelayState=([^&]+)", good).group(1)
    assert_refused_on_portal(h, sso(h, good.replace(relay, relay.lower())), "bad_signature")


def test_unsigned_tampered_wrong_key_and_sha1_requests_are_refused(signed_in: Harness) -> None:
    h = signed_in
    keys = sp_keys()
    register_sp(h, metadata=sp_metadata(keys=keys, signed_requests=True))
    assert_refused_on_portal(h, sso(h, request_query(h)), "signature_missing")
    tampered = request_query(h, keys=keys, relay_state="one").replace("RelayState=one", "RelayState=two")
    assert_refused_on_portal(h, sso(h, tampered), "bad_signature")
    assert_refused_on_portal(h, sso(h, request_query(h, keys=sp_keys())), "bad_signature")
    sha1 = redirect_query(authn_request(h.clock.now()), keys=keys, sig_alg=RSA_SHA1)
    assert_refused_on_portal(h, sso(h, sha1), "signature_algorithm_refused")
    broken = request_query(h, keys=keys).rsplit("&Signature=", 1)[0] + "&Signature=%%%"
    assert_refused_on_portal(h, sso(h, broken), "malformed_signature")
    assert h.events("SamlAssertionIssued") == []


def test_a_signature_on_an_application_that_does_not_require_one_is_still_checked(signed_in: Harness) -> None:
    h = signed_in
    keys = sp_keys()
    register_sp(h, metadata=sp_metadata(keys=keys, signed_requests=False))
    assert_refused_on_portal(h, sso(h, request_query(h, keys=sp_keys())), "bad_signature")
    assert posted(sso(h, request_query(h))).action == ACS


def test_a_tampered_response_fails_verification(signed_in: Harness) -> None:
    from signxml.exceptions import InvalidSignature

    h = signed_in
    register_sp(h)
    xml = posted(sso(h, request_query(h))).xml
    tampered = xml.replace(b"cs0101@test.al.gov", b"cs0999@test.al.gov")
    assert tampered != xml
    with pytest.raises(InvalidSignature):
        XMLVerifier().verify(tampered, x509_cert=pem(idp_certs(h)[0]), id_attribute="ID")
    # And with any other certificate than the published one, even an intact response does not verify.
    with pytest.raises(InvalidSignature):
        XMLVerifier().verify(xml, x509_cert=sp_keys().cert_pem, id_attribute="ID")


def test_the_clock_is_read_once_per_response(signed_in: Harness) -> None:
    h = signed_in
    register_sp(h)
    h.clock.advance(timedelta(seconds=17, microseconds=250_000))
    stamp = h.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    response = verified(h, posted(sso(h, request_query(h))).xml)
    assert response.get("IssueInstant") == stamp
    assert response.find("saml:Assertion", NS).get("IssueInstant") == stamp


def test_cant_access_your_account_carries_the_saml_request(harness: Harness) -> None:
    import html as html_lib
    from urllib.parse import parse_qs, urlsplit

    h = harness
    h.create_user()
    register_sp(h)
    page = h.client.get(sso(h, request_query(h)).headers["location"])
    return_to = page.context["flow"].return_to
    assert return_to.startswith("/saml/continue?request=")
    found = re.search(r'href="(/recover\?return_to=[^"]+)">Can\'t access your account\?', page.text)
    assert found, "the recovery link does not carry the way back"
    link = html_lib.unescape(found.group(1))
    assert parse_qs(urlsplit(link).query)["return_to"] == [return_to]
    assert h.client.get(link).context["flow"].return_to == return_to


def test_an_application_registered_with_no_attributes_gets_only_the_nameid(signed_in: Harness) -> None:
    h = signed_in
    register_sp(h, attributes=[])
    response = verified(h, posted(sso(h, request_query(h))).xml)
    assert response.find(".//saml:AttributeStatement", NS) is None
    assert response.findtext(".//saml:NameID", namespaces=NS)


def test_an_unknown_encoding_declaration_is_refused_as_malformed(harness: Harness) -> None:
    h = harness
    register_sp(h)
    for encoding in ("x-bogus", "rot13", "hex"):
        xml = f'<?xml version="1.0" encoding="{encoding}"?>'.encode() + authn_request(h.clock.now())
        assert_refused_on_portal(h, sso(h, redirect_query(xml)), "malformed_xml")


def test_names_with_characters_xml_cannot_carry_still_get_a_response(signed_in: Harness) -> None:
    from dataclasses import replace as replace_user

    h = signed_in
    register_sp(h)
    user = h.user("cs0101")

    async def rename() -> None:
        async with h.portal.deps.store.transaction() as tx:
            await tx.users.update(replace_user(user, name="Casey \uffff Smith\ufffe"))

    h.run(rename)
    response = verified(h, posted(sso(h, request_query(h))).xml)
    names = [a for a in response.iterfind(".//saml:Attribute", NS) if a.get("Name") == "name"]
    assert names[0].findtext("saml:AttributeValue", namespaces=NS) == "Casey \ufffd Smith\ufffd"


def test_the_continue_address_works_only_in_the_browser_the_request_came_to(harness: Harness) -> None:
    h = harness
    h.create_user()
    register_sp(h)
    query = request_query(h, request_id="_mine")
    page = h.client.get(sso(h, query).headers["location"])
    continue_at = page.context["flow"].return_to
    # Another browser (a fresh cookie jar) with the link, or with the same request: refused, nothing posted.
    h.client.cookies.clear()
    h.sign_in()
    assert_refused_on_portal(h, h.client.get(continue_at), "request_unknown")
    assert_refused_on_portal(h, sso(h, query), "request_replayed")
    assert h.events("SamlAssertionIssued") == []


def test_the_same_request_twice_at_once_is_one_pending_request(harness: Harness, monkeypatch: Any) -> None:
    from alacop.store.sql import SqlPendingRequests

    h = harness
    h.create_user()
    register_sp(h)
    query = request_query(h, request_id="_twice")
    first = sso(h, query)
    assert first.status_code == 303
    # The second arrives while the first is being stored: its lookup misses, its insert conflicts.
    original = SqlPendingRequests.by_request_id
    calls = {"n": 0}

    async def racing(self: Any, sp_id: str, request_id: str) -> Any:
        calls["n"] += 1
        return None if calls["n"] == 1 else await original(self, sp_id, request_id)

    monkeypatch.setattr(SqlPendingRequests, "by_request_id", racing)
    second = sso(h, query)
    assert second.status_code == 303 and calls["n"] == 2  # read again in a fresh transaction, carried on
    assert len(h.events("SamlRequestReceived")) == 1


def test_metadata_with_a_non_rsa_signing_certificate_is_refused(harness: Harness) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from alacop.core.errors import InvalidInput
    from tests.support.saml import SpKeys

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec.example")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    ec_keys = SpKeys(key, cert.public_bytes(serialization.Encoding.PEM).decode())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as refused:
        register_sp(harness, metadata=sp_metadata(keys=ec_keys, signed_requests=True))
    assert "RSA" in refused.value.detail
