"""The collaborators every service is built from, wired once at start."""

from __future__ import annotations

from dataclasses import dataclass

from alacop.core.clock import Clock
from alacop.core.passwords import BannedList, PasswordHasher
from alacop.core.ports import RateLimiter, Store
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
