"""The SQL implementation of the core's storage Protocols."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from alacop.core.accounts import Agency, Role, User, UserStatus
from alacop.core.audit import AuditChain, AuditEvent, AuditRecord
from alacop.core.clock import Clock, isoformat, parse_iso
from alacop.core.context import RequestContext
from alacop.core.errors import Conflict
from alacop.core.ports import FlowRecord, Throttle
from alacop.core.sessions import Session
from alacop.store import tables as t


def _agency(row: RowMapping) -> Agency:
    return Agency(
        id=row["id"],
        ori=row["ori"],
        name=row["name"],
        email_domains=tuple(json.loads(row["email_domains"])),
        created_at=row["created_at"],
    )


def _user(row: RowMapping) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        email=row["email"],
        name=row["name"],
        agency_id=row["agency_id"],
        role=Role(row["role"]),
        status=UserStatus(row["status"]),
        password_hash=row["password_hash"],
        password_changed_at=row["password_changed_at"],
        must_change_password=bool(row["must_change_password"]),
        created_at=row["created_at"],
        last_login_at=row["last_login_at"],
        disabled_at=row["disabled_at"],
        meta=json.loads(row["meta"] or "{}"),
    )


def _user_values(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "name": user.name,
        "agency_id": user.agency_id,
        "role": str(user.role),
        "status": str(user.status),
        "password_hash": user.password_hash,
        "password_changed_at": user.password_changed_at,
        "must_change_password": user.must_change_password,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
        "disabled_at": user.disabled_at,
        "meta": json.dumps(user.meta, sort_keys=True),
    }


def _session(row: RowMapping) -> Session:
    return Session(
        id_hash=row["id_hash"],
        user_id=row["user_id"],
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
        expires_at=row["expires_at"],
        auth_time=row["auth_time"],
        aal=row["aal"],
        amr=tuple(json.loads(row["amr"])),
        source_ip=row["source_ip"],
        user_agent=row["user_agent"],
        ended_at=row["ended_at"],
        end_reason=row["end_reason"],
    )


def _flow(row: RowMapping) -> FlowRecord:
    return FlowRecord(
        id=row["id"],
        kind=row["kind"],
        state=row["state"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        csrf_token=row["csrf_token"],
        binding=row["binding"],
        return_to=row["return_to"],
        payload=row["payload"],
    )


def _audit(row: RowMapping) -> AuditRecord:
    return AuditRecord(**{c: row[c] for c in AuditRecord.__slots__})  # type: ignore[attr-defined]


class _Repo:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def _one(self, stmt: Any) -> RowMapping | None:
        return (await self.conn.execute(stmt)).mappings().first()


class SqlAgencies(_Repo):
    async def add(self, agency: Agency) -> None:
        try:
            await self.conn.execute(
                insert(t.agencies).values(
                    id=agency.id,
                    ori=agency.ori,
                    name=agency.name,
                    email_domains=json.dumps(list(agency.email_domains)),
                    created_at=agency.created_at,
                )
            )
        except IntegrityError as exc:
            raise Conflict("an agency with that ORI exists", code="agency_exists") from exc

    async def get(self, agency_id: str) -> Agency | None:
        row = await self._one(select(t.agencies).where(t.agencies.c.id == agency_id))
        return _agency(row) if row else None

    async def by_ori(self, ori: str) -> Agency | None:
        row = await self._one(select(t.agencies).where(t.agencies.c.ori == ori))
        return _agency(row) if row else None

    async def list(self) -> Sequence[Agency]:
        rows = (await self.conn.execute(select(t.agencies).order_by(t.agencies.c.name))).mappings()
        return [_agency(r) for r in rows]


class SqlUsers(_Repo):
    async def add(self, user: User) -> None:
        try:
            await self.conn.execute(insert(t.users).values(**_user_values(user)))
        except IntegrityError as exc:
            raise Conflict("that username is taken", code="username_taken") from exc

    async def get(self, user_id: str) -> User | None:
        row = await self._one(select(t.users).where(t.users.c.id == user_id))
        return _user(row) if row else None

    async def by_username(self, username: str) -> User | None:
        row = await self._one(select(t.users).where(t.users.c.username == username))
        return _user(row) if row else None

    async def list(self, agency_id: str | None = None) -> Sequence[User]:
        stmt = select(t.users).order_by(t.users.c.username)
        if agency_id is not None:
            stmt = stmt.where(t.users.c.agency_id == agency_id)
        return [_user(r) for r in (await self.conn.execute(stmt)).mappings()]

    async def update(self, user: User) -> None:
        values = _user_values(user)
        values.pop("id")
        await self.conn.execute(update(t.users).where(t.users.c.id == user.id).values(**values))


class SqlSessions(_Repo):
    async def add(self, session: Session) -> None:
        await self.conn.execute(
            insert(t.sessions).values(
                id_hash=session.id_hash,
                user_id=session.user_id,
                created_at=session.created_at,
                last_seen_at=session.last_seen_at,
                expires_at=session.expires_at,
                auth_time=session.auth_time,
                aal=session.aal,
                amr=json.dumps(list(session.amr)),
                source_ip=session.source_ip,
                user_agent=session.user_agent,
            )
        )

    async def get(self, id_hash: str) -> Session | None:
        row = await self._one(select(t.sessions).where(t.sessions.c.id_hash == id_hash))
        return _session(row) if row else None

    async def touch(self, id_hash: str, at: datetime) -> None:
        await self.conn.execute(
            update(t.sessions).where(t.sessions.c.id_hash == id_hash).values(last_seen_at=at)
        )

    async def end(self, id_hash: str, at: datetime, reason: str) -> bool:
        result = await self.conn.execute(
            update(t.sessions)
            .where(t.sessions.c.id_hash == id_hash, t.sessions.c.ended_at.is_(None))
            .values(ended_at=at, end_reason=reason)
        )
        return bool(result.rowcount)

    async def end_all_for_user(self, user_id: str, at: datetime, reason: str) -> int:
        result = await self.conn.execute(
            update(t.sessions)
            .where(t.sessions.c.user_id == user_id, t.sessions.c.ended_at.is_(None))
            .values(ended_at=at, end_reason=reason)
        )
        return int(result.rowcount)

    async def active_for_user(self, user_id: str) -> Sequence[Session]:
        stmt = (
            select(t.sessions)
            .where(t.sessions.c.user_id == user_id, t.sessions.c.ended_at.is_(None))
            .order_by(t.sessions.c.created_at.desc())
        )
        return [_session(r) for r in (await self.conn.execute(stmt)).mappings()]


class SqlFlows(_Repo):
    def _values(self, flow: FlowRecord) -> dict[str, Any]:
        return {
            "kind": flow.kind,
            "state": flow.state,
            "issued_at": flow.issued_at,
            "expires_at": flow.expires_at,
            "csrf_token": flow.csrf_token,
            "binding": flow.binding,
            "return_to": flow.return_to,
            "payload": flow.payload,
        }

    async def add(self, flow: FlowRecord) -> None:
        await self.conn.execute(insert(t.flows).values(id=flow.id, **self._values(flow)))

    async def get(self, flow_id: str) -> FlowRecord | None:
        row = await self._one(select(t.flows).where(t.flows.c.id == flow_id))
        return _flow(row) if row else None

    async def save(self, flow: FlowRecord) -> None:
        await self.conn.execute(update(t.flows).where(t.flows.c.id == flow.id).values(**self._values(flow)))

    async def delete(self, flow_id: str) -> None:
        await self.conn.execute(delete(t.flows).where(t.flows.c.id == flow_id))

    async def purge_expired(self, before: datetime) -> int:
        result = await self.conn.execute(delete(t.flows).where(t.flows.c.expires_at < before))
        return int(result.rowcount)


class SqlThrottles(_Repo):
    async def get(self, key: str, *, for_update: bool = False) -> Throttle | None:
        stmt = select(t.login_throttles).where(t.login_throttles.c.key == key)
        if for_update:
            # An empty row first, so there is always a row to lock: parallel wrong passwords
            # are counted one after another instead of overwriting each other.
            dialect = self.conn.dialect.name
            ensure = (pg_insert if dialect == "postgresql" else sqlite_insert)(t.login_throttles)
            await self.conn.execute(
                ensure.values(key=key, failure_times="[]", locked_at=None).on_conflict_do_nothing()
            )
            stmt = stmt.with_for_update()
        row = await self._one(stmt)
        if row is None or (row["failure_times"] == "[]" and row["locked_at"] is None):
            return None
        return Throttle(
            key=row["key"],
            failure_times=tuple(parse_iso(t) for t in json.loads(row["failure_times"])),
            locked_at=row["locked_at"],
        )

    async def put(self, throttle: Throttle) -> None:
        values = {
            "failure_times": json.dumps([isoformat(t) for t in throttle.failure_times]),
            "locked_at": throttle.locked_at,
        }
        result = await self.conn.execute(
            update(t.login_throttles).where(t.login_throttles.c.key == throttle.key).values(**values)
        )
        if not result.rowcount:
            await self.conn.execute(insert(t.login_throttles).values(key=throttle.key, **values))

    async def clear(self, key: str) -> None:
        await self.conn.execute(delete(t.login_throttles).where(t.login_throttles.c.key == key))


class SqlAudit(_Repo):
    def __init__(self, conn: AsyncConnection, chain: AuditChain, clock: Clock) -> None:
        super().__init__(conn)
        self._chain = chain
        self._clock = clock

    async def append(self, event: AuditEvent, ctx: RequestContext) -> AuditRecord:
        head = (
            await self.conn.execute(
                select(t.audit_head.c.seq, t.audit_head.c.hash)
                .where(t.audit_head.c.id == 1)
                .with_for_update()
            )
        ).one()
        record = self._chain.seal(
            event, seq=int(head.seq) + 1, at=self._clock.now(), ctx=ctx, prev_hash=head.hash
        )
        await self.conn.execute(insert(t.audit_events).values(**_record_values(record)))
        await self.conn.execute(
            update(t.audit_head).where(t.audit_head.c.id == 1).values(seq=record.seq, hash=record.hash)
        )
        return record


def _record_values(record: AuditRecord) -> dict[str, Any]:
    return {c: getattr(record, c) for c in AuditRecord.__slots__}  # type: ignore[attr-defined]


class SqlTransaction:
    def __init__(self, conn: AsyncConnection, chain: AuditChain, clock: Clock) -> None:
        self.agencies = SqlAgencies(conn)
        self.users = SqlUsers(conn)
        self.sessions = SqlSessions(conn)
        self.flows = SqlFlows(conn)
        self.throttles = SqlThrottles(conn)
        self.audit = SqlAudit(conn, chain, clock)


class SqlAuditReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def records(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[AuditRecord]:
        stmt = select(t.audit_events).order_by(t.audit_events.c.seq)
        if since is not None:
            stmt = stmt.where(t.audit_events.c.occurred_at >= isoformat(since))
        if until is not None:
            stmt = stmt.where(t.audit_events.c.occurred_at < isoformat(until))
        # Streamed with a server-side cursor so an export of years of events stays in constant memory.
        async with self._engine.connect() as conn:
            result = await conn.stream(stmt.execution_options(yield_per=500))
            async for row in result.mappings():
                yield _audit(row)

    async def head(self) -> tuple[int, str]:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(t.audit_head.c.seq, t.audit_head.c.hash))).one()
        return int(row.seq), str(row.hash)


class SqlStore:
    def __init__(self, engine: AsyncEngine, chain: AuditChain, clock: Clock) -> None:
        self.engine = engine
        self._chain = chain
        self._clock = clock
        self._reader = SqlAuditReader(engine)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlTransaction]:
        async with self.engine.begin() as conn:
            yield SqlTransaction(conn, self._chain, self._clock)

    @property
    def audit_reader(self) -> SqlAuditReader:
        return self._reader

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()
