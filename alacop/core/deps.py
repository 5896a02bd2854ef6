"""The collaborators every service is built from, wired once at start."""

from __future__ import annotations

from dataclasses import dataclass

from alacop.core.captcha import Captcha
from alacop.core.clock import Clock
from alacop.core.mail import Mailer
from alacop.core.passwords import BannedList, PasswordHasher
from alacop.core.ports import RateLimiter, Store
from alacop.core.secretbox import SecretBox
from alacop.policy.cjis import Policy


@dataclass(frozen=True, slots=True)
class Deps:
    store: Store
    clock: Clock
    policy: Policy
    hasher: PasswordHasher
    banned: BannedList
    limiter: RateLimiter
    domain: str
    banner_sha256: str
    box: SecretBox
    mailer: Mailer
    captcha: Captcha
    # A server-side key for derived values that must stay the same per input yet reveal nothing.
    pepper: bytes = b""
    # Who we are to authenticators and in messages.
    portal_name: str = "AlaCOP"
    support_name: str = "ALEA Support Center"
    origin: str = "http://localhost:8000"
    rp_id: str = "localhost"
