"""Authenticator apps (TOTP, RFC 6238): 6 digits, 30-second steps, each code accepted once."""

from __future__ import annotations

import io
import re
from datetime import datetime

import pyotp
import segno
from pyotp.utils import strings_equal

DIGITS = 6
PERIOD = 30
AMR = "otp"
_CODE = re.compile(r"^[0-9]{6}$")


def new_secret() -> str:
    # 32 base32 characters: 160 bits, the length RFC 4226 recommends for the shared secret.
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The enrolment QR code as inline SVG: no script, no external image, so CSP stays strict."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(
        out, kind="svg", scale=5, border=4, xmldecl=False, svgns=True, title="QR code for your authenticator app"
    )
    return out.getvalue().decode("utf-8")


def normalise_code(code: str) -> str:
    return "".join(ch for ch in code if not ch.isspace())[:16]


def matching_step(secret: str, code: str, now: datetime, skew: int) -> int | None:
    """The time step the code belongs to, within ±skew steps of now, or None."""
    typed = normalise_code(code)
    if not _CODE.match(typed):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)
    current = totp.timecode(now)
    match: int | None = None
    # Every candidate is compared, so the time taken does not tell which step matched.
    for offset in range(-skew, skew + 1):
        if strings_equal(totp.at(now, counter_offset=offset), typed):
            match = current + offset
    return match
