"""SAML metadata: reading an application's (to register it) and writing the portal's own."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree

from alacop.core.errors import InvalidInput
from alacop.core.oidc import validate_redirect_uri
from alacop.core.saml import UNSPECIFIED_NAMEID, AssertionConsumer, NameIdFormat
from alacop.protocols.saml.certs import certificate_body
from alacop.protocols.saml.xmlsafe import DS, MD, NS, MalformedXml, UnsafeXml, parse, text

MAX_METADATA = 256 * 1024
MAX_ACS = 20
POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
REDIRECT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"


@dataclass(frozen=True, slots=True)
class SpMetadata:
    entity_id: str
    acs: tuple[AssertionConsumer, ...]
    certificates: tuple[str, ...]
    authn_requests_signed: bool
    nameid_formats: tuple[str, ...]


def _refuse(detail: str) -> InvalidInput:
    return InvalidInput(f"the metadata {detail}", code="invalid_metadata")


def _bool(value: str | None) -> bool:
    return (value or "").strip() in ("true", "1")


def _certificate(body: str) -> str:
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
        cert = x509.load_der_x509_certificate(der)
        # The key is read lazily: read it now, so a key the portal cannot use is refused here, not
        # at every signed request later.
        key = cert.public_key()
    except (binascii.Error, ValueError, UnsupportedAlgorithm) as exc:
        raise _refuse("holds a certificate that cannot be read") from exc
    # Requests are verified with RSA and SHA-2 only (binding.SIG_ALGS).
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise _refuse("holds a signing certificate that is not RSA of at least 2048 bits")
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def parse_sp_metadata(data: bytes) -> SpMetadata:
    """An SPSSODescriptor's entity ID, HTTP-POST consumers, signing certificates and request signing."""
    if len(data) > MAX_METADATA:
        raise _refuse(f"is larger than {MAX_METADATA // 1024} KB")
    try:
        root = parse(data)
    except UnsafeXml as exc:
        raise _refuse("declares a DTD or entities, which are not accepted") from exc
    except MalformedXml as exc:
        raise _refuse("is not well-formed XML") from exc
    if root.tag != f"{MD}EntityDescriptor":
        raise _refuse("is not a SAML 2.0 EntityDescriptor")
    entity_id = (root.get("entityID") or "").strip()
    if not entity_id or len(entity_id) > 1024 or any(ord(c) < 33 for c in entity_id):
        raise _refuse("has no usable entityID")
    descriptors = root.findall("md:SPSSODescriptor", NS)
    if len(descriptors) != 1:
        raise _refuse("must have exactly one SPSSODescriptor")
    sp = descriptors[0]
    if PROTOCOL not in (sp.get("protocolSupportEnumeration") or "").split():
        raise _refuse("does not support the SAML 2.0 protocol")
    consumers: list[AssertionConsumer] = []
    for position, element in enumerate(sp.findall("md:AssertionConsumerService", NS)):
        if element.get("Binding") != POST_BINDING:
            continue  # the portal answers by HTTP-POST only
        raw_index = element.get("index") or str(position)
        if not raw_index.isdigit() or len(raw_index) > 5:
            raise _refuse("has an AssertionConsumerService with a bad index")
        try:
            url = validate_redirect_uri(element.get("Location") or "")
        except InvalidInput as exc:
            raise _refuse(f"has an AssertionConsumerService address that is not accepted ({exc.detail})") from exc
        consumers.append(AssertionConsumer(url, int(raw_index), _bool(element.get("isDefault"))))
    if not consumers:
        raise _refuse("has no AssertionConsumerService with the HTTP-POST binding")
    if len(consumers) > MAX_ACS or len({c.index for c in consumers}) != len(consumers):
        raise _refuse("has too many AssertionConsumerServices, or repeats an index")
    certificates: list[str] = []
    for descriptor in sp.findall("md:KeyDescriptor", NS):
        if descriptor.get("use") not in (None, "signing"):
            continue
        for body in descriptor.iterfind(f".//{DS}X509Certificate"):
            certificates.append(_certificate(text(body)))
    signed = _bool(sp.get("AuthnRequestsSigned"))
    if signed and not certificates:
        raise _refuse("asks for signed requests but carries no signing certificate")
    formats = tuple(text(e) for e in sp.findall("md:NameIDFormat", NS) if text(e))
    return SpMetadata(entity_id, tuple(consumers), tuple(dict.fromkeys(certificates)), signed, formats)


def _signing_key(descriptor: etree._Element, cert_pem: str) -> None:
    key = etree.SubElement(descriptor, f"{MD}KeyDescriptor", use="signing")
    data = etree.SubElement(etree.SubElement(key, f"{DS}KeyInfo"), f"{DS}X509Data")
    etree.SubElement(data, f"{DS}X509Certificate").text = certificate_body(cert_pem)


def idp_metadata(entity_id: str, sso_url: str, certificates: list[str]) -> bytes:
    """The portal's IdPSSODescriptor: every published certificate, the Redirect SSO endpoint, NameID formats."""
    md = NS["md"]
    root = etree.Element(f"{MD}EntityDescriptor", nsmap={"md": md, "ds": NS["ds"]}, entityID=entity_id)
    idp = etree.SubElement(
        root, f"{MD}IDPSSODescriptor", protocolSupportEnumeration=PROTOCOL, WantAuthnRequestsSigned="false"
    )
    for cert_pem in certificates:
        _signing_key(idp, cert_pem)
    for name_format in (NameIdFormat.PERSISTENT, NameIdFormat.EMAIL, UNSPECIFIED_NAMEID):
        etree.SubElement(idp, f"{MD}NameIDFormat").text = str(name_format)
    etree.SubElement(idp, f"{MD}SingleSignOnService", Binding=REDIRECT_BINDING, Location=sso_url)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def sp_metadata(
    entity_id: str, acs_urls: Sequence[str], cert_pem: str | None = None, *, authn_requests_signed: bool = False
) -> bytes:
    """A service provider's SPSSODescriptor, as `parse_sp_metadata` reads it: HTTP-POST consumers (the
    first the default), a signing certificate if any, persistent NameIDs. The demo application's
    registration (`alacop demo`) and the tests write theirs with it."""
    root = etree.Element(f"{MD}EntityDescriptor", nsmap={"md": NS["md"], "ds": NS["ds"]}, entityID=entity_id)
    sp = etree.SubElement(
        root,
        f"{MD}SPSSODescriptor",
        AuthnRequestsSigned="true" if authn_requests_signed else "false",
        WantAssertionsSigned="true",
        protocolSupportEnumeration=PROTOCOL,
    )
    if cert_pem:
        _signing_key(sp, cert_pem)
    etree.SubElement(sp, f"{MD}NameIDFormat").text = str(NameIdFormat.PERSISTENT)
    for index, url in enumerate(acs_urls):
        consumer = etree.SubElement(sp, f"{MD}AssertionConsumerService", Binding=POST_BINDING, Location=url)
        consumer.set("index", str(index))
        if index == 0:
            consumer.set("isDefault", "true")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
