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
from datetime import datetime
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

from alacop.core.authz import Actor
from alacop.core.context import RequestContext
from alacop.core.saml import ServiceProvider
from alacop.protocols.saml.certs import certificate_body, generate, private_pem
from alacop.protocols.saml.metadata import sp_metadata as write_sp_metadata
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
        return private_pem(self.key).decode()

    @property
    def cert_body(self) -> str:
        return certificate_body(self.cert_pem)


def sp_keys(common_name: str = "records.example.gov") -> SpKeys:
    cert_pem, key = generate(datetime.now().astimezone(), common_name)
    return SpKeys(key, cert_pem)


def sp_metadata(
    entity_id: str = SP_ENTITY,
    acs: tuple[str, ...] = (ACS,),
    keys: SpKeys | None = None,
    signed_requests: bool = False,
) -> bytes:
    return write_sp_metadata(entity_id, acs, keys.cert_pem if keys else None, authn_requests_signed=signed_requests)


def idp_certificate(h: Any) -> str:
    """The portal's signing certificate, as an application's administrator would copy it from the metadata."""
    root = etree.fromstring(h.client.get("/saml/metadata").content)
    cert = root.findtext(".//{http://www.w3.org/2000/09/xmldsig#}X509Certificate")
    assert cert
    return str(cert)


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


def python3_saml_settings(
    entity_id: str,
    acs_url: str,
    keys: SpKeys | None,
    idp: dict[str, Any],
    *,
    reject_unsolicited: bool,
) -> dict[str, Any]:
    """Strict python3-saml settings for a test service provider: SHA-256 only, signed messages and
    assertions required, requests signed when it has keys."""
    return {
        "strict": True,
        "debug": False,
        "sp": {
            "entityId": entity_id,
            "assertionConsumerService": {"url": acs_url, "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"},
            "NameIDFormat": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
            "x509cert": keys.cert_body if keys else "",
            "privateKey": keys.key_pem if keys else "",
        },
        "idp": idp,
        "security": {
            "authnRequestsSigned": keys is not None,
            "wantMessagesSigned": True,
            "wantAssertionsSigned": True,
            "wantNameId": True,
            "requestedAuthnContext": False,
            "signatureAlgorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "digestAlgorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
            "rejectDeprecatedAlgorithm": True,
            # A Response to a request this application did not send (or sent to someone else) is refused.
            "rejectUnsolicitedResponsesWithInResponseTo": reject_unsolicited,
        },
    }
