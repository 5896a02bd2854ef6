"""The SQL implementation of the core's storage Protocols, for PostgreSQL and SQLite alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from functools import cached_property
from typing import Any

from alacop.core.accounts import Agency, Role, User, UserStatus
from alacop.core.audit import GENESIS_HASH, AuditChain, AuditEvent, AuditRecord
from alacop.core.clock import Clock, isoformat, parse_iso
from alacop.core.context import RequestContext
from alacop.core.credentials import AuthMethod, MethodKind, RecoveryCode
from alacop.core.errors import Conflict
from alacop.core.oidc import AuthorizationCode, Client, ClientType, IssuedToken, SigningKey, TokenFormat
from alacop.core.ports import AuditQuery, FlowRecord, Throttle, UserQuery
from alacop.core.registration import ActivationLink, Application, Registration, RegistrationStatus
from alacop.core.saml import AssertionConsumer, IdpCertificate, NameIdFormat, PendingRequest, ServiceProvider
from alacop.core.sessions import Session
from alacop.store.db import Connection, Database, Row, open_database

_AUDIT_FIELDS = (
    "seq",
    "occurred_at",
    "type",
    "outcome",
    "reason",
    "actor_id",
    "subject_id",
    "subject_name",
    "agency_id",
    "source_ip",
    "user_agent",
    "request_id",
    "details",
    "prev_hash",
    "hash",
)
_USER_FIELDS = (
    "id, username, email, name, agency_id, role, status, password_hash, password_changed_at, "
    "must_change_password, created_at, last_login_at, disabled_at, meta, training_date"
)


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with its own % and _ taken literally."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _in(column: str, values: Sequence[str], start: int) -> tuple[str, list[str]]:
    """`column IN ($n, ...)` for a non-empty list; an empty one matches nothing."""
    if not values:
        return "1 = 0", []
    marks = ", ".join(f"${start + i}" for i in range(len(values)))
    return f"{column} IN ({marks})", list(values)


class _Repo:
    def __init__(self, db: Database, conn: Connection) -> None:
        self.db = db
        self.conn = conn

    async def _insert(self, sql: str, *args: Any, conflict: str, detail: str) -> None:
        try:
            await self.conn.execute(sql, *args)
        except self.db.integrity_errors as exc:
            raise Conflict(detail, code=conflict) from exc


_AGENCY_COLUMNS = ("id", "ori", "name", "email_domains", "created_at")


def _agency_row(row: Row, dt: Callable[[Any], datetime | None], prefix: str = "") -> Agency:
    return Agency(
        id=row[prefix + "id"],
        ori=row[prefix + "ori"],
        name=row[prefix + "name"],
        email_domains=tuple(json.loads(row[prefix + "email_domains"])),
        created_at=dt(row[prefix + "created_at"]),  # type: ignore[arg-type]
    )


class SqlAgencies(_Repo):
    def _agency(self, row: Row) -> Agency:
        return _agency_row(row, self.conn.dt)

    async def add(self, agency: Agency) -> None:
        await self._insert(
            "INSERT INTO agencies (id, ori, name, email_domains, created_at) VALUES ($1, $2, $3, $4, $5)",
            agency.id,
            agency.ori,
            agency.name,
            json.dumps(list(agency.email_domains)),
            self.conn.ts(agency.created_at),
            conflict="agency_exists",
            detail="an agency with that ORI exists",
        )

    async def get(self, agency_id: str) -> Agency | None:
        row = await self.conn.fetchrow("SELECT * FROM agencies WHERE id = $1", agency_id)
        return self._agency(row) if row else None

    async def by_ori(self, ori: str) -> Agency | None:
        row = await self.conn.fetchrow("SELECT * FROM agencies WHERE ori = $1", ori)
        return self._agency(row) if row else None

    async def list(self) -> Sequence[Agency]:
        return [self._agency(r) for r in await self.conn.fetch("SELECT * FROM agencies ORDER BY name, ori")]

    async def update(self, agency: Agency) -> None:
        await self.conn.execute(
            "UPDATE agencies SET ori = $2, name = $3, email_domains = $4 WHERE id = $1",
            agency.id,
            agency.ori,
            agency.name,
            json.dumps(list(agency.email_domains)),
        )

    async def coordinators(self, agency_id: str) -> Sequence[str]:
        rows = await self.conn.fetch(
            "SELECT user_id FROM coordinator_agencies WHERE agency_id = $1 ORDER BY user_id", agency_id
        )
        return [r["user_id"] for r in rows]

    async def set_coordinators(self, agency_id: str, user_ids: Sequence[str]) -> None:
        await self.conn.execute("DELETE FROM coordinator_agencies WHERE agency_id = $1", agency_id)
        if user_ids:
            await self.conn.executemany(
                "INSERT INTO coordinator_agencies (user_id, agency_id) VALUES ($1, $2)",
                [(u, agency_id) for u in sorted(set(user_ids))],
            )

    async def coordinated_by(self, user_id: str) -> Sequence[str]:
        rows = await self.conn.fetch(
            "SELECT agency_id FROM coordinator_agencies WHERE user_id = $1 ORDER BY agency_id", user_id
        )
        return [r["agency_id"] for r in rows]


def _user_row(row: Row, dt: Callable[[Any], datetime | None], prefix: str = "") -> User:
    def col(name: str) -> Any:
        return row[prefix + name]

    return User(
        id=col("id"),
        username=col("username"),
        email=col("email"),
        name=col("name"),
        agency_id=col("agency_id"),
        role=Role(col("role")),
        status=UserStatus(col("status")),
        password_hash=col("password_hash"),
        password_changed_at=dt(col("password_changed_at")),
        must_change_password=bool(col("must_change_password")),
        created_at=dt(col("created_at")),  # type: ignore[arg-type]
        last_login_at=dt(col("last_login_at")),
        disabled_at=dt(col("disabled_at")),
        meta=json.loads(col("meta") or "{}"),
        training_date=date.fromisoformat(col("training_date")) if col("training_date") else None,
    )


_USER_COLUMNS = tuple(c.strip() for c in _USER_FIELDS.split(","))
_USER_WITH_AGENCY = (
    "SELECT "
    + ", ".join(f"u.{c}" for c in _USER_COLUMNS)
    + ", "
    + ", ".join(f"a.{c} AS agency__{c}" for c in _AGENCY_COLUMNS)
    + " FROM users u LEFT JOIN agencies a ON a.id = u.agency_id WHERE u.id = $1"
)


class SqlUsers(_Repo):
    def _user(self, row: Row) -> User:
        return _user_row(row, self.conn.dt)

    def _values(self, user: User) -> tuple[Any, ...]:
        ts = self.conn.ts
        return (
            user.id,
            user.username,
            user.email,
            user.name,
            user.agency_id,
            str(user.role),
            str(user.status),
            user.password_hash,
            ts(user.password_changed_at),
            user.must_change_password,
            ts(user.created_at),
            ts(user.last_login_at),
            ts(user.disabled_at),
            json.dumps(user.meta, sort_keys=True),
            user.training_date.isoformat() if user.training_date else None,
        )

    async def add(self, user: User) -> None:
        await self._insert(
            f"INSERT INTO users ({_USER_FIELDS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            *self._values(user),
            conflict="username_taken",
            detail="that username is taken",
        )

    async def get(self, user_id: str, *, for_update: bool = False) -> User | None:
        lock = self.conn.for_update if for_update else ""
        row = await self.conn.fetchrow(f"SELECT {_USER_FIELDS} FROM users WHERE id = $1{lock}", user_id)
        return self._user(row) if row else None

    async def get_with_agency(self, user_id: str) -> tuple[User, Agency | None] | None:
        # One round trip for the token endpoint and userinfo, which need both for every token.
        row = await self.conn.fetchrow(_USER_WITH_AGENCY, user_id)
        if row is None:
            return None
        agency = _agency_row(row, self.conn.dt, "agency__") if row["agency__id"] is not None else None
        return self._user(row), agency

    async def by_username(self, username: str) -> User | None:
        row = await self.conn.fetchrow(f"SELECT {_USER_FIELDS} FROM users WHERE username = $1", username)
        return self._user(row) if row else None

    async def list(self, agency_id: str | None = None) -> Sequence[User]:
        if agency_id is None:
            rows = await self.conn.fetch(f"SELECT {_USER_FIELDS} FROM users ORDER BY username")
        else:
            rows = await self.conn.fetch(
                f"SELECT {_USER_FIELDS} FROM users WHERE agency_id = $1 ORDER BY username", agency_id
            )
        return [self._user(r) for r in rows]

    async def update(self, user: User) -> None:
        await self.conn.execute(
            "UPDATE users SET username = $2, email = $3, name = $4, agency_id = $5, role = $6, status = $7, "
            "password_hash = $8, password_changed_at = $9, must_change_password = $10, created_at = $11, "
            "last_login_at = $12, disabled_at = $13, meta = $14, training_date = $15 WHERE id = $1",
            *self._values(user),
        )

    async def record_sign_in(self, user_id: str, at: datetime) -> bool:
        count = await self.conn.execute(
            "UPDATE users SET last_login_at = $2 WHERE id = $1 AND status = 'active'", user_id, self.conn.ts(at)
        )
        return count > 0

    async def set_password(
        self, user_id: str, password_hash: str, changed_at: datetime, *, first: bool = False
    ) -> bool:
        sql = (
            "UPDATE users SET password_hash = $2, password_changed_at = $3, must_change_password = $4 "
            "WHERE id = $1 AND status = 'active'"
        )
        if first:
            sql += " AND password_hash IS NULL"
        count = await self.conn.execute(sql, user_id, password_hash, self.conn.ts(changed_at), False)
        return count > 0

    async def rehash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        count = await self.conn.execute(
            "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2", user_id, old_hash, new_hash
        )
        return count > 0

    async def by_email(self, email: str) -> Sequence[User]:
        rows = await self.conn.fetch(
            f"SELECT {_USER_FIELDS} FROM users WHERE lower(email) = $1 ORDER BY username", email.lower()
        )
        return [self._user(r) for r in rows]

    async def search(self, query: UserQuery) -> Sequence[User]:
        where: list[str] = []
        args: list[Any] = []
        if query.text.strip():
            n = len(args) + 1
            where.append(
                f"(lower(username) LIKE ${n} ESCAPE '\\' OR lower(name) LIKE ${n} ESCAPE '\\' "
                f"OR lower(email) LIKE ${n} ESCAPE '\\')"
            )
            args.append(_like(query.text.strip()))
        if query.agency_ids is not None:
            clause, values = _in("agency_id", query.agency_ids, len(args) + 1)
            where.append(clause)
            args.extend(values)
        if query.status:
            where.append(f"status = ${len(args) + 1}")
            args.append(query.status)
        if query.role:
            where.append(f"role = ${len(args) + 1}")
            args.append(query.role)
        sql = f"SELECT {_USER_FIELDS} FROM users"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self.conn.fetch(sql + f" ORDER BY username LIMIT {max(1, min(int(query.limit), 1000))}", *args)
        return [self._user(r) for r in rows]

    async def usernames_starting(self, prefix: str) -> set[str]:
        rows = await self.conn.fetch("SELECT username FROM users WHERE username LIKE $1 ESCAPE '\\'", _like(prefix)[1:])
        return {r["username"] for r in rows}

    async def delete(self, user_id: str, at: datetime) -> None:
        row = await self.conn.fetchrow("SELECT username FROM users WHERE id = $1", user_id)
        if row is None:
            return
        for table in ("sessions", "auth_methods", "recovery_codes", "activation_links", "coordinator_agencies"):
            await self.conn.execute(f"DELETE FROM {table} WHERE user_id = $1", user_id)
        await self.conn.execute("DELETE FROM users WHERE id = $1", user_id)
        await self.conn.execute("DELETE FROM retired_usernames WHERE username = $1", row["username"])
        await self.conn.execute(
            "INSERT INTO retired_usernames (username, retired_at) VALUES ($1, $2)", row["username"], self.conn.ts(at)
        )

    async def retired_since(self, prefix: str, since: datetime) -> set[str]:
        rows = await self.conn.fetch(
            "SELECT username FROM retired_usernames WHERE username LIKE $1 ESCAPE '\\' AND retired_at >= $2",
            _like(prefix)[1:],
            self.conn.ts(since),
        )
        return {r["username"] for r in rows}


_REGISTRATION_FIELDS = (
    "id, agency_id, email, application, status, created_at, expires_at, status_token_hash, decided_at, "
    "decided_by, decision_reason, user_id"
)


class SqlRegistrations(_Repo):
    def _registration(self, row: Row) -> Registration:
        dt = self.conn.dt
        return Registration(
            id=row["id"],
            application=Application.from_dict(json.loads(row["application"])),
            status=RegistrationStatus(row["status"]),
            created_at=dt(row["created_at"]),  # type: ignore[arg-type]
            expires_at=dt(row["expires_at"]),  # type: ignore[arg-type]
            status_token_hash=row["status_token_hash"],
            decided_at=dt(row["decided_at"]),
            decided_by=row["decided_by"],
            decision_reason=row["decision_reason"],
            user_id=row["user_id"],
        )

    async def add(self, registration: Registration) -> None:
        r = registration
        await self._insert(
            f"INSERT INTO registrations ({_REGISTRATION_FIELDS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            r.id,
            r.agency_id,
            r.application.email,
            json.dumps(r.application.as_dict(), sort_keys=True),
            str(r.status),
            self.conn.ts(r.created_at),
            self.conn.ts(r.expires_at),
            r.status_token_hash,
            self.conn.ts(r.decided_at),
            r.decided_by,
            r.decision_reason,
            r.user_id,
            conflict="registration_exists",
            detail="that registration exists",
        )

    async def get(self, registration_id: str) -> Registration | None:
        row = await self.conn.fetchrow(
            f"SELECT {_REGISTRATION_FIELDS} FROM registrations WHERE id = $1", registration_id
        )
        return self._registration(row) if row else None

    async def by_status_token(self, token_hash: str) -> Registration | None:
        row = await self.conn.fetchrow(
            f"SELECT {_REGISTRATION_FIELDS} FROM registrations WHERE status_token_hash = $1", token_hash
        )
        return self._registration(row) if row else None

    async def pending_for_email(self, email: str) -> Registration | None:
        row = await self.conn.fetchrow(
            f"SELECT {_REGISTRATION_FIELDS} FROM registrations WHERE email = $1 AND status = 'pending'",
            email.lower(),
        )
        return self._registration(row) if row else None

    async def list(
        self, *, status: RegistrationStatus | None = None, agency_ids: tuple[str, ...] | None = None
    ) -> Sequence[Registration]:
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            where.append("status = $1")
            args.append(str(status))
        if agency_ids is not None:
            clause, values = _in("agency_id", agency_ids, len(args) + 1)
            where.append(clause)
            args.extend(values)
        sql = f"SELECT {_REGISTRATION_FIELDS} FROM registrations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [self._registration(r) for r in await self.conn.fetch(sql + " ORDER BY created_at, id", *args)]

    async def stale(self, now: datetime) -> Sequence[Registration]:
        rows = await self.conn.fetch(
            f"SELECT {_REGISTRATION_FIELDS} FROM registrations WHERE status = 'pending' AND expires_at <= $1 "
            "ORDER BY created_at",
            self.conn.ts(now),
        )
        return [self._registration(r) for r in rows]

    async def decide(self, registration: Registration) -> bool:
        r = registration
        count = await self.conn.execute(
            "UPDATE registrations SET status = $2, decided_at = $3, decided_by = $4, decision_reason = $5, "
            "user_id = $6 WHERE id = $1 AND status = 'pending'",
            r.id,
            str(r.status),
            self.conn.ts(r.decided_at),
            r.decided_by,
            r.decision_reason,
            r.user_id,
        )
        return count > 0


class SqlActivations(_Repo):
    async def replace(self, link: ActivationLink) -> None:
        await self.conn.execute("DELETE FROM activation_links WHERE user_id = $1 AND used_at IS NULL", link.user_id)
        await self.conn.execute(
            "INSERT INTO activation_links (token_hash, user_id, created_at, expires_at, used_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            link.token_hash,
            link.user_id,
            self.conn.ts(link.created_at),
            self.conn.ts(link.expires_at),
            self.conn.ts(link.used_at),
        )

    async def get(self, token_hash: str) -> ActivationLink | None:
        row = await self.conn.fetchrow("SELECT * FROM activation_links WHERE token_hash = $1", token_hash)
        if row is None:
            return None
        dt = self.conn.dt
        return ActivationLink(
            token_hash=row["token_hash"],
            user_id=row["user_id"],
            created_at=dt(row["created_at"]),  # type: ignore[arg-type]
            expires_at=dt(row["expires_at"]),  # type: ignore[arg-type]
            used_at=dt(row["used_at"]),
        )

    async def spend(self, token_hash: str, at: datetime) -> bool:
        count = await self.conn.execute(
            "UPDATE activation_links SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
            token_hash,
            self.conn.ts(at),
        )
        return count > 0


class SqlSessions(_Repo):
    def _session(self, row: Row) -> Session:
        dt = self.conn.dt
        return Session(
            id_hash=row["id_hash"],
            user_id=row["user_id"],
            created_at=dt(row["created_at"]),  # type: ignore[arg-type]
            last_seen_at=dt(row["last_seen_at"]),  # type: ignore[arg-type]
            expires_at=dt(row["expires_at"]),  # type: ignore[arg-type]
            auth_time=dt(row["auth_time"]),  # type: ignore[arg-type]
            aal=row["aal"],
            amr=tuple(json.loads(row["amr"])),
            source_ip=row["source_ip"],
            user_agent=row["user_agent"],
            ended_at=dt(row["ended_at"]),
            end_reason=row["end_reason"],
            second_factor=row["second_factor"],
        )

    async def add(self, session: Session) -> None:
        ts = self.conn.ts
        await self.conn.execute(
            "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at, auth_time, aal, "
            "amr, source_ip, user_agent, second_factor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            session.id_hash,
            session.user_id,
            ts(session.created_at),
            ts(session.last_seen_at),
            ts(session.expires_at),
            ts(session.auth_time),
            session.aal,
            json.dumps(list(session.amr)),
            session.source_ip,
            session.user_agent,
            session.second_factor,
        )

    async def get(self, id_hash: str, *, for_update: bool = False) -> Session | None:
        lock = self.conn.for_update if for_update else ""
        row = await self.conn.fetchrow(f"SELECT * FROM sessions WHERE id_hash = $1{lock}", id_hash)
        return self._session(row) if row else None

    async def touch(self, id_hash: str, at: datetime) -> None:
        await self.conn.execute("UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1", id_hash, self.conn.ts(at))

    async def end(self, id_hash: str, at: datetime, reason: str) -> bool:
        count = await self.conn.execute(
            "UPDATE sessions SET ended_at = $2, end_reason = $3 WHERE id_hash = $1 AND ended_at IS NULL",
            id_hash,
            self.conn.ts(at),
            reason,
        )
        return count > 0

    async def end_all_for_user(self, user_id: str, at: datetime, reason: str) -> int:
        # In the same transaction: single sign-on tokens go with the sessions (see the Protocol), and
        # those a portal session was issued leave a notice for back-channel logout (BackChannel.sweep).
        await self.conn.execute(
            "UPDATE oauth_tokens SET revoked_at = $2, logout_pending = (session_hash IS NOT NULL) "
            "WHERE user_id = $1 AND revoked_at IS NULL",
            user_id,
            self.conn.ts(at),
        )
        return await self.conn.execute(
            "UPDATE sessions SET ended_at = $2, end_reason = $3 WHERE user_id = $1 AND ended_at IS NULL",
            user_id,
            self.conn.ts(at),
            reason,
        )

    async def reauthenticated(self, id_hash: str, at: datetime) -> None:
        await self.conn.execute("UPDATE sessions SET auth_time = $2 WHERE id_hash = $1", id_hash, self.conn.ts(at))

    async def active_for_user(self, user_id: str) -> Sequence[Session]:
        rows = await self.conn.fetch(
            "SELECT * FROM sessions WHERE user_id = $1 AND ended_at IS NULL ORDER BY created_at DESC", user_id
        )
        return [self._session(r) for r in rows]


class SqlFlows(_Repo):
    def _flow(self, row: Row) -> FlowRecord:
        return FlowRecord(
            id=row["id"],
            kind=row["kind"],
            state=row["state"],
            issued_at=self.conn.dt(row["issued_at"]),  # type: ignore[arg-type]
            expires_at=self.conn.dt(row["expires_at"]),  # type: ignore[arg-type]
            csrf_token=row["csrf_token"],
            binding=row["binding"],
            return_to=row["return_to"],
            payload=row["payload"],
        )

    def _values(self, flow: FlowRecord) -> tuple[Any, ...]:
        return (
            flow.id,
            flow.kind,
            flow.state,
            self.conn.ts(flow.issued_at),
            self.conn.ts(flow.expires_at),
            flow.csrf_token,
            flow.binding,
            flow.return_to,
            flow.payload,
        )

    async def add(self, flow: FlowRecord) -> None:
        await self.conn.execute(
            "INSERT INTO flows (id, kind, state, issued_at, expires_at, csrf_token, binding, return_to, "
            "payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            *self._values(flow),
        )

    async def get(self, flow_id: str) -> FlowRecord | None:
        row = await self.conn.fetchrow("SELECT * FROM flows WHERE id = $1", flow_id)
        return self._flow(row) if row else None

    async def save(self, flow: FlowRecord) -> None:
        await self.conn.execute(
            "UPDATE flows SET kind = $2, state = $3, issued_at = $4, expires_at = $5, csrf_token = $6, "
            "binding = $7, return_to = $8, payload = $9 WHERE id = $1",
            *self._values(flow),
        )

    async def delete(self, flow_id: str) -> bool:
        return await self.conn.execute("DELETE FROM flows WHERE id = $1", flow_id) > 0

    async def purge_expired(self, before: datetime) -> int:
        return await self.conn.execute("DELETE FROM flows WHERE expires_at < $1", self.conn.ts(before))


class SqlThrottles(_Repo):
    async def get(self, key: str, *, for_update: bool = False) -> Throttle | None:
        if for_update:
            # An empty row first, so there is always a row to lock: parallel wrong passwords
            # are counted one after another instead of overwriting each other.
            await self.conn.execute(
                "INSERT INTO login_throttles (key, failure_times, locked_at) VALUES ($1, '[]', NULL) "
                "ON CONFLICT (key) DO NOTHING",
                key,
            )
        row = await self.conn.fetchrow(
            "SELECT * FROM login_throttles WHERE key = $1" + (self.conn.for_update if for_update else ""), key
        )
        if row is None or (row["failure_times"] == "[]" and row["locked_at"] is None):
            return None
        return Throttle(
            key=row["key"],
            failure_times=tuple(parse_iso(t) for t in json.loads(row["failure_times"])),
            locked_at=self.conn.dt(row["locked_at"]),
        )

    async def put(self, throttle: Throttle) -> None:
        await self.conn.execute(
            "INSERT INTO login_throttles (key, failure_times, locked_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (key) DO UPDATE SET failure_times = excluded.failure_times, "
            "locked_at = excluded.locked_at",
            throttle.key,
            json.dumps([isoformat(t) for t in throttle.failure_times]),
            self.conn.ts(throttle.locked_at),
        )

    async def clear(self, key: str) -> None:
        await self.conn.execute("DELETE FROM login_throttles WHERE key = $1", key)


class SqlMethods(_Repo):
    def _method(self, row: Row) -> AuthMethod:
        return AuthMethod(
            id=row["id"],
            user_id=row["user_id"],
            kind=MethodKind(row["kind"]),
            name=row["name"],
            created_at=self.conn.dt(row["created_at"]),  # type: ignore[arg-type]
            last_used_at=self.conn.dt(row["last_used_at"]),
            totp_secret=row["totp_secret"],
            totp_last_step=int(row["totp_last_step"]),
            credential_id=row["credential_id"],
            public_key=row["public_key"],
            sign_count=int(row["sign_count"]),
            transports=tuple(json.loads(row["transports"])),
            synced=bool(row["synced"]),
            discoverable=bool(row["discoverable"]),
        )

    async def add(self, method: AuthMethod) -> None:
        await self._insert(
            "INSERT INTO auth_methods (id, user_id, kind, name, created_at, last_used_at, totp_secret, "
            "totp_last_step, credential_id, public_key, sign_count, transports, synced, discoverable) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            method.id,
            method.user_id,
            str(method.kind),
            method.name,
            self.conn.ts(method.created_at),
            self.conn.ts(method.last_used_at),
            method.totp_secret,
            method.totp_last_step,
            method.credential_id,
            method.public_key,
            method.sign_count,
            json.dumps(list(method.transports)),
            method.synced,
            method.discoverable,
            conflict="credential_exists",
            detail="that security key is already registered",
        )

    async def for_user(self, user_id: str) -> Sequence[AuthMethod]:
        rows = await self.conn.fetch("SELECT * FROM auth_methods WHERE user_id = $1 ORDER BY created_at, id", user_id)
        return [self._method(r) for r in rows]

    async def get(self, method_id: str) -> AuthMethod | None:
        row = await self.conn.fetchrow("SELECT * FROM auth_methods WHERE id = $1", method_id)
        return self._method(row) if row else None

    async def by_credential_id(self, credential_id: str) -> AuthMethod | None:
        row = await self.conn.fetchrow("SELECT * FROM auth_methods WHERE credential_id = $1", credential_id)
        return self._method(row) if row else None

    async def rename(self, method_id: str, name: str) -> None:
        await self.conn.execute("UPDATE auth_methods SET name = $2 WHERE id = $1", method_id, name)

    async def delete(self, method_id: str) -> None:
        await self.conn.execute("DELETE FROM auth_methods WHERE id = $1", method_id)

    async def delete_all_for_user(self, user_id: str) -> int:
        return await self.conn.execute("DELETE FROM auth_methods WHERE user_id = $1", user_id)

    async def accept_totp_step(self, method_id: str, step: int, at: datetime) -> bool:
        count = await self.conn.execute(
            "UPDATE auth_methods SET totp_last_step = $2, last_used_at = $3 WHERE id = $1 AND totp_last_step < $2",
            method_id,
            step,
            self.conn.ts(at),
        )
        return count > 0

    async def used_webauthn(self, method_id: str, sign_count: int, at: datetime) -> None:
        await self.conn.execute(
            "UPDATE auth_methods SET sign_count = $2, last_used_at = $3 WHERE id = $1",
            method_id,
            sign_count,
            self.conn.ts(at),
        )

    async def reseal(self, method_id: str, totp_secret: str) -> None:
        await self.conn.execute("UPDATE auth_methods SET totp_secret = $2 WHERE id = $1", method_id, totp_secret)


class SqlRecoveryCodes(_Repo):
    async def replace_set(self, user_id: str, codes: Sequence[RecoveryCode]) -> int:
        voided = await self.conn.execute("DELETE FROM recovery_codes WHERE user_id = $1", user_id)
        await self.conn.executemany(
            "INSERT INTO recovery_codes (id, user_id, code_hash, salt, created_at) VALUES ($1, $2, $3, $4, $5)",
            [(c.id, c.user_id, c.code_hash, c.salt, self.conn.ts(c.created_at)) for c in codes],
        )
        return voided

    async def unused_for_user(self, user_id: str) -> Sequence[RecoveryCode]:
        rows = await self.conn.fetch(
            "SELECT * FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL ORDER BY id", user_id
        )
        return [
            RecoveryCode(
                id=r["id"],
                user_id=r["user_id"],
                code_hash=r["code_hash"],
                salt=r["salt"],
                created_at=self.conn.dt(r["created_at"]),  # type: ignore[arg-type]
            )
            for r in rows
        ]

    async def spend(self, code_id: str, at: datetime) -> bool:
        count = await self.conn.execute(
            "UPDATE recovery_codes SET used_at = $2 WHERE id = $1 AND used_at IS NULL",
            code_id,
            self.conn.ts(at),
        )
        return count > 0


_CLIENT_FIELDS = (
    "client_id, name, client_type, secret_hash, redirect_uris, post_logout_redirect_uris, scopes, require_aal2, "
    "logo_url, initiate_login_uri, backchannel_logout_uri, access_token_format, access_token_seconds, "
    "refresh_token_seconds, agency_ids, created_at, disabled_at, secret_rotated_at"
)


class SqlClients(_Repo):
    def _client(self, row: Row) -> Client:
        dt = self.conn.dt
        return Client(
            client_id=row["client_id"],
            name=row["name"],
            client_type=ClientType(row["client_type"]),
            secret_hash=row["secret_hash"],
            redirect_uris=tuple(json.loads(row["redirect_uris"])),
            post_logout_redirect_uris=tuple(json.loads(row["post_logout_redirect_uris"])),
            scopes=tuple(json.loads(row["scopes"])),
            require_aal2=bool(row["require_aal2"]),
            logo_url=row["logo_url"],
            initiate_login_uri=row["initiate_login_uri"],
            backchannel_logout_uri=row["backchannel_logout_uri"],
            access_token_format=TokenFormat(row["access_token_format"]),
            access_token_seconds=int(row["access_token_seconds"]),
            refresh_token_seconds=int(row["refresh_token_seconds"]),
            agency_ids=tuple(json.loads(row["agency_ids"])),
            created_at=dt(row["created_at"]),  # type: ignore[arg-type]
            disabled_at=dt(row["disabled_at"]),
            secret_rotated_at=dt(row["secret_rotated_at"]),
        )

    def _values(self, c: Client) -> tuple[Any, ...]:
        ts = self.conn.ts
        return (
            c.client_id,
            c.name,
            str(c.client_type),
            c.secret_hash,
            json.dumps(list(c.redirect_uris)),
            json.dumps(list(c.post_logout_redirect_uris)),
            json.dumps(list(c.scopes)),
            c.require_aal2,
            c.logo_url,
            c.initiate_login_uri,
            c.backchannel_logout_uri,
            str(c.access_token_format),
            c.access_token_seconds,
            c.refresh_token_seconds,
            json.dumps(list(c.agency_ids)),
            ts(c.created_at),
            ts(c.disabled_at),
            ts(c.secret_rotated_at),
        )

    async def add(self, client: Client) -> None:
        marks = ", ".join(f"${i}" for i in range(1, 19))
        await self._insert(
            f"INSERT INTO oidc_clients ({_CLIENT_FIELDS}) VALUES ({marks})",
            *self._values(client),
            conflict="client_exists",
            detail="that client id exists",
        )

    async def get(self, client_id: str) -> Client | None:
        row = await self.conn.fetchrow(f"SELECT {_CLIENT_FIELDS} FROM oidc_clients WHERE client_id = $1", client_id)
        return self._client(row) if row else None

    async def list(self) -> Sequence[Client]:
        rows = await self.conn.fetch(f"SELECT {_CLIENT_FIELDS} FROM oidc_clients ORDER BY name, client_id")
        return [self._client(r) for r in rows]

    async def update(self, client: Client) -> None:
        sets = ", ".join(f"{name.strip()} = ${i}" for i, name in enumerate(_CLIENT_FIELDS.split(","), 1) if i > 1)
        await self.conn.execute(f"UPDATE oidc_clients SET {sets} WHERE client_id = $1", *self._values(client))


class SqlSigningKeys(_Repo):
    async def add(self, key: SigningKey) -> None:
        await self.conn.execute(
            "INSERT INTO signing_keys (kid, alg, private_sealed, public_jwk, created_at, retire_after) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            key.kid,
            key.alg,
            key.private_sealed,
            key.public_jwk,
            self.conn.ts(key.created_at),
            self.conn.ts(key.retire_after),
        )

    async def list(self) -> Sequence[SigningKey]:
        rows = await self.conn.fetch("SELECT * FROM signing_keys ORDER BY created_at DESC, kid")
        dt = self.conn.dt
        return [
            SigningKey(
                kid=r["kid"],
                alg=r["alg"],
                private_sealed=r["private_sealed"],
                public_jwk=r["public_jwk"],
                created_at=dt(r["created_at"]),  # type: ignore[arg-type]
                retire_after=dt(r["retire_after"]),
            )
            for r in rows
        ]

    async def supersede(self, alg: str, retire_after: datetime, keep: str) -> int:
        return await self.conn.execute(
            "UPDATE signing_keys SET retire_after = $2 WHERE alg = $1 AND kid <> $3 AND retire_after IS NULL",
            alg,
            self.conn.ts(retire_after),
            keep,
        )

    async def reseal(self, kid: str, private_sealed: str) -> None:
        await self.conn.execute("UPDATE signing_keys SET private_sealed = $2 WHERE kid = $1", kid, private_sealed)


_SP_FIELDS = (
    "id, entity_id, name, acs, certificates, authn_requests_signed, nameid_format, nameid_salt, attributes, "
    "require_aal2, idp_initiated, default_relay_state, logo_url, start_url, agency_ids, created_at, disabled_at"
)


class SqlServiceProviders(_Repo):
    def _sp(self, row: Row) -> ServiceProvider:
        dt = self.conn.dt
        return ServiceProvider(
            id=row["id"],
            entity_id=row["entity_id"],
            name=row["name"],
            acs=tuple(
                AssertionConsumer(a["url"], int(a["index"]), bool(a["is_default"])) for a in json.loads(row["acs"])
            ),
            certificates=tuple(json.loads(row["certificates"])),
            authn_requests_signed=bool(row["authn_requests_signed"]),
            nameid_format=NameIdFormat(row["nameid_format"]),
            nameid_salt=row["nameid_salt"],
            attributes=tuple(json.loads(row["attributes"])),
            require_aal2=bool(row["require_aal2"]),
            idp_initiated=bool(row["idp_initiated"]),
            default_relay_state=row["default_relay_state"],
            logo_url=row["logo_url"],
            start_url=row["start_url"],
            agency_ids=tuple(json.loads(row["agency_ids"])),
            created_at=dt(row["created_at"]),  # type: ignore[arg-type]
            disabled_at=dt(row["disabled_at"]),
        )

    def _values(self, sp: ServiceProvider) -> tuple[Any, ...]:
        ts = self.conn.ts
        return (
            sp.id,
            sp.entity_id,
            sp.name,
            json.dumps([{"url": a.url, "index": a.index, "is_default": a.is_default} for a in sp.acs]),
            json.dumps(list(sp.certificates)),
            sp.authn_requests_signed,
            str(sp.nameid_format),
            sp.nameid_salt,
            json.dumps(list(sp.attributes)),
            sp.require_aal2,
            sp.idp_initiated,
            sp.default_relay_state,
            sp.logo_url,
            sp.start_url,
            json.dumps(list(sp.agency_ids)),
            ts(sp.created_at),
            ts(sp.disabled_at),
        )

    async def add(self, sp: ServiceProvider) -> None:
        marks = ", ".join(f"${i}" for i in range(1, 18))
        await self._insert(
            f"INSERT INTO saml_sps ({_SP_FIELDS}) VALUES ({marks})",
            *self._values(sp),
            conflict="sp_exists",
            detail="an application with that entity ID is registered",
        )

    async def get(self, sp_id: str) -> ServiceProvider | None:
        row = await self.conn.fetchrow(f"SELECT {_SP_FIELDS} FROM saml_sps WHERE id = $1", sp_id)
        return self._sp(row) if row else None

    async def by_entity_id(self, entity_id: str) -> ServiceProvider | None:
        row = await self.conn.fetchrow(f"SELECT {_SP_FIELDS} FROM saml_sps WHERE entity_id = $1", entity_id)
        return self._sp(row) if row else None

    async def list(self) -> Sequence[ServiceProvider]:
        rows = await self.conn.fetch(f"SELECT {_SP_FIELDS} FROM saml_sps ORDER BY name, id")
        return [self._sp(r) for r in rows]

    async def update(self, sp: ServiceProvider) -> None:
        sets = ", ".join(f"{name.strip()} = ${i}" for i, name in enumerate(_SP_FIELDS.split(","), 1) if i > 1)
        await self.conn.execute(f"UPDATE saml_sps SET {sets} WHERE id = $1", *self._values(sp))


class SqlIdpCertificates(_Repo):
    async def add(self, cert: IdpCertificate) -> None:
        ts = self.conn.ts
        await self.conn.execute(
            "INSERT INTO saml_certs (id, cert_pem, private_sealed, created_at, active_from, retire_after) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            cert.id,
            cert.cert_pem,
            cert.private_sealed,
            ts(cert.created_at),
            ts(cert.active_from),
            ts(cert.retire_after),
        )

    async def list(self) -> Sequence[IdpCertificate]:
        rows = await self.conn.fetch("SELECT * FROM saml_certs ORDER BY created_at DESC, id")
        dt = self.conn.dt
        return [
            IdpCertificate(
                id=r["id"],
                cert_pem=r["cert_pem"],
                private_sealed=r["private_sealed"],
                created_at=dt(r["created_at"]),  # type: ignore[arg-type]
                active_from=dt(r["active_from"]),  # type: ignore[arg-type]
                retire_after=dt(r["retire_after"]),
            )
            for r in rows
        ]

    async def supersede(self, retire_after: datetime, keep: str) -> int:
        return await self.conn.execute(
            "UPDATE saml_certs SET retire_after = $1 WHERE id <> $2 AND (retire_after IS NULL OR retire_after > $1)",
            self.conn.ts(retire_after),
            keep,
        )

    async def reseal(self, cert_id: str, private_sealed: str) -> None:
        await self.conn.execute("UPDATE saml_certs SET private_sealed = $2 WHERE id = $1", cert_id, private_sealed)


class SqlPendingRequests(_Repo):
    def _pending(self, row: Row) -> PendingRequest:
        dt = self.conn.dt
        return PendingRequest(
            id=row["id"],
            sp_id=row["sp_id"],
            request_id=row["request_id"],
            acs_url=row["acs_url"],
            binding=row["binding"],
            relay_state=row["relay_state"],
            force_authn=bool(row["force_authn"]),
            is_passive=bool(row["is_passive"]),
            received_at=dt(row["received_at"]),  # type: ignore[arg-type]
            expires_at=dt(row["expires_at"]),  # type: ignore[arg-type]
            answered_at=dt(row["answered_at"]),
        )

    async def add(self, pending: PendingRequest) -> None:
        ts = self.conn.ts
        await self._insert(
            "INSERT INTO saml_requests (id, sp_id, request_id, acs_url, relay_state, force_authn, is_passive, "
            "received_at, expires_at, answered_at, binding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            pending.id,
            pending.sp_id,
            pending.request_id,
            pending.acs_url,
            pending.relay_state,
            pending.force_authn,
            pending.is_passive,
            ts(pending.received_at),
            ts(pending.expires_at),
            ts(pending.answered_at),
            pending.binding,
            conflict="saml_request_exists",
            detail="that request was received already",
        )

    async def get(self, pending_id: str) -> PendingRequest | None:
        row = await self.conn.fetchrow("SELECT * FROM saml_requests WHERE id = $1", pending_id)
        return self._pending(row) if row else None

    async def by_request_id(self, sp_id: str, request_id: str) -> PendingRequest | None:
        row = await self.conn.fetchrow(
            "SELECT * FROM saml_requests WHERE sp_id = $1 AND request_id = $2", sp_id, request_id
        )
        return self._pending(row) if row else None

    async def answer(self, pending_id: str, at: datetime) -> bool:
        count = await self.conn.execute(
            "UPDATE saml_requests SET answered_at = $2 WHERE id = $1 AND answered_at IS NULL",
            pending_id,
            self.conn.ts(at),
        )
        return count > 0

    async def purge_expired(self, before: datetime) -> int:
        return await self.conn.execute("DELETE FROM saml_requests WHERE expires_at < $1", self.conn.ts(before))


class SqlCodes(_Repo):
    async def add(self, code: AuthorizationCode) -> None:
        ts = self.conn.ts
        await self.conn.execute(
            "INSERT INTO oauth_codes (code_hash, client_id, user_id, redirect_uri, scope, created_at, expires_at, "
            "auth_time, session_hash, nonce, code_challenge, code_challenge_method, acr, amr, used_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            code.code_hash,
            code.client_id,
            code.user_id,
            code.redirect_uri,
            code.scope,
            ts(code.created_at),
            ts(code.expires_at),
            ts(code.auth_time),
            code.session_hash,
            code.nonce,
            code.code_challenge,
            code.code_challenge_method,
            code.acr,
            json.dumps(list(code.amr)),
            ts(code.used_at),
        )

    async def get(self, code_hash: str) -> AuthorizationCode | None:
        r = await self.conn.fetchrow("SELECT * FROM oauth_codes WHERE code_hash = $1", code_hash)
        if r is None:
            return None
        dt = self.conn.dt
        return AuthorizationCode(
            code_hash=r["code_hash"],
            client_id=r["client_id"],
            user_id=r["user_id"],
            redirect_uri=r["redirect_uri"],
            scope=r["scope"],
            created_at=dt(r["created_at"]),  # type: ignore[arg-type]
            expires_at=dt(r["expires_at"]),  # type: ignore[arg-type]
            auth_time=dt(r["auth_time"]),  # type: ignore[arg-type]
            session_hash=r["session_hash"],
            nonce=r["nonce"],
            code_challenge=r["code_challenge"],
            code_challenge_method=r["code_challenge_method"],
            acr=r["acr"],
            amr=tuple(json.loads(r["amr"])),
            used_at=dt(r["used_at"]),
        )

    async def spend(self, code_hash: str, at: datetime) -> bool:
        count = await self.conn.execute(
            "UPDATE oauth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL", code_hash, self.conn.ts(at)
        )
        return count > 0

    async def purge_expired(self, before: datetime) -> int:
        # Spent codes stay until they expire, so a replay inside the minute is still recognised.
        return await self.conn.execute("DELETE FROM oauth_codes WHERE expires_at < $1", self.conn.ts(before))


_TOKEN_FIELDS = (
    "id, family_id, client_id, user_id, scope, issued_at, access_expires_at, access_hash, refresh_hash, "
    "refresh_expires_at, code_hash, session_hash, auth_time, amr, acr, refreshed_at, revoked_at"
)


_REFRESH_GRANT = (
    "SELECT "
    + ", ".join(f"t.{c.strip()}" for c in _TOKEN_FIELDS.split(","))
    + ", "
    + ", ".join(f"u.{c} AS user__{c}" for c in _USER_COLUMNS)
    + ", "
    + ", ".join(f"a.{c} AS agency__{c}" for c in _AGENCY_COLUMNS)
    + " FROM oauth_tokens t LEFT JOIN users u ON u.id = t.user_id LEFT JOIN agencies a ON a.id = u.agency_id"
    + " WHERE t.refresh_hash = $1"
)


class SqlTokens(_Repo):
    def _token(self, r: Row) -> IssuedToken:
        dt = self.conn.dt
        return IssuedToken(
            id=r["id"],
            family_id=r["family_id"],
            client_id=r["client_id"],
            user_id=r["user_id"],
            scope=r["scope"],
            issued_at=dt(r["issued_at"]),  # type: ignore[arg-type]
            access_expires_at=dt(r["access_expires_at"]),  # type: ignore[arg-type]
            access_hash=r["access_hash"],
            refresh_hash=r["refresh_hash"],
            refresh_expires_at=dt(r["refresh_expires_at"]),
            code_hash=r["code_hash"],
            session_hash=r["session_hash"],
            auth_time=dt(r["auth_time"]),
            amr=tuple(json.loads(r["amr"])),
            acr=r["acr"],
            refreshed_at=dt(r["refreshed_at"]),
            revoked_at=dt(r["revoked_at"]),
        )

    _INSERT = f"INSERT INTO oauth_tokens ({_TOKEN_FIELDS}) VALUES ({', '.join(f'${i}' for i in range(1, 18))})"

    def _row(self, t: IssuedToken) -> tuple[Any, ...]:
        ts = self.conn.ts
        return (
            t.id,
            t.family_id,
            t.client_id,
            t.user_id,
            t.scope,
            ts(t.issued_at),
            ts(t.access_expires_at),
            t.access_hash,
            t.refresh_hash,
            ts(t.refresh_expires_at),
            t.code_hash,
            t.session_hash,
            ts(t.auth_time),
            json.dumps(list(t.amr)),
            t.acr,
            ts(t.refreshed_at),
            ts(t.revoked_at),
        )

    async def add(self, token: IssuedToken) -> None:
        await self.conn.execute(self._INSERT, *self._row(token))

    async def add_many(self, tokens: Sequence[IssuedToken]) -> None:
        if len(tokens) == 1:
            await self.add(tokens[0])
        elif tokens:
            await self.conn.executemany(self._INSERT, [self._row(t) for t in tokens])

    async def by_access_hash(self, access_hash: str) -> IssuedToken | None:
        row = await self.conn.fetchrow(f"SELECT {_TOKEN_FIELDS} FROM oauth_tokens WHERE access_hash = $1", access_hash)
        return self._token(row) if row else None

    async def by_refresh_hash(self, refresh_hash: str) -> IssuedToken | None:
        row = await self.conn.fetchrow(
            f"SELECT {_TOKEN_FIELDS} FROM oauth_tokens WHERE refresh_hash = $1", refresh_hash
        )
        return self._token(row) if row else None

    async def refresh_grant(self, refresh_hash: str) -> tuple[IssuedToken, User | None, Agency | None] | None:
        # One round trip for the refresh grant: the token, its user and the user's agency.
        row = await self.conn.fetchrow(_REFRESH_GRANT, refresh_hash)
        if row is None:
            return None
        dt = self.conn.dt
        user = _user_row(row, dt, "user__") if row["user__id"] is not None else None
        agency = _agency_row(row, dt, "agency__") if row["agency__id"] is not None else None
        return self._token(row), user, agency

    async def mark_refreshed(self, token_id: str, at: datetime) -> bool:
        count = await self.conn.execute(
            "UPDATE oauth_tokens SET refreshed_at = $2 WHERE id = $1 AND refreshed_at IS NULL AND revoked_at IS NULL",
            token_id,
            self.conn.ts(at),
        )
        return count > 0

    async def revoke_family(self, family_id: str, at: datetime) -> int:
        return await self.conn.execute(
            "UPDATE oauth_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
            family_id,
            self.conn.ts(at),
        )

    async def revoke_for_code(self, code_hash: str, at: datetime) -> int:
        return await self.conn.execute(
            "UPDATE oauth_tokens SET revoked_at = $2 WHERE family_id IN "
            "(SELECT family_id FROM oauth_tokens WHERE code_hash = $1) AND revoked_at IS NULL",
            code_hash,
            self.conn.ts(at),
        )

    async def pending_logouts(self, limit: int) -> Sequence[tuple[str, str, str]]:
        rows = await self.conn.fetch(
            "SELECT DISTINCT client_id, user_id, session_hash FROM oauth_tokens WHERE logout_pending "
            f"AND user_id IS NOT NULL AND session_hash IS NOT NULL ORDER BY client_id LIMIT {max(1, int(limit))}"
        )
        return [(r["client_id"], r["user_id"], r["session_hash"]) for r in rows]

    async def claim_logout(self, client_id: str, session_hash: str) -> bool:
        count = await self.conn.execute(
            "UPDATE oauth_tokens SET logout_pending = FALSE WHERE client_id = $1 AND session_hash = $2 "
            "AND logout_pending",
            client_id,
            session_hash,
        )
        return count > 0

    async def revoke_for_session(self, session_hash: str, at: datetime) -> Sequence[IssuedToken]:
        rows = await self.conn.fetch(
            f"SELECT {_TOKEN_FIELDS} FROM oauth_tokens WHERE session_hash = $1 AND revoked_at IS NULL", session_hash
        )
        await self.conn.execute(
            "UPDATE oauth_tokens SET revoked_at = $2 WHERE session_hash = $1 AND revoked_at IS NULL",
            session_hash,
            self.conn.ts(at),
        )
        return [self._token(r) for r in rows]


class SqlAudit(_Repo):
    """Appends to the chain. Events wait in the transaction until its end (`flush`): then the head row
    is locked, the events are sealed in order, written in one statement, and the head written back. The
    lock is held only from there to the commit, so transactions that audit overlap everything but
    their last step, and a batch of events costs one lock and one write."""

    _INSERT = (
        f"INSERT INTO audit_events ({', '.join(_AUDIT_FIELDS)}) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    )

    def __init__(
        self, db: Database, conn: Connection, chain: AuditChain, clock: Clock, *, writable: bool = True
    ) -> None:
        super().__init__(db, conn)
        self._chain = chain
        self._clock = clock
        self._writable = writable
        self._head: tuple[int, str] | None = None
        self._pending: list[tuple[AuditEvent, RequestContext]] = []

    def _check_writable(self) -> None:
        if not self._writable:
            # Outside a transaction the head lock would not hold, and two writers could fork the chain.
            raise RuntimeError("audit events are appended only inside a transaction")

    async def append(self, event: AuditEvent, ctx: RequestContext) -> None:
        self._check_writable()
        self._pending.append((event, ctx))

    async def lock(self) -> None:
        """Takes the head lock now: work that must run one instance at a time checks after this."""
        self._check_writable()
        await self._lock()

    async def _lock(self) -> tuple[int, str]:
        if self._head is None:
            row = await self.conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1" + self.conn.for_update)
            assert row is not None, "audit_head is created by the first migration"
            self._head = (int(row["seq"]), row["hash"])
        return self._head

    async def flush(self) -> None:
        if not self._pending:
            return
        seq, prev = await self._lock()
        at = self._clock.now()
        rows: list[tuple[Any, ...]] = []
        for event, ctx in self._pending:
            record = self._chain.seal(event, seq=seq + 1, at=at, ctx=ctx, prev_hash=prev)
            rows.append(tuple(getattr(record, f) for f in _AUDIT_FIELDS))
            seq, prev = record.seq, record.hash
        if len(rows) == 1:
            await self.conn.execute(self._INSERT, *rows[0])
        else:
            await self.conn.executemany(self._INSERT, rows)
        await self.conn.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", seq, prev)
        self._head = (seq, prev)
        self._pending.clear()


class SqlTransaction:
    """The repositories over one connection, each made on first use: a request touches two or three of
    the seventeen, and the token endpoint opens several of these per request."""

    def __init__(
        self, db: Database, conn: Connection, chain: AuditChain, clock: Clock, *, writable: bool = True
    ) -> None:
        self._db = db
        self._conn = conn
        self.audit = SqlAudit(db, conn, chain, clock, writable=writable)

    @cached_property
    def agencies(self) -> SqlAgencies:
        return SqlAgencies(self._db, self._conn)

    @cached_property
    def users(self) -> SqlUsers:
        return SqlUsers(self._db, self._conn)

    @cached_property
    def sessions(self) -> SqlSessions:
        return SqlSessions(self._db, self._conn)

    @cached_property
    def flows(self) -> SqlFlows:
        return SqlFlows(self._db, self._conn)

    @cached_property
    def throttles(self) -> SqlThrottles:
        return SqlThrottles(self._db, self._conn)

    @cached_property
    def methods(self) -> SqlMethods:
        return SqlMethods(self._db, self._conn)

    @cached_property
    def recovery_codes(self) -> SqlRecoveryCodes:
        return SqlRecoveryCodes(self._db, self._conn)

    @cached_property
    def registrations(self) -> SqlRegistrations:
        return SqlRegistrations(self._db, self._conn)

    @cached_property
    def activations(self) -> SqlActivations:
        return SqlActivations(self._db, self._conn)

    @cached_property
    def clients(self) -> SqlClients:
        return SqlClients(self._db, self._conn)

    @cached_property
    def signing_keys(self) -> SqlSigningKeys:
        return SqlSigningKeys(self._db, self._conn)

    @cached_property
    def codes(self) -> SqlCodes:
        return SqlCodes(self._db, self._conn)

    @cached_property
    def tokens(self) -> SqlTokens:
        return SqlTokens(self._db, self._conn)

    @cached_property
    def saml_sps(self) -> SqlServiceProviders:
        return SqlServiceProviders(self._db, self._conn)

    @cached_property
    def saml_certs(self) -> SqlIdpCertificates:
        return SqlIdpCertificates(self._db, self._conn)

    @cached_property
    def saml_requests(self) -> SqlPendingRequests:
        return SqlPendingRequests(self._db, self._conn)


def _record(row: Row) -> AuditRecord:
    return AuditRecord(**{f: row[f] for f in _AUDIT_FIELDS})


class SqlAuditReader:
    PAGE = 500

    def __init__(self, db: Database) -> None:
        self._db = db

    async def records(self, since: datetime | None = None, until: datetime | None = None) -> AsyncIterator[AuditRecord]:
        # Keyset pages in short reads: constant memory, and no lock held while the consumer works.
        low = isoformat(since) if since else ""
        high = isoformat(until) if until else "9999"
        after = 0
        while True:
            async with self._db.read() as conn:
                rows = await conn.fetch(
                    "SELECT * FROM audit_events WHERE seq > $1 AND occurred_at >= $2 AND occurred_at < $3 "
                    f"ORDER BY seq LIMIT {self.PAGE}",
                    after,
                    low,
                    high,
                )
            for row in rows:
                yield _record(row)
            if len(rows) < self.PAGE:
                return
            after = int(rows[-1]["seq"])

    async def recent_for_subject(self, subject_id: str, types: Sequence[str], limit: int) -> Sequence[AuditRecord]:
        placeholders = ", ".join(f"${i + 2}" for i in range(len(types)))
        async with self._db.read() as conn:
            rows = await conn.fetch(
                f"SELECT * FROM audit_events WHERE subject_id = $1 AND type IN ({placeholders}) "
                f"ORDER BY seq DESC LIMIT {int(limit)}",
                subject_id,
                *types,
            )
        return [_record(r) for r in rows]

    async def search(self, query: AuditQuery) -> Sequence[AuditRecord]:
        where: list[str] = []
        args: list[Any] = []
        if query.user_id:
            n = len(args) + 1
            where.append(f"(subject_id = ${n} OR actor_id = ${n})")
            args.append(query.user_id)
        if query.agency_ids is not None:
            clause, values = _in("agency_id", query.agency_ids, len(args) + 1)
            where.append(clause)
            args.extend(values)
        for column, value in (("type", query.type), ("outcome", query.outcome)):
            if value:
                where.append(f"{column} = ${len(args) + 1}")
                args.append(value)
        if query.since is not None:
            where.append(f"occurred_at >= ${len(args) + 1}")
            args.append(isoformat(query.since))
        if query.until is not None:
            where.append(f"occurred_at < ${len(args) + 1}")
            args.append(isoformat(query.until))
        sql = "SELECT * FROM audit_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        limit = max(1, min(int(query.limit), 100_000))
        async with self._db.read() as conn:
            rows = await conn.fetch(sql + f" ORDER BY seq DESC LIMIT {limit}", *args)
        return [_record(r) for r in rows]

    async def head(self) -> tuple[int, str]:
        async with self._db.read() as conn:
            row = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")
        return (int(row["seq"]), row["hash"]) if row else (0, GENESIS_HASH)


class SqlStore:
    def __init__(self, db: Database, chain: AuditChain, clock: Clock) -> None:
        self.db = db
        self._chain = chain
        self._clock = clock
        self._reader = SqlAuditReader(db)

    @classmethod
    def open(cls, url: str, chain: AuditChain, clock: Clock, *, pool_size: int = 10) -> SqlStore:
        return cls(open_database(url, pool_size=pool_size), chain, clock)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlTransaction]:
        async with self.db.transaction() as conn:
            tx = SqlTransaction(self.db, conn, self._chain, self._clock)
            yield tx
            await tx.audit.flush()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqlTransaction]:
        """Reads without a transaction; an audit append here would be refused by its missing lock."""
        async with self.db.read() as conn:
            yield SqlTransaction(self.db, conn, self._chain, self._clock, writable=False)

    @property
    def audit_reader(self) -> SqlAuditReader:
        return self._reader

    async def ping(self) -> bool:
        return await self.db.ping()

    async def close(self) -> None:
        await self.db.close()
