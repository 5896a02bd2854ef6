"""A self-hosted picture and audio CAPTCHA: no third-party service, so it works on closed CJIS networks.

Each challenge is a random nonce. Its answer is derived from the nonce with a server key
(HMAC-SHA256, mapped onto an alphabet that reads and sounds unambiguous), so the server never stores
the answer at all: the flow keeps the nonce and its issue time, and a submission is checked by
deriving the answer again. The nonce is spent by the first submission, right or wrong.

Tests learn answers one way only: with ALACOP_ENV=test and ALACOP_CAPTCHA_SEED set, the key is the
seed, and `answer_for(seed, nonce)` gives the answer for the nonce shown in the page.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

# No 0/O, 1/I/L, 2/Z, 5/S, 8/B, U/V or G/Q: letters that look or sound alike are left out.
ALPHABET = "ACDEFHJKMNPRTWXY3479"
LENGTH = 6
LIFETIME = timedelta(minutes=5)


def answer_for(key: bytes, nonce: str) -> str:
    digest = hmac.new(key, b"captcha:" + nonce.encode("ascii"), hashlib.sha256).digest()
    # 256 bytes modulo 20 is almost uniform; six symbols from the 32-byte digest are plenty.
    return "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:LENGTH])


def normalise(typed: str) -> str:
    return "".join(ch for ch in typed.upper() if not ch.isspace())[:32]


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: str
    issued_at: datetime


class Captcha:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @staticmethod
    def new(now: datetime) -> Challenge:
        return Challenge(nonce=secrets.token_urlsafe(18), issued_at=now)

    def check(self, challenge: Challenge | None, typed: str, now: datetime) -> bool:
        if challenge is None or now - challenge.issued_at > LIFETIME:
            return False
        return hmac.compare_digest(answer_for(self._key, challenge.nonce), normalise(typed))

    def picture(self, nonce: str) -> bytes:
        from captcha.image import ImageCaptcha

        image = ImageCaptcha(width=280, height=90)
        return image.generate(answer_for(self._key, nonce)).getvalue()

    def audio(self, nonce: str) -> bytes:
        from captcha.audio import AudioCaptcha

        # The package speaks letters and digits; the answer is spelled out one symbol at a time.
        return bytes(AudioCaptcha().generate(answer_for(self._key, nonce)))
