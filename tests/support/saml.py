"""A service provider's side of SAML, for tests: metadata, AuthnRequests by HTTP-Redirect (signed or
not), registration with the portal, and reading the auto-submitting Response page.

The request signature here is made with `cryptography` over the exact query octets, as the binding
specifies; tests/protocols/test_saml_interop.py also signs with python3-saml, independently of this.
"""

from __future__ import annotations

import base64
import html
import re
import secrets
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from alacop.core.authz import Actor
from alacop.core.context import RequestContext
from alacop.core.saml import ServiceProvider
from alacop.protocols.saml.registry import NewServiceProvider, ServiceProviders

SP_ENTITY = "https://records.example.gov/saml/metadata"
ACS = "https://records.example.gov/saml/acs"
ACS_2 = "https://records.example.gov/saml/acs-2"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
IDP_ENTITY = "http://127.0.0.1:8000/saml/metadata"
IDP_SSO = "http://127.0.0.1:8000/saml/sso"


@dataclass(frozen=True)
class SpKeys:
    key: rsa.RSAPrivateKey
    cert_pem: str

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    @property
    def cert_body(self) -> str:
        return "".join(line for line in self.cert_pem.strip().splitlines() if not line.startswith("-----"))


def sp_keys(common_name: str = "records.example.gov") -> SpKeys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now().astimezone()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return SpKeys(key, cert.public_bytes(serialization.Encoding.PEM).decode())


def sp_metadata(
    entity_id: str = SP_ENTITY,
    acs: tuple[str, ...] = (ACS,),
    keys: SpKeys | None = None,
    signed_requests: bool = False,
) -> bytes:
    default = ' isDefault="true"'
    consumers = "".join(
        f'<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" '
        f'Location="{html.escape(url)}" index="{i}"{default if i == 0 else ""}/>'
        for i, url in enumerate(acs)
    )
    key = (
        '<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>'
        f"{keys.cert_body}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
        if keys
        else ""
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
        f'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{html.escape(entity_id)}">'
        f'<md:SPSSODescriptor AuthnRequestsSigned="{"true" if signed_requests else "false"}" '
        'WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        f"{key}<md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>"
        f"{consumers}</md:SPSSODescriptor></md:EntityDescriptor>"
    ).encode()


def register_sp(
    h: Any, *, name: str = "Records Search", metadata: bytes | None = None, **options: Any
) -> ServiceProvider:
    new = NewServiceProvider(name=name, metadata=metadata or sp_metadata(), **options)

    async def go() -> ServiceProvider:
        return await ServiceProviders(h.portal.deps).add(Actor.operator(), new, RequestContext.system("test"))

    return h.run(go)  # type: ignore[no-any-return]


def saml_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def authn_request(
    now: datetime,
    *,
    request_id: str | None = None,
    issuer: str = SP_ENTITY,
    acs: str | None = ACS,
    destination: str | None = IDP_SSO,
    force_authn: bool = False,
    is_passive: bool = False,
    nameid_format: str | None = None,
    extra: str = "",
) -> bytes:
    attrs = [
        'xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"',
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"',
        f'ID="{request_id or "_" + secrets.token_hex(16)}"',
        'Version="2.0"',
        f'IssueInstant="{saml_time(now)}"',
        'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"',
    ]
    if destination:
        attrs.append(f'Destination="{destination}"')
    if acs:
        attrs.append(f'AssertionConsumerServiceURL="{html.escape(acs)}"')
    if force_authn:
        attrs.append('ForceAuthn="true"')
    if is_passive:
        attrs.append('IsPassive="true"')
    policy = f'<samlp:NameIDPolicy Format="{nameid_format}" AllowCreate="true"/>' if nameid_format else ""
    return (
        f"<samlp:AuthnRequest {' '.join(attrs)}><saml:Issuer>{html.escape(issuer)}</saml:Issuer>"
        f"{policy}{extra}</samlp:AuthnRequest>"
    ).encode()


def deflate(xml: bytes) -> str:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return base64.b64encode(compressor.compress(xml) + compressor.flush()).decode()


def redirect_query(
    xml: bytes | None = None,
    *,
    encoded: str | None = None,
    relay_state: str | None = None,
    keys: SpKeys | None = None,
    sig_alg: str = RSA_SHA256,
) -> str:
    """The query string of an HTTP-Redirect AuthnRequest; signed over its own octets when keys are given."""
    value = encoded if encoded is not None else deflate(xml or b"")
    query = "SAMLRequest=" + quote(value, safe="")
    if relay_state is not None:
        query += "&RelayState=" + quote(relay_state, safe="")
    if keys is not None:
        query += "&SigAlg=" + quote(sig_alg, safe="")
        digest = hashes.SHA1() if sig_alg == RSA_SHA1 else hashes.SHA256()  # noqa: S303 (the refused case)
        signature = keys.key.sign(query.encode(), padding.PKCS1v15(), digest)
        query += "&Signature=" + quote(base64.b64encode(signature).decode(), safe="")
    return query


@dataclass(frozen=True)
class Posted:
    action: str
    saml_response: str
    relay_state: str | None

    @property
    def xml(self) -> bytes:
        return base64.b64decode(self.saml_response)


def posted(page: Any) -> Posted:
    """The auto-submitting form's target and fields, read from the page as the browser gets it."""
    assert page.status_code == 200, page.text
    text = page.text
    action = re.search(r'<form method="post" action="([^"]+)" id="saml-post">', text)
    response = re.search(r'name="SAMLResponse" value="([^"]+)"', text)
    relay = re.search(r'name="RelayState" value="([^"]*)"', text)
    assert action and response, text
    return Posted(
        html.unescape(action.group(1)),
        html.unescape(response.group(1)),
        html.unescape(relay.group(1)) if relay else None,
    )
