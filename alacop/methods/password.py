"""The password method: verification off the event loop, and setting a new password under policy."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from alacop.core import attempts
from alacop.core.accounts import User
from alacop.core.audit import AuditEvent, EventType, Outcome, own_event
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.notify import notify
from alacop.core.passwords import PasswordProblem, check_password
from alacop.core.sessions import EndReason

MAX_PASSWORD_INPUT = 1024
CURRENT_WRONG = PasswordProblem("current_password_wrong", "Your current password is incorrect.")
REUSED = PasswordProblem("password_reused", "Choose a password different from your current one.")
DISABLED = PasswordProblem(
    "account_disabled", "Your account is disabled. Contact your agency coordinator or the Support Center."
)
LOCKED = PasswordProblem(
    "account_locked",
    "Your account is locked after too many failed attempts. Unlock it with “Can't access your account?”, "
    "or contact the Support Center.",
)


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    """The changed account, or why the change was refused (and whether that refusal locked it)."""

    user: User | None = None
    problem: PasswordProblem | None = None
    locked: bool = False
    sessions_ended: int = 0


class PasswordMethod:
    amr = "pwd"

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def verify(self, user: User | None, password: str) -> bool:
        # argon2 takes ~20 ms of CPU; a worker thread keeps the event loop answering meanwhile.
        stored = user.password_hash if user is not None and user.password_hash else None
        return await self._deps.hasher.verify_async(stored, password)

    def needs_rehash(self, user: User) -> bool:
        return user.password_hash is not None and self._deps.hasher.needs_rehash(user.password_hash)

    async def rehashed(self, user: User, password: str) -> User:
        return replace(user, password_hash=await self._deps.hasher.hash_async(password))

    def problem(self, user: User, new_password: str, confirm: str) -> PasswordProblem | None:
        if new_password != confirm:
            return PasswordProblem("password_mismatch", "The new passwords do not match.")
        return check_password(new_password, policy=self._deps.policy, banned=self._deps.banned, username=user.username)

    async def with_new_password(self, user: User, new_password: str, now: datetime) -> User:
        new_hash = await self._deps.hasher.hash_async(new_password)
        return replace(user, password_hash=new_hash, password_changed_at=now, must_change_password=False)

    def must_change(self, user: User, now: datetime) -> str | None:
        """Why the user must choose a new password now, if they must (CJIS IA-5 f)."""
        if user.must_change_password:
            return "temporary"
        if user.password_changed_at is None or now - user.password_changed_at >= self._deps.policy.password_max_age:
            return "expired"
        return None

    def _event(self, kind: EventType, outcome: Outcome, reason: str, user: User, **details: object) -> AuditEvent:
        return own_event(kind, outcome, reason, user, self._deps.domain, details)

    async def change(
        self,
        user: User,
        *,
        current: str,
        new: str,
        confirm: str,
        ctx: RequestContext,
        reason: str,
        keep_session: str | None = None,
    ) -> ChangeOutcome:
        """Change a password: the current one must be proven, and a wrong one counts toward lockout.

        Every other session of the user ends (CJIS IA-11); `keep_session` names the one that stays.
        """
        deps = self._deps
        identifier = f"{user.username}@{deps.domain}"
        current, new, confirm = (v[:MAX_PASSWORD_INPUT] for v in (current, new, confirm))
        claimed = await attempts.claim(deps, identifier)
        if claimed is None:
            await self.verify(None, current)
            return ChangeOutcome(problem=LOCKED, locked=True)
        failed = EventType.PASSWORD_CHANGE_FAILED
        if not await self.verify(user, current):
            now = deps.clock.now()
            async with deps.store.transaction() as tx:
                updated, _ = await attempts.settle(tx, claimed, deps)
                await tx.audit.append(
                    self._event(
                        failed,
                        Outcome.FAILURE,
                        CURRENT_WRONG.code,
                        user,
                        consecutive_failures=updated.failures,
                    ),
                    ctx,
                )
                if updated.locked_at is None:
                    return ChangeOutcome(problem=CURRENT_WRONG)
                lock_event = self._event(
                    EventType.ACCOUNT_LOCKED,
                    Outcome.INFO,
                    "too_many_failures",
                    user,
                    failures=updated.failures,
                )
                await tx.audit.append(lock_event, ctx)
                ended = await tx.sessions.end_all_for_user(user.id, now, EndReason.LOCKED)
            await notify(deps, user, "account_locked", ctx)
            return ChangeOutcome(problem=LOCKED, locked=True, sessions_ended=ended)
        await attempts.release(deps, claimed)
        problem = self.problem(user, new, confirm)
        if problem is None and new == current:
            problem = REUSED
        if problem is not None:
            async with deps.store.transaction() as tx:
                await tx.audit.append(self._event(failed, Outcome.FAILURE, problem.code, user), ctx)
            return ChangeOutcome(problem=problem)
        now = deps.clock.now()
        changed = await self.with_new_password(user, new, now)
        async with deps.store.transaction() as tx:
            if not await tx.users.set_password(user.id, changed.password_hash or "", now):
                # Disabled since it was read: the change is refused, and nothing else is written.
                return ChangeOutcome(problem=DISABLED)
            ended = 0
            for other in await tx.sessions.active_for_user(user.id):
                if other.id_hash != keep_session:
                    ended += int(await tx.sessions.end(other.id_hash, now, EndReason.PASSWORD_CHANGED))
            await tx.audit.append(
                self._event(EventType.PASSWORD_CHANGED, Outcome.SUCCESS, reason, user, other_sessions_ended=ended),
                ctx,
            )
        await notify(deps, changed, "password_changed", ctx)
        return ChangeOutcome(user=changed, sessions_ended=ended)
