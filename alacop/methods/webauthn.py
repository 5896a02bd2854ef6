"""Security keys and passkeys (WebAuthn), on Duo's `webauthn`: user verification preferred, no attestation."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, generate_challenge
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from alacop.core.credentials import AuthMethod

MAX_CREDENTIAL_JSON = 16_384


class WebAuthnFailed(Exception):
    """The browser's answer did not verify; `reason` is a stable code for the audit trail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RelyingParty:
    id: str
    name: str
    origin: str


@dataclass(frozen=True, slots=True)
class NewCredential:
    credential_id: str
    public_key: str
    sign_count: int
    transports: tuple[str, ...]
    synced: bool
    discoverable: bool


def amr_for(method: AuthMethod) -> str:
    # RFC 8176: a key bound to hardware is "hwk"; a passkey synced between devices is software-held, "swk".
    return "swk" if method.synced else "hwk"


def handle_for(user_id: str) -> str:
    return bytes_to_base64url(uuid.UUID(user_id).bytes)


def new_challenge() -> str:
    return bytes_to_base64url(generate_challenge())


def _descriptor(method: AuthMethod) -> PublicKeyCredentialDescriptor:
    transports = []
    for t in method.transports:
        try:
            transports.append(AuthenticatorTransport(t))
        except ValueError:
            continue
    return PublicKeyCredentialDescriptor(id=base64url_to_bytes(method.credential_id or ""), transports=transports)


def registration_options(
    rp: RelyingParty, *, user_handle: str, username: str, display_name: str, challenge: str, existing: list[AuthMethod]
) -> str:
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=base64url_to_bytes(user_handle),
        user_name=username,
        user_display_name=display_name,
        challenge=base64url_to_bytes(challenge),
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            # Discoverable when the key can, so the same credential can later serve passkey sign-in.
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[_descriptor(m) for m in existing if m.credential_id],
    )
    return options_to_json(options)


def verify_registration(rp: RelyingParty, credential_json: str, challenge: str) -> NewCredential:
    parsed = _parse(credential_json)
    try:
        verified = verify_registration_response(
            credential=parsed,
            expected_challenge=base64url_to_bytes(challenge),
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            require_user_verification=False,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise WebAuthnFailed("registration_invalid") from exc
    response = _dict(parsed.get("response"))
    raw_transports = response.get("transports")
    listed = raw_transports[:8] if isinstance(raw_transports, list) else []
    transports = tuple(t[:16] for t in listed if isinstance(t, str))
    cred_props = _dict(_dict(parsed.get("clientExtensionResults")).get("credProps"))
    return NewCredential(
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=bytes_to_base64url(verified.credential_public_key),
        sign_count=verified.sign_count,
        transports=transports,
        synced=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
        discoverable=bool(cred_props.get("rk", False)),
    )


def authentication_options(rp: RelyingParty, *, challenge: str, methods: list[AuthMethod], require_uv: bool) -> str:
    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=base64url_to_bytes(challenge),
        allow_credentials=[_descriptor(m) for m in methods if m.credential_id],
        user_verification=UserVerificationRequirement.REQUIRED if require_uv else UserVerificationRequirement.PREFERRED,
    )
    return options_to_json(options)


def credential_id_of(credential_json: str) -> str:
    parsed = _parse(credential_json)
    raw = parsed.get("rawId") or parsed.get("id")
    if not isinstance(raw, str) or not raw or len(raw) > 1400:
        raise WebAuthnFailed("credential_malformed")
    return raw


def verify_authentication(
    rp: RelyingParty, credential_json: str, challenge: str, method: AuthMethod, *, require_uv: bool
) -> int:
    """The new signature count, once the assertion verifies against the stored public key."""
    parsed = _parse(credential_json)
    try:
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=base64url_to_bytes(challenge),
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=base64url_to_bytes(method.public_key or ""),
            credential_current_sign_count=method.sign_count,
            require_user_verification=require_uv,
        )
    except InvalidAuthenticationResponse as exc:
        if "sign count" in str(exc).lower() and _signature_holds(rp, parsed, challenge, method, require_uv):
            # A valid signature with a counter that did not move forward can mean a cloned
            # authenticator (WebAuthn 6.1.1). The library checks the counter before the signature,
            # so the signature is checked on its own first: a forgery is not reported as a clone.
            raise WebAuthnFailed("sign_count_regressed") from exc
        raise WebAuthnFailed("assertion_invalid") from exc
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise WebAuthnFailed("assertion_invalid") from exc
    return verified.new_sign_count


def _signature_holds(
    rp: RelyingParty, parsed: dict[str, Any], challenge: str, method: AuthMethod, require_uv: bool
) -> bool:
    try:
        verify_authentication_response(
            credential=parsed,
            expected_challenge=base64url_to_bytes(challenge),
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=base64url_to_bytes(method.public_key or ""),
            credential_current_sign_count=0,
            require_user_verification=require_uv,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError):
        return False
    return True


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _parse(credential_json: str) -> dict[str, Any]:
    if not credential_json or len(credential_json) > MAX_CREDENTIAL_JSON:
        raise WebAuthnFailed("credential_malformed")
    try:
        parsed = json.loads(credential_json)
    except ValueError as exc:
        raise WebAuthnFailed("credential_malformed") from exc
    if not isinstance(parsed, dict):
        raise WebAuthnFailed("credential_malformed")
    return parsed
