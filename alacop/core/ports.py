"""What the core needs from storage, as Protocols; store/ implements them for SQL and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from alacop.core.accounts import Agency, User
from alacop.core.audit import AuditEvent, AuditRecord
from alacop.core.context import RequestContext
from alacop.core.sessions import Session


@dataclass(frozen=True, slots=True)
class FlowRecord:
    id: str
    kind: str
    state: str
    issued_at: datetime
    expires_at: datetime
    csrf_token: str
    binding: str
    return_to: str | None
    payload: str


@dataclass(frozen=True, slots=True)
class Throttle:
    """Recent consecutive failures for one normalised identifier, whether or not an account has it."""

    key: str
    failure_times: tuple[datetime, ...]
    locked_at: datetime | None

    @property
    def failures(self) -> int:
        return len(self.failure_times)


class AgencyRepository(Protocol):
    async def add(self, agency: Agency) -> None: ...
    async def get(self, agency_id: str) -> Agency | None: ...
    async def by_ori(self, ori: str) -> Agency | None: ...
    async def list(self) -> Sequence[Agency]: ...


class UserRepository(Protocol):
    async def add(self, user: User) -> None: ...
    async def get(self, user_id: str) -> User | None: ...
    async def by_username(self, username: str) -> User | None: ...
    async def list(self, agency_id: str | None = None) -> Sequence[User]: ...
    async def update(self, user: User) -> None: ...


class SessionRepository(Protocol):
    async def add(self, session: Session) -> None: ...
    async def get(self, id_hash: str) -> Session | None: ...
    async def touch(self, id_hash: str, at: datetime) -> None: ...
    async def end(self, id_hash: str, at: datetime, reason: str) -> bool: ...
    async def end_all_for_user(self, user_id: str, at: datetime, reason: str) -> int: ...
    async def active_for_user(self, user_id: str) -> Sequence[Session]: ...


class FlowRepository(Protocol):
    async def add(self, flow: FlowRecord) -> None: ...
    async def get(self, flow_id: str) -> FlowRecord | None: ...
    async def save(self, flow: FlowRecord) -> None: ...
    async def delete(self, flow_id: str) -> None: ...
    async def purge_expired(self, before: datetime) -> int: ...


class ThrottleRepository(Protocol):
    async def get(self, key: str, *, for_update: bool = False) -> Throttle | None:
        """With for_update, the row is created if missing and locked until the transaction ends,
        so parallel failures cannot overwrite each other's count."""
        ...

    async def put(self, throttle: Throttle) -> None: ...
    async def clear(self, key: str) -> None: ...


class AuditRepository(Protocol):
    async def append(self, event: AuditEvent, ctx: RequestContext) -> AuditRecord: ...


class Transaction(Protocol):
    """One unit of work: every change and the audit events recording it commit together."""

    agencies: AgencyRepository
    users: UserRepository
    sessions: SessionRepository
    flows: FlowRepository
    throttles: ThrottleRepository
    audit: AuditRepository


class AuditReader(Protocol):
    def records(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[AuditRecord]: ...
    async def head(self) -> tuple[int, str]: ...


class Store(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...
    def read(self) -> AbstractAsyncContextManager[Transaction]:
        """Reads without transaction overhead; writes and audit appends belong in transaction()."""
        ...

    @property
    def audit_reader(self) -> AuditReader: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class RateLimiter(Protocol):
    """Counts hits per key in fixed windows; shared across instances when backed by Redis."""

    async def hit(self, key: str, limit: int, window_seconds: int) -> bool: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...
