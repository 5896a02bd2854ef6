"""Building and signing a SAML Response (Core 3.3.3, Profiles 4.1.4.2) with signxml.

Both the Assertion and the Response carry an enveloped signature: exclusive canonicalisation
(no namespace context from outside the signed element leaks into the digest) and RSA-SHA256 with
SHA-256 digests; signxml refuses SHA-1 outright. The Assertion is signed on its own first and then
placed in the Response, whose signature covers it as signed. Every element lives in the saml or samlp
namespace declared on it; attribute values are plain strings with no xsi:type, so no QName hides in an
attribute value where exclusive canonicalisation would drop its namespace declaration.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from lxml import etree
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.signer import XMLSigner

from alacop.core.accounts import Agency, User
from alacop.core.saml import ASSERTION_LIFETIME, NOT_BEFORE_SKEW, NameIdFormat, ServiceProvider
from alacop.core.sessions import Session
from alacop.protocols.saml.certs import Signer
from alacop.protocols.saml.xmlsafe import DS, NS, SAML, SAMLP

SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
RESPONDER = "urn:oasis:names:tc:SAML:2.0:status:Responder"
NO_PASSIVE = "urn:oasis:names:tc:SAML:2.0:status:NoPassive"
REQUEST_DENIED = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied"
INVALID_NAMEID_POLICY = "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
# NIST SP 800-63B AAL2 as a context class (the URI the US federal profile uses); AAL1 would be plain password.
AAL2_CONTEXT = "http://idmanagement.gov/ns/assurance/aal/2"
AAL1_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


# Characters XML 1.0 cannot carry at all (C0 controls but tab, CR and LF; surrogates; U+FFFE and U+FFFF).
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: str) -> str:
    """A value as XML can carry it: characters XML forbids become U+FFFD instead of failing the response."""
    return _NOT_XML.sub("\ufffd", value)


def saml_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    # xs:ID must not start with a digit.
    return "_" + secrets.token_hex(20)


@dataclass(frozen=True, slots=True)
class Answer:
    """Where the browser posts, and what."""

    acs_url: str
    saml_response: str  # base64 of the signed Response
    relay_state: str | None
    response_id: str
    assertion_id: str | None
    sp_name: str = ""


def _signer() -> XMLSigner:
    return XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )


def _sign(element: etree._Element, signer: Signer) -> etree._Element:
    signed: etree._Element = _signer().sign(
        element, key=signer.key, cert=[signer.cert_pem], reference_uri="#" + element.get("ID", ""), id_attribute="ID"
    )
    return signed


def _placeholder(parent: etree._Element) -> None:
    # signxml puts the signature here, right after the Issuer, where the SAML schema wants it.
    etree.SubElement(parent, f"{DS}Signature", nsmap={"ds": NS["ds"]}, Id="placeholder")


def attribute_values(
    sp: ServiceProvider, user: User, agency: Agency | None, session: Session, domain: str
) -> list[tuple[str, list[str]]]:
    available: dict[str, list[str]] = {
        "username": [f"{user.username}@{domain}"],
        "email": [user.email],
        "name": [user.name],
        "agencyName": [agency.name] if agency else [],
        "agencyOri": [agency.ori] if agency else [],
        "roles": [str(user.role)],
        "aal": [session.aal],
        "amr": list(session.amr),
    }
    return [(name, available[name]) for name in sp.attributes if available.get(name)]


def _assertion(
    *,
    issuer: str,
    sp: ServiceProvider,
    acs_url: str,
    in_response_to: str | None,
    user: User,
    agency: Agency | None,
    session: Session,
    session_index: str,
    domain: str,
    now: datetime,
) -> etree._Element:
    assertion_id = new_id()
    assertion = etree.Element(
        f"{SAML}Assertion",
        nsmap={"saml": NS["saml"]},
        ID=assertion_id,
        Version="2.0",
        IssueInstant=saml_time(now),
    )
    etree.SubElement(assertion, f"{SAML}Issuer").text = issuer
    _placeholder(assertion)
    subject = etree.SubElement(assertion, f"{SAML}Subject")
    if sp.nameid_format is NameIdFormat.EMAIL:
        name_id = etree.SubElement(subject, f"{SAML}NameID", Format=str(sp.nameid_format))
        name_id.text = xml_text(user.email)
    else:
        name_id = etree.SubElement(
            subject, f"{SAML}NameID", Format=str(sp.nameid_format), NameQualifier=issuer, SPNameQualifier=sp.entity_id
        )
        name_id.text = sp.persistent_id(user.id)
    confirmation = etree.SubElement(subject, f"{SAML}SubjectConfirmation", Method=BEARER)
    data = etree.SubElement(
        confirmation,
        f"{SAML}SubjectConfirmationData",
        NotOnOrAfter=saml_time(now + ASSERTION_LIFETIME),
        Recipient=acs_url,
    )
    if in_response_to:
        data.set("InResponseTo", in_response_to)
    conditions = etree.SubElement(
        assertion,
        f"{SAML}Conditions",
        NotBefore=saml_time(now - NOT_BEFORE_SKEW),
        NotOnOrAfter=saml_time(now + ASSERTION_LIFETIME),
    )
    restriction = etree.SubElement(conditions, f"{SAML}AudienceRestriction")
    etree.SubElement(restriction, f"{SAML}Audience").text = sp.entity_id
    statement = etree.SubElement(
        assertion,
        f"{SAML}AuthnStatement",
        AuthnInstant=saml_time(session.auth_time),
        SessionIndex=session_index,
        SessionNotOnOrAfter=saml_time(session.expires_at),
    )
    context = etree.SubElement(statement, f"{SAML}AuthnContext")
    etree.SubElement(context, f"{SAML}AuthnContextClassRef").text = (
        AAL2_CONTEXT if session.aal == "aal2" else AAL1_CONTEXT
    )
    values = attribute_values(sp, user, agency, session, domain)
    if values:
        attributes = etree.SubElement(assertion, f"{SAML}AttributeStatement")
        for name, items in values:
            attribute = etree.SubElement(attributes, f"{SAML}Attribute", Name=name, NameFormat=BASIC)
            for item in items:
                etree.SubElement(attribute, f"{SAML}AttributeValue").text = xml_text(item)
    return assertion


def _response(
    *, issuer: str, acs_url: str, in_response_to: str | None, now: datetime, status: str, second: str | None
) -> etree._Element:
    response = etree.Element(
        f"{SAMLP}Response",
        nsmap={"samlp": NS["samlp"], "saml": NS["saml"]},
        ID=new_id(),
        Version="2.0",
        IssueInstant=saml_time(now),
        Destination=acs_url,
    )
    if in_response_to:
        response.set("InResponseTo", in_response_to)
    etree.SubElement(response, f"{SAML}Issuer").text = issuer
    _placeholder(response)
    status_element = etree.SubElement(response, f"{SAMLP}Status")
    code = etree.SubElement(status_element, f"{SAMLP}StatusCode", Value=status)
    if second:
        etree.SubElement(code, f"{SAMLP}StatusCode", Value=second)
    return response


def _encode(response: etree._Element) -> str:
    return base64.b64encode(etree.tostring(response, xml_declaration=True, encoding="UTF-8")).decode()


def success(
    *,
    issuer: str,
    signer: Signer,
    sp: ServiceProvider,
    acs_url: str,
    in_response_to: str | None,
    relay_state: str | None,
    user: User,
    agency: Agency | None,
    session: Session,
    session_index: str,
    domain: str,
    now: datetime,
) -> Answer:
    assertion = _sign(
        _assertion(
            issuer=issuer,
            sp=sp,
            acs_url=acs_url,
            in_response_to=in_response_to,
            user=user,
            agency=agency,
            session=session,
            session_index=session_index,
            domain=domain,
            now=now,
        ),
        signer,
    )
    response = _response(
        issuer=issuer, acs_url=acs_url, in_response_to=in_response_to, now=now, status=SUCCESS, second=None
    )
    response.append(assertion)
    signed = _sign(response, signer)
    return Answer(acs_url, _encode(signed), relay_state, signed.get("ID", ""), assertion.get("ID"))


def failure(
    *,
    issuer: str,
    signer: Signer,
    acs_url: str,
    in_response_to: str | None,
    relay_state: str | None,
    second: str,
    now: datetime,
) -> Answer:
    """A signed Response with a non-success status and no assertion (NoPassive, RequestDenied, …)."""
    status = RESPONDER if second != INVALID_NAMEID_POLICY else "urn:oasis:names:tc:SAML:2.0:status:Requester"
    response = _response(
        issuer=issuer, acs_url=acs_url, in_response_to=in_response_to, now=now, status=status, second=second
    )
    signed = _sign(response, signer)
    return Answer(acs_url, _encode(signed), relay_state, signed.get("ID", ""), None)
