"""A software WebAuthn authenticator for tests: EC P-256 keys, ES256 signatures, "none" attestation.

It reads the options JSON the portal renders (binary fields base64url, as `webauthn.options_to_json`
writes them) and answers with the credential JSON the browser would post, in the shape
alacop/web/static/js/webauthn.js serialises. Only the byte layouts of WebAuthn Level 3 section 6.1
(authenticator data) and 6.5 (attestation object) are assembled here; keys and signatures come from
`cryptography`, CBOR from `cbor2`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

# Authenticator data flags (WebAuthn section 6.1).
FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_BE = 0x08
FLAG_BS = 0x10
FLAG_AT = 0x40
ES256 = -7


class AuthenticatorError(Exception):
    """What the browser would raise instead of answering (a DOMException name)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class StoredCredential:
    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    discoverable: bool
    sign_count: int = 0

    @property
    def id(self) -> str:
        return b64url(self.credential_id)


class SoftwareAuthenticator:
    """One authenticator holding any number of credentials.

    - `user_verification`: whether it sets the UV flag (a PIN or biometric was checked).
    - `resident_keys`: whether it can store discoverable credentials (credProps.rk).
    - `backup`: sets BE and BS, as a synced passkey does.
    - `counter_step`: how much the signature counter moves per assertion (0: no counter).
    """

    def __init__(
        self,
        *,
        user_verification: bool = True,
        resident_keys: bool = True,
        backup: bool = False,
        counter_step: int = 1,
        transports: tuple[str, ...] = ("usb",),
        aaguid: bytes = bytes(16),
    ) -> None:
        self.user_verification = user_verification
        self.user_presence = True
        self.resident_keys = resident_keys
        self.backup = backup
        self.counter_step = counter_step
        self.transports = transports
        self.aaguid = aaguid
        self.credentials: dict[bytes, StoredCredential] = {}

    # -- helpers ------------------------------------------------------------------------------------
    def credential(self, credential_id: str | bytes | None = None) -> StoredCredential:
        """A stored credential by id, or the only one when there is just one."""
        if credential_id is None:
            if len(self.credentials) != 1:
                raise LookupError("name the credential: this authenticator holds several (or none)")
            return next(iter(self.credentials.values()))
        raw = unb64url(credential_id) if isinstance(credential_id, str) else credential_id
        return self.credentials[raw]

    def set_sign_count(self, count: int, credential_id: str | bytes | None = None) -> None:
        """Wind the counter to `count`; the next assertion reports count + counter_step."""
        self.credential(credential_id).sign_count = count

    def _flags(self, *, attested: bool, uv: bool | None) -> int:
        flags = FLAG_UP if self.user_presence else 0
        if self.user_verification if uv is None else uv:
            flags |= FLAG_UV
        if self.backup:
            flags |= FLAG_BE | FLAG_BS
        if attested:
            flags |= FLAG_AT
        return flags

    @staticmethod
    def _client_data(kind: str, challenge: str, origin: str) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}, separators=(",", ":")
        ).encode("utf-8")

    @staticmethod
    def cose_key(public_key: ec.EllipticCurvePublicKey) -> bytes:
        numbers = public_key.public_numbers()
        # RFC 9053 section 7.1.1: kty EC2 (2), alg ES256 (-7), crv P-256 (1), x, y.
        return cbor2.dumps(
            {1: 2, 3: ES256, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
        )

    # -- navigator.credentials.create ---------------------------------------------------------------
    def register(self, options_json: str, origin: str, *, uv: bool | None = None, rp_id: str | None = None) -> str:
        options: dict[str, Any] = json.loads(options_json)
        algs = [p.get("alg") for p in options.get("pubKeyCredParams", [])]
        if algs and ES256 not in algs:
            raise AuthenticatorError("NotSupportedError")
        rp = rp_id or options["rp"]["id"]
        for excluded in options.get("excludeCredentials") or []:
            if unb64url(excluded["id"]) in self.credentials:
                raise AuthenticatorError("InvalidStateError")
        selection = options.get("authenticatorSelection") or {}
        wanted = selection.get("residentKey") or ("required" if selection.get("requireResidentKey") else "discouraged")
        if wanted == "required" and not self.resident_keys:
            raise AuthenticatorError("NotAllowedError")
        discoverable = self.resident_keys and wanted in ("required", "preferred")

        private_key = ec.generate_private_key(ec.SECP256R1())
        stored = StoredCredential(
            credential_id=secrets.token_bytes(32),
            private_key=private_key,
            rp_id=rp,
            user_handle=unb64url(options["user"]["id"]),
            discoverable=discoverable,
        )
        attested = (
            self.aaguid
            + struct.pack(">H", len(stored.credential_id))
            + stored.credential_id
            + self.cose_key(private_key.public_key())
        )
        auth_data = (
            hashlib.sha256(rp.encode("utf-8")).digest()
            + bytes([self._flags(attested=True, uv=uv)])
            + struct.pack(">I", stored.sign_count)
            + attested
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        self.credentials[stored.credential_id] = stored
        return json.dumps(
            {
                "id": stored.id,
                "rawId": stored.id,
                "type": "public-key",
                "authenticatorAttachment": "cross-platform",
                "clientExtensionResults": {"credProps": {"rk": discoverable}},
                "response": {
                    "clientDataJSON": b64url(self._client_data("webauthn.create", options["challenge"], origin)),
                    "attestationObject": b64url(attestation),
                    "transports": list(self.transports),
                },
            }
        )

    # -- navigator.credentials.get ------------------------------------------------------------------
    def assert_(
        self,
        options_json: str,
        origin: str,
        credential_id: str | bytes | None = None,
        *,
        uv: bool | None = None,
        sign_count: int | None = None,
    ) -> str:
        """An assertion; `sign_count` forces the counter reported (a cloned key's stale counter)."""
        options: dict[str, Any] = json.loads(options_json)
        rp = options.get("rpId") or ""
        if credential_id is not None:
            stored = self.credential(credential_id)
        else:
            allowed = [unb64url(c["id"]) for c in options.get("allowCredentials") or []]
            if allowed:
                candidates = [self.credentials[c] for c in allowed if c in self.credentials]
            else:
                candidates = [c for c in self.credentials.values() if c.discoverable]
            candidates = [c for c in candidates if c.rp_id == rp]
            if not candidates:
                raise AuthenticatorError("NotAllowedError")
            stored = candidates[0]
        stored.sign_count = stored.sign_count + self.counter_step if sign_count is None else sign_count
        auth_data = (
            hashlib.sha256(stored.rp_id.encode("utf-8")).digest()
            + bytes([self._flags(attested=False, uv=uv)])
            + struct.pack(">I", stored.sign_count)
        )
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = stored.private_key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return json.dumps(
            {
                "id": stored.id,
                "rawId": stored.id,
                "type": "public-key",
                "authenticatorAttachment": "cross-platform",
                "clientExtensionResults": {},
                "response": {
                    "clientDataJSON": b64url(client_data),
                    "authenticatorData": b64url(auth_data),
                    "signature": b64url(signature),
                    "userHandle": b64url(stored.user_handle) if stored.discoverable else None,
                },
            }
        )

    # navigator.credentials.get's name, for callers whose linters read `assert_` as unittest's (ruff PT009).
    get = assert_
