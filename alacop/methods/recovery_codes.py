"""Recovery codes (NIST 800-63B look-up secrets): ten single-use codes of 120 bits each, stored hashed."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime

from alacop.core.credentials import RecoveryCode

COUNT = 10
AMR = "otp"
# 32 symbols without I, L, O or U, so a code read aloud or copied by hand is not misread.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# 24 symbols of 5 bits: 120 bits. NIST 800-63B 5.1.2.2 lets look-up secrets of 112 bits or more be
# stored with a plain salted hash; shorter ones would need a password-style KDF for every guess.
_GROUPS = 6
_GROUP = 4
_LOOKALIKES = str.maketrans("OIL", "011")


def generate() -> list[str]:
    return ["-".join(_group() for _ in range(_GROUPS)) for _ in range(COUNT)]


def _group() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(_GROUP))


def normalise(code: str) -> str:
    cleaned = "".join(ch for ch in code.upper() if ch.isalnum())[: _GROUPS * _GROUP + 4]
    return cleaned.translate(_LOOKALIKES)


def digest(code: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{normalise(code)}".encode()).hexdigest()


def records(user_id: str, codes: Sequence[str], now: datetime) -> list[RecoveryCode]:
    out = []
    for code in codes:
        salt = secrets.token_hex(16)
        out.append(
            RecoveryCode(id=str(uuid.uuid4()), user_id=user_id, code_hash=digest(code, salt), salt=salt, created_at=now)
        )
    return out


def find(unused: Sequence[RecoveryCode], typed: str) -> RecoveryCode | None:
    """The unused code the user typed. Every stored code is checked, whatever matches first."""
    if len(normalise(typed)) != _GROUPS * _GROUP:
        return None
    found = None
    for code in unused:
        if hmac.compare_digest(digest(typed, code.salt), code.code_hash):
            found = code
    return found
