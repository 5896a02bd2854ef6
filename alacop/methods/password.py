"""The password method: verification off the event loop, and setting a new password under policy."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime

from alacop.core.accounts import User
from alacop.core.deps import Deps
from alacop.core.passwords import PasswordProblem, check_password


class PasswordMethod:
    amr = "pwd"

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def verify(self, user: User | None, password: str) -> bool:
        # argon2 takes ~20 ms of CPU; a worker thread keeps the event loop answering meanwhile.
        stored = user.password_hash if user is not None and user.password_hash else None
        return await asyncio.to_thread(self._deps.hasher.verify, stored, password)

    def needs_rehash(self, user: User) -> bool:
        return user.password_hash is not None and self._deps.hasher.needs_rehash(user.password_hash)

    async def rehashed(self, user: User, password: str) -> User:
        new_hash = await asyncio.to_thread(self._deps.hasher.hash, password)
        return replace(user, password_hash=new_hash)

    def problem(self, user: User, new_password: str, confirm: str) -> PasswordProblem | None:
        if new_password != confirm:
            return PasswordProblem("password_mismatch", "The new passwords do not match.")
        return check_password(
            new_password, policy=self._deps.policy, banned=self._deps.banned, username=user.username
        )

    async def with_new_password(self, user: User, new_password: str, now: datetime) -> User:
        new_hash = await asyncio.to_thread(self._deps.hasher.hash, new_password)
        return replace(user, password_hash=new_hash, password_changed_at=now, must_change_password=False)

    def must_change(self, user: User, now: datetime) -> str | None:
        """Why the user must choose a new password now, if they must (CJIS IA-5 f)."""
        if user.must_change_password:
            return "temporary"
        if (
            user.password_changed_at is None
            or now - user.password_changed_at >= self._deps.policy.password_max_age
        ):
            return "expired"
        return None
