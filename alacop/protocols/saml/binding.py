"""The HTTP-Redirect binding (SAML Bindings 3.4): reading a deflated, base64 AuthnRequest from the raw
query string, and checking its detached signature over the exact bytes the browser sent.

The signature covers `SAMLRequest=…&RelayState=…&SigAlg=…` as URL-encoded by the sender; re-encoding
the decoded values could change them (case of percent escapes, `+` against `%20`), so the octets are cut
from the raw query string and never rebuilt.
"""

from __future__ import annotations

import base64
import binascii
import functools
import zlib
from dataclasses import dataclass
from urllib.parse import unquote_plus

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# The inflated request is capped (a deflate bomb inflates a little input into a lot).
MAX_INFLATED = 64 * 1024
# A deflated, base64, URL-encoded request this size already inflates past any honest request.
MAX_QUERY = 48 * 1024
# Signature algorithms accepted on requests: RSA with SHA-2 only, never SHA-1.
SIG_ALGS: dict[str, hashes.HashAlgorithm] = {
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": hashes.SHA256(),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": hashes.SHA384(),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": hashes.SHA512(),
}


class BindingError(Exception):
    """The request cannot be read; `reason` is the stable code the audit trail records."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RedirectMessage:
    xml: bytes
    relay_state: str | None
    sig_alg: str | None
    signature: bytes | None
    # The octets the signature covers, cut from the raw query string.
    signed_octets: bytes


def _decode_query(raw: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (raw URL-encoded value, decoded value), each name at most once."""
    found: dict[str, tuple[bytes, str]] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        try:
            key = unquote_plus(name.decode("ascii"), errors="strict")
            decoded = unquote_plus(value.decode("ascii"), errors="strict")
        except UnicodeDecodeError as exc:
            raise BindingError("malformed_query") from exc
        if key in ("SAMLRequest", "RelayState", "SigAlg", "Signature"):
            if key in found:
                raise BindingError("repeated_parameter")
            found[key] = (value, decoded)
    return found


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_INFLATED + 1)
    except zlib.error as exc:
        raise BindingError("malformed_deflate") from exc
    if len(out) > MAX_INFLATED or inflater.unconsumed_tail:
        raise BindingError("request_too_large")
    if not inflater.eof:
        raise BindingError("malformed_deflate")
    return out


def _b64(value: str, reason: str) -> bytes:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BindingError(reason) from exc


def read_redirect(raw_query: bytes) -> RedirectMessage:
    if len(raw_query) > MAX_QUERY:
        raise BindingError("request_too_large")
    params = _decode_query(raw_query)
    if "SAMLRequest" not in params:
        raise BindingError("request_missing")
    raw_request, request = params["SAMLRequest"]
    xml = _inflate(_b64(request, "malformed_base64"))
    relay = params.get("RelayState")
    sig_alg = params.get("SigAlg")
    signature = params.get("Signature")
    octets = b"SAMLRequest=" + raw_request
    if relay is not None:
        octets += b"&RelayState=" + relay[0]
    if sig_alg is not None:
        octets += b"&SigAlg=" + sig_alg[0]
    return RedirectMessage(
        xml=xml,
        relay_state=relay[1] if relay is not None else None,
        sig_alg=sig_alg[1] if sig_alg is not None else None,
        signature=_b64(signature[1], "malformed_signature") if signature is not None else None,
        signed_octets=octets,
    )


def verify(message: RedirectMessage, certificates: tuple[str, ...]) -> str | None:
    """None when the detached signature verifies with one of the application's pinned certificates;
    otherwise the reason it does not."""
    if message.signature is None or message.sig_alg is None:
        return "signature_missing"
    algorithm = SIG_ALGS.get(message.sig_alg)
    if algorithm is None:
        return "signature_algorithm_refused"
    for pem in certificates:
        key = _rsa_key(pem)
        if key is None:
            continue
        try:
            key.verify(message.signature, message.signed_octets, padding.PKCS1v15(), algorithm)
            return None
        except InvalidSignature:
            continue
    return "bad_signature"


@functools.lru_cache(maxsize=256)
def _rsa_key(pem: str) -> rsa.RSAPublicKey | None:
    """The RSA key of a registered certificate (read once per process); None for anything else."""
    try:
        key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, rsa.RSAPublicKey) else None
