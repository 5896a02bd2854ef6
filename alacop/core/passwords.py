"""Password hashing (argon2id) and the CJIS / NIST password policy."""

from __future__ import annotations

import asyncio
import os
import secrets
import string
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from alacop.policy.cjis import Policy

# OWASP Password Storage Cheat Sheet: argon2id, m=19456 KiB, t=2, p=1.
ARGON2_MEMORY_KIB = 19456
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1


def normalise_password(password: str) -> str:
    # NIST 800-63B 5.1.1.2: apply NFKC so the same passphrase typed on two keyboards matches.
    return unicodedata.normalize("NFKC", password)


def _hashing_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not every platform has affinity
        return max(1, os.cpu_count() or 1)


class PasswordHasher:
    """argon2id with its own small thread pool.

    One thread per core this process may use: more would not finish hashes sooner, and each
    running hash holds 19 MiB, so an unbounded pool costs memory for nothing.
    """

    def __init__(
        self,
        *,
        memory_cost: int = ARGON2_MEMORY_KIB,
        time_cost: int = ARGON2_TIME_COST,
        parallelism: int = ARGON2_PARALLELISM,
    ) -> None:
        self._argon = _Argon2(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID)
        # Unknown accounts are checked against this so they cost the same time as real ones.
        self._dummy = self._argon.hash(secrets.token_urlsafe(24))
        self._pool = ThreadPoolExecutor(max_workers=_hashing_threads(), thread_name_prefix="argon2")

    async def hash_async(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.hash, password)

    async def verify_async(self, stored: str | None, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.verify, stored, password)

    def hash(self, password: str) -> str:
        return self._argon.hash(normalise_password(password))

    def verify(self, stored: str | None, password: str) -> bool:
        target = stored or self._dummy
        try:
            ok = self._argon.verify(target, normalise_password(password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return ok and stored is not None

    def burn(self, password: str) -> None:
        """Spend the time of one verification without an account, so timing says nothing."""
        self.verify(None, password)

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._argon.check_needs_rehash(stored)
        except InvalidHashError:
            return True


@dataclass(frozen=True, slots=True)
class PasswordProblem:
    code: str
    message: str


class BannedList:
    """A set of common and breached passwords, compared case-insensitively after NFKC."""

    def __init__(self, words: frozenset[str]) -> None:
        self._words = words

    def __contains__(self, password: str) -> bool:
        return normalise_password(password).casefold() in self._words

    def __len__(self) -> int:
        return len(self._words)

    @classmethod
    def parse(cls, text: str) -> BannedList:
        stripped = (line.strip() for line in text.splitlines())
        words = frozenset(
            normalise_password(line).casefold() for line in stripped if line and not line.startswith("# ")
        )
        return cls(words)

    @classmethod
    def load(cls, override: Path | None = None) -> BannedList:
        if override is not None and override.is_file():
            return cls.parse(override.read_text(encoding="utf-8"))
        shipped = resources.files("alacop.core").joinpath("data/banned_passwords.txt")
        return cls.parse(shipped.read_text(encoding="utf-8"))


_PRINTABLE_CATEGORIES_REFUSED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def check_password(
    password: str, *, policy: Policy, banned: BannedList, username: str | None = None
) -> PasswordProblem | None:
    """Return why a new password is refused, or None. No composition rules (NIST 800-63B)."""
    value = normalise_password(password)
    if len(value) < policy.password_min_length:
        return PasswordProblem("password_too_short", f"Use at least {policy.password_min_length} characters.")
    if len(value) > policy.password_max_length:
        return PasswordProblem("password_too_long", f"Use at most {policy.password_max_length} characters.")
    if any(unicodedata.category(ch) in _PRINTABLE_CATEGORIES_REFUSED for ch in value):
        return PasswordProblem("password_unprintable", "Use letters, digits, spaces and printable symbols only.")
    if username and username.casefold() in value.casefold():
        return PasswordProblem("password_contains_username", "Your password must not contain your username.")
    if value in banned:
        return PasswordProblem(
            "password_banned",
            "That password is on the list of common or breached passwords. Choose another.",
        )
    return None


_TEMP_ALPHABET = string.ascii_letters + string.digits


def temporary_password() -> str:
    # 20 characters from 62 gives about 119 bits; the user must replace it at first sign-in.
    return "".join(secrets.choice(_TEMP_ALPHABET) for _ in range(20))
