"""Second-factor credentials as plain values: authenticator apps, security keys, recovery codes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class MethodKind(StrEnum):
    TOTP = "totp"
    WEBAUTHN = "webauthn"
    RECOVERY_CODE = "recovery_code"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    MethodKind.TOTP: "Authenticator app",
    MethodKind.WEBAUTHN: "Security key or passkey",
    MethodKind.RECOVERY_CODE: "Recovery code",
}

# Methods that count toward the policy's required number; recovery codes are a fallback, not one.
ENROLLABLE = (MethodKind.TOTP, MethodKind.WEBAUTHN)


@dataclass(frozen=True, slots=True)
class AuthMethod:
    id: str
    user_id: str
    kind: MethodKind
    name: str
    created_at: datetime
    last_used_at: datetime | None = None
    # TOTP: the seed, encrypted at rest, and the last time step accepted (each code works once).
    totp_secret: str | None = None
    totp_last_step: int = 0
    # WebAuthn: what verification needs later, and what the user sees.
    credential_id: str | None = None
    public_key: str | None = None
    sign_count: int = 0
    transports: tuple[str, ...] = ()
    synced: bool = False
    discoverable: bool = False


@dataclass(frozen=True, slots=True)
class RecoveryCode:
    id: str
    user_id: str
    code_hash: str
    salt: str
    created_at: datetime
    used_at: datetime | None = None


def required_methods(role: str, user_required: int, privileged_required: int) -> int:
    return user_required if role == "user" else privileged_required


def meets_policy(methods: list[AuthMethod] | tuple[AuthMethod, ...], required: int, *, privileged: bool) -> bool:
    """Enough methods, and for coordinators and administrators, of different kinds."""
    usable = [m for m in methods if m.kind in ENROLLABLE]
    if len(usable) < required:
        return False
    if privileged and required >= 2:
        return len({m.kind for m in usable}) >= 2
    return True
