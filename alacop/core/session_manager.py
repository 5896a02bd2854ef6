"""Opening, resolving and ending server-side sessions, each audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from alacop.core.accounts import User
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.oidc import IssuedToken
from alacop.core.ports import Transaction
from alacop.core.sessions import EndReason, Session
from alacop.core.tokens import new_token, token_hash
from alacop.policy.cjis import Policy

MAX_TOKEN_LENGTH = 128


async def open_session(
    tx: Transaction,
    user: User,
    ctx: RequestContext,
    now: datetime,
    policy: Policy,
    *,
    aal: str,
    amr: tuple[str, ...],
    second_factor: str | None = None,
) -> str:
    """Create a session and return its token; only the token's hash is stored."""
    token = new_token()
    session = Session(
        id_hash=token_hash(token),
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        expires_at=now + policy.session_absolute,
        auth_time=now,
        aal=aal,
        amr=amr,
        source_ip=ctx.source_ip[:64],
        user_agent=ctx.user_agent[:512],
        second_factor=second_factor,
    )
    await tx.sessions.add(session)
    await tx.audit.append(
        AuditEvent(
            EventType.SESSION_STARTED,
            Outcome.SUCCESS,
            actor_id=user.id,
            subject_id=user.id,
            subject_name=user.username,
            agency_id=user.agency_id,
            details={"aal": aal, "amr": list(amr), "session_ref": session.id_hash[:12]},
        ),
        ctx,
    )
    return token


@dataclass(frozen=True, slots=True)
class Current:
    session: Session
    user: User


@dataclass(frozen=True, slots=True)
class Ended:
    """A session a sign-out ended, and the application tokens its sign-ins had been issued."""

    session: Session
    user: User | None
    revoked: tuple[IssuedToken, ...]


class SessionManager:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def resolve(self, token: str | None, ctx: RequestContext) -> Current | None:
        """The live session for a cookie, ending it if it has run out (CJIS AC-11)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        id_hash = token_hash(token)
        now = self._deps.clock.now()
        # Most requests only read; a write happens once a minute (touch) or when a session ends.
        async with self._deps.store.read() as db:
            session = await db.sessions.get(id_hash)
            if session is None or session.ended_at is not None:
                return None
            user = await db.users.get(session.user_id)
        reason = session.expiry_reason(now, self._deps.policy)
        if reason is None and (user is None or not user.active):
            reason = EndReason.ACCOUNT_DISABLED
        if reason is not None:
            async with self._deps.store.transaction() as tx:
                if await tx.sessions.end(id_hash, now, reason):
                    await tx.audit.append(
                        AuditEvent(
                            EventType.SESSION_EXPIRED,
                            Outcome.INFO,
                            reason,
                            subject_id=session.user_id,
                            subject_name=user.username if user else None,
                            agency_id=user.agency_id if user else None,
                            details={"session_ref": id_hash[:12]},
                        ),
                        ctx,
                    )
            return None
        assert user is not None
        if session.needs_touch(now):
            async with self._deps.store.transaction() as tx:
                await tx.sessions.touch(id_hash, now)
        return Current(session=session, user=user)

    async def end(self, token: str | None, ctx: RequestContext, reason: EndReason = EndReason.SIGNED_OUT) -> bool:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return False
        id_hash = token_hash(token)
        now = self._deps.clock.now()
        async with self._deps.store.transaction() as tx:
            session = await tx.sessions.get(id_hash)
            if session is None or session.ended_at is not None:
                return False
            await tx.sessions.end(id_hash, now, reason)
            user = await tx.users.get(session.user_id)
            await tx.audit.append(
                AuditEvent(
                    EventType.SESSION_ENDED,
                    Outcome.SUCCESS,
                    reason,
                    actor_id=session.user_id,
                    subject_id=session.user_id,
                    subject_name=user.username if user else None,
                    agency_id=user.agency_id if user else None,
                    details={"session_ref": id_hash[:12]},
                ),
                ctx,
            )
        return True

    async def sign_out(self, token: str | None, ctx: RequestContext) -> Ended | None:
        """End the cookie's session as `end` does and revoke its applications' tokens, in one transaction."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        return await self.sign_out_hash(token_hash(token), ctx)

    async def sign_out_hash(self, id_hash: str, ctx: RequestContext) -> Ended | None:
        """The same for a session named by its stored hash (RP-initiated logout without the cookie)."""
        now = self._deps.clock.now()
        async with self._deps.store.transaction() as tx:
            session = await tx.sessions.get(id_hash)
            if session is None or session.ended_at is not None:
                return None
            if not await tx.sessions.end(id_hash, now, EndReason.SIGNED_OUT):
                return None
            user = await tx.users.get(session.user_id)
            revoked = tuple(await tx.tokens.revoke_for_session(id_hash, now))

            def event(kind: EventType, reason: str, details: dict[str, object]) -> AuditEvent:
                return AuditEvent(
                    kind,
                    Outcome.SUCCESS,
                    reason,
                    actor_id=session.user_id,
                    subject_id=session.user_id,
                    subject_name=user.username if user else None,
                    agency_id=user.agency_id if user else None,
                    details={**details, "session_ref": id_hash[:12]},
                )

            await tx.audit.append(event(EventType.SESSION_ENDED, EndReason.SIGNED_OUT, {}), ctx)
            for client_id in sorted({t.client_id for t in revoked}):
                count = sum(1 for t in revoked if t.client_id == client_id)
                await tx.audit.append(
                    event(EventType.TOKEN_REVOKED, "session_ended", {"client_id": client_id, "revoked": count}), ctx
                )
        return Ended(session=session, user=user, revoked=revoked)
