"""Agency and account administration, shared by the command line and the console; each change audited."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta

from alacop.core.accounts import (
    Agency,
    Role,
    User,
    UserStatus,
    validate_domain,
    validate_email,
    validate_ori,
    validate_username,
)
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.clock import isoformat
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.errors import Conflict, InvalidInput, NotFound
from alacop.core.notify import notify
from alacop.core.passwords import check_password, temporary_password
from alacop.core.ports import Transaction
from alacop.core.sessions import EndReason

# User.meta key: when a disabled account was last enabled (ISO 8601 UTC); maintenance counts it as activity.
ENABLED_AT = "enabled_at"


class Directory:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    def _identifier(self, username: str) -> str:
        return f"{username}@{self._deps.domain}"

    async def create_agency(
        self, ori: str, name: str, email_domains: list[str], ctx: RequestContext, actor_id: str | None = None
    ) -> Agency:
        clean_name = name.strip()
        if not clean_name or len(clean_name) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in clean_name):
            raise InvalidInput("an agency name is 1-200 characters", code="invalid_name")
        agency = Agency(
            id=str(uuid.uuid4()),
            ori=validate_ori(ori),
            name=clean_name,
            email_domains=tuple(sorted({validate_domain(d) for d in email_domains})),
            created_at=self._deps.clock.now(),
        )
        async with self._deps.store.transaction() as tx:
            if await tx.agencies.by_ori(agency.ori):
                raise Conflict(f"an agency with ORI {agency.ori} exists", code="agency_exists")
            await tx.agencies.add(agency)
            await tx.audit.append(
                AuditEvent(
                    EventType.AGENCY_CREATED,
                    Outcome.SUCCESS,
                    actor_id=actor_id,
                    agency_id=agency.id,
                    details={
                        # AU-3: before and after; nothing existed before a creation.
                        "before": None,
                        "after": {
                            "ori": agency.ori,
                            "name": agency.name,
                            "email_domains": list(agency.email_domains),
                        },
                    },
                ),
                ctx,
            )
        return agency

    async def create_user(
        self,
        username: str,
        *,
        agency_ori: str,
        email: str,
        name: str,
        role: Role,
        password: str | None,
        ctx: RequestContext,
        actor_id: str | None = None,
    ) -> tuple[User, str | None]:
        """Create an account; returns the generated temporary password when none was given."""
        uname = validate_username(username)
        contact = validate_email(email)
        display = name.strip() or uname
        if len(display) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in display):
            raise InvalidInput("a name is at most 200 printable characters", code="invalid_name")
        generated = None
        if password is None:
            generated = password = temporary_password()
        else:
            problem = check_password(password, policy=self._deps.policy, banned=self._deps.banned, username=uname)
            if problem is not None:
                raise InvalidInput(problem.message, code=problem.code)
        password_hash = await self._deps.hasher.hash_async(password)
        now = self._deps.clock.now()
        async with self._deps.store.transaction() as tx:
            agency = await tx.agencies.by_ori(validate_ori(agency_ori))
            if agency is None:
                raise NotFound(f"no agency with ORI {agency_ori}", code="agency_not_found")
            if await tx.users.by_username(uname):
                raise Conflict(f"the username {uname} is taken", code="username_taken")
            reuse_from = now - timedelta(days=self._deps.policy.identifier_reuse_days)
            if uname in await tx.users.retired_since(uname, reuse_from):
                # CJIS IA-4 d: a deleted account's username is not issued again within the period.
                raise Conflict(f"the username {uname} was retired less than a year ago", code="username_retired")
            user = User(
                id=str(uuid.uuid4()),
                username=uname,
                email=contact,
                name=display,
                agency_id=agency.id,
                role=role,
                status=UserStatus.ACTIVE,
                password_hash=password_hash,
                password_changed_at=now,
                # Whoever chose this password is not the user; the first sign-in replaces it.
                must_change_password=True,
                created_at=now,
            )
            await tx.users.add(user)
            await tx.audit.append(
                AuditEvent(
                    EventType.ACCOUNT_CREATED,
                    Outcome.SUCCESS,
                    actor_id=actor_id,
                    subject_id=user.id,
                    subject_name=self._identifier(uname),
                    agency_id=agency.id,
                    details={
                        "after": {
                            "username": uname,
                            "email": contact,
                            "name": display,
                            "role": str(role),
                            "agency": agency.ori,
                        }
                    },
                ),
                ctx,
            )
        return user, generated

    async def _user(self, username: str) -> User:
        async with self._deps.store.transaction() as tx:
            user = await tx.users.by_username(validate_username(username))
        if user is None:
            raise NotFound(f"no user {username}", code="user_not_found")
        return user

    async def unlock(self, username: str, ctx: RequestContext, actor_id: str | None = None) -> bool:
        user = await self._user(username)
        key = self._identifier(user.username)
        async with self._deps.store.transaction() as tx:
            throttle = await tx.throttles.get(key)
            was_locked = throttle is not None and throttle.locked_at is not None
            await tx.throttles.clear(key)
            # Self-service recovery counts apart; an operator's release clears that counter too.
            await tx.throttles.clear(f"recover:{key}")
            await tx.audit.append(
                AuditEvent(
                    EventType.ACCOUNT_UNLOCKED,
                    Outcome.SUCCESS,
                    "released_by_administrator",
                    actor_id=actor_id,
                    subject_id=user.id,
                    subject_name=key,
                    agency_id=user.agency_id,
                    details={"before": {"locked": was_locked}, "after": {"locked": False}},
                ),
                ctx,
            )
        return was_locked

    async def set_status(
        self,
        username: str,
        status: UserStatus,
        ctx: RequestContext,
        actor_id: str | None = None,
        *,
        reason: str = "",
    ) -> User:
        user = await self._user(username)
        async with self._deps.store.transaction() as tx:
            # Read again under the row lock, so a change made meanwhile is not overwritten.
            current = await tx.users.get(user.id, for_update=True) or user
            return await self.apply_status(tx, current, status, ctx, actor_id=actor_id, reason=reason)

    async def apply_status(
        self,
        tx: Transaction,
        user: User,
        status: UserStatus,
        ctx: RequestContext,
        *,
        actor_id: str | None = None,
        reason: str = "",
        details: Mapping[str, object] | None = None,
    ) -> User:
        """Enable or disable inside the caller's transaction; disabling ends every session at once."""
        now = self._deps.clock.now()
        meta = dict(user.meta)
        if status is UserStatus.ACTIVE and user.status is not UserStatus.ACTIVE:
            # Re-enabling counts as activity for the 90-day rule (core/maintenance.py), or the next
            # hourly run would disable the account again at once (CJIS AC-2(3)).
            meta[ENABLED_AT] = isoformat(now)
        changed = replace(user, status=status, disabled_at=now if status is UserStatus.DISABLED else None, meta=meta)
        event_type = EventType.ACCOUNT_DISABLED if status is UserStatus.DISABLED else EventType.ACCOUNT_ENABLED
        await tx.users.update(changed)
        ended = 0
        if status is UserStatus.DISABLED:
            # CJIS AC-2 / ASVS 7.4: disabling an account ends its sessions at once.
            ended = await tx.sessions.end_all_for_user(user.id, now, EndReason.ACCOUNT_DISABLED)
        await tx.audit.append(
            AuditEvent(
                event_type,
                Outcome.SUCCESS,
                reason,
                actor_id=actor_id,
                subject_id=user.id,
                subject_name=self._identifier(user.username),
                agency_id=user.agency_id,
                details={
                    **(details or {}),
                    "before": {"status": str(user.status)},
                    "after": {"status": str(status)},
                    "sessions_ended": ended,
                },
            ),
            ctx,
        )
        return changed

    async def delete_user(self, username: str, ctx: RequestContext, actor_id: str | None = None) -> User:
        """Remove an account and all it holds (CJIS AC-2: remove); its username is retired, not reused
        for `identifier_reuse_days` (CJIS IA-4 d). The audit trail keeps its records."""
        user = await self._user(username)
        now = self._deps.clock.now()
        async with self._deps.store.transaction() as tx:
            await tx.users.delete(user.id, now)
            await tx.throttles.clear(self._identifier(user.username))
            await tx.throttles.clear(f"recover:{self._identifier(user.username)}")
            await tx.audit.append(
                AuditEvent(
                    EventType.ACCOUNT_DELETED,
                    Outcome.SUCCESS,
                    actor_id=actor_id,
                    subject_id=user.id,
                    subject_name=self._identifier(user.username),
                    agency_id=user.agency_id,
                    details={
                        "before": {
                            "username": user.username,
                            "email": user.email,
                            "name": user.name,
                            "role": str(user.role),
                            "status": str(user.status),
                        },
                        "after": None,
                        "username_reusable_after": (now + timedelta(days=self._deps.policy.identifier_reuse_days))
                        .date()
                        .isoformat(),
                    },
                ),
                ctx,
            )
        return user

    async def reset_methods(
        self, username: str, note: str, ctx: RequestContext, actor_id: str | None = None
    ) -> tuple[int, int]:
        """Remove every second factor and recovery code, after identity was re-proofed (CJIS IA-5 n).

        The next sign-in, with the password, enrols new methods; every open session ends now.
        """
        how = note.strip()
        if not how or len(how) > 500:
            raise InvalidInput("say how the user's identity was re-proofed (1-500 characters)", code="note_required")
        user = await self._user(username)
        now = self._deps.clock.now()
        async with self._deps.store.transaction() as tx:
            methods = await tx.methods.delete_all_for_user(user.id)
            codes = await tx.recovery_codes.replace_set(user.id, [])
            ended = await tx.sessions.end_all_for_user(user.id, now, EndReason.ADMIN)
            await tx.audit.append(
                AuditEvent(
                    EventType.METHODS_RESET,
                    Outcome.SUCCESS,
                    "reproofed",
                    actor_id=actor_id,
                    subject_id=user.id,
                    subject_name=self._identifier(user.username),
                    agency_id=user.agency_id,
                    details={
                        "before": {"methods": methods, "recovery_codes": codes},
                        "after": {"methods": 0, "recovery_codes": 0},
                        "reproofing_note": how,
                        "sessions_ended": ended,
                    },
                ),
                ctx,
            )
        await notify(self._deps, user, "methods_reset", ctx)
        return methods, codes

    async def users(self, agency_ori: str | None = None) -> list[tuple[User, Agency | None]]:
        async with self._deps.store.transaction() as tx:
            agency_id = None
            if agency_ori:
                agency = await tx.agencies.by_ori(validate_ori(agency_ori))
                if agency is None:
                    raise NotFound(f"no agency with ORI {agency_ori}", code="agency_not_found")
                agency_id = agency.id
            agencies = {a.id: a for a in await tx.agencies.list()}
            return [(u, agencies.get(u.agency_id)) for u in await tx.users.list(agency_id)]
