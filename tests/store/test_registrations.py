"""Conformance of the registration, activation, scope and search repositories on SQLite and PostgreSQL,
and a check that the migrations build exactly the schema tables.py describes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from alacop.core.accounts import Agency, Role, User, UserStatus
from alacop.core.audit import AuditChain, AuditEvent, EventType, Outcome
from alacop.core.clock import FrozenClock
from alacop.core.context import RequestContext
from alacop.core.ports import AuditQuery, UserQuery
from alacop.core.registration import ActivationLink, Application, Registration, RegistrationStatus
from alacop.store.database import make_engine
from alacop.store.sql import SqlStore
from alacop.store.tables import metadata

pytestmark = pytest.mark.storage
CTX = RequestContext("192.0.2.1", "pytest", "req-1")
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    the_store = SqlStore.open(database_url, AuditChain(None), FrozenClock(T0))
    yield the_store
    await the_store.close()


def _agency(ori: str = "AL0010000") -> Agency:
    return Agency(id=str(uuid.uuid4()), ori=ori, name=f"Agency {ori}", email_domains=("a.gov",), created_at=T0)


def _user(agency: Agency, username: str, **changes: object) -> User:
    user = User(
        id=str(uuid.uuid4()),
        username=username,
        email=f"{username}@a.gov",
        name=f"Name {username}",
        agency_id=agency.id,
        role=Role.USER,
        status=UserStatus.ACTIVE,
        password_hash=None,
        password_changed_at=None,
        must_change_password=False,
        created_at=T0,
        training_date=date(2026, 1, 15),
    )
    return replace(user, **changes)  # type: ignore[arg-type]


def _registration(agency: Agency, email: str = "x@a.gov", **changes: object) -> Registration:
    application = Application(
        first_name="Ada",
        last_name="Byron",
        agency_id=agency.id,
        title="Analyst",
        email=email,
        phone="555 0100 22",
        supervisor="Sgt. Lee",
        reason="Records.",
        training_date=date(2026, 2, 1),
        rules_sha256="f" * 64,
    )
    registration = Registration(
        id=str(uuid.uuid4()),
        application=application,
        status=RegistrationStatus.PENDING,
        created_at=T0,
        expires_at=T0 + timedelta(days=30),
        status_token_hash=uuid.uuid4().hex,
    )
    return replace(registration, **changes)  # type: ignore[arg-type]


async def test_users_carry_training_dates_and_are_searched(store: SqlStore) -> None:
    a, b = _agency(), _agency("AL0020000")
    users = [
        _user(a, "cs0101", name="Casey Smith"),
        _user(a, "jd0101", name="Jo_Doe 100%", status=UserStatus.DISABLED),
        _user(b, "cs0102", name="Casey Stone", role=Role.COORDINATOR),
    ]
    async with store.transaction() as tx:
        await tx.agencies.add(a)
        await tx.agencies.add(b)
        for user in users:
            await tx.users.add(user)
    async with store.read() as db:
        assert (await db.users.get(users[0].id)) == users[0]
        found = await db.users.search(UserQuery(text="CASEY"))
        assert [u.username for u in found] == ["cs0101", "cs0102"]
        assert [u.username for u in await db.users.search(UserQuery(text="casey", agency_ids=(a.id,)))] == ["cs0101"]
        assert await db.users.search(UserQuery(agency_ids=())) == []
        # % and _ are literal, not wildcards.
        assert [u.username for u in await db.users.search(UserQuery(text="_doe 100%"))] == ["jd0101"]
        assert await db.users.search(UserQuery(text="o%e")) == []
        assert [u.username for u in await db.users.search(UserQuery(status="disabled"))] == ["jd0101"]
        assert [u.username for u in await db.users.search(UserQuery(role="coordinator"))] == ["cs0102"]
        assert len(await db.users.search(UserQuery(limit=1))) == 1
        assert [u.username for u in await db.users.by_email("CS0101@A.GOV")] == ["cs0101"]
        assert await db.users.usernames_starting("cs") == {"cs0101", "cs0102"}
        assert await db.users.usernames_starting("c_") == set()


async def test_deleting_a_user_retires_the_username(store: SqlStore) -> None:
    a = _agency()
    user = _user(a, "cs0101")
    async with store.transaction() as tx:
        await tx.agencies.add(a)
        await tx.users.add(user)
        await tx.activations.replace(ActivationLink("h" * 64, user.id, T0, T0 + timedelta(hours=72)))
        await tx.agencies.set_coordinators(a.id, [user.id])
    async with store.transaction() as tx:
        await tx.users.delete(user.id, T0 + timedelta(days=1))
        await tx.users.delete(str(uuid.uuid4()), T0)
    async with store.read() as db:
        assert await db.users.get(user.id) is None
        assert await db.activations.get("h" * 64) is None
        assert await db.agencies.coordinators(a.id) == []
        assert await db.users.retired_since("cs", T0) == {"cs0101"}
        assert await db.users.retired_since("cs", T0 + timedelta(days=2)) == set()


async def test_registrations_round_trip_and_decide_once(store: SqlStore) -> None:
    a, b = _agency(), _agency("AL0020000")
    mine = _registration(a)
    theirs = _registration(b, "y@b.gov")
    async with store.transaction() as tx:
        await tx.agencies.add(a)
        await tx.agencies.add(b)
        await tx.registrations.add(mine)
        await tx.registrations.add(theirs)
    async with store.read() as db:
        assert await db.registrations.get(mine.id) == mine
        assert await db.registrations.by_status_token(mine.status_token_hash) == mine
        assert await db.registrations.pending_for_email("X@A.GOV") == mine
        assert [r.id for r in await db.registrations.list(agency_ids=(a.id,))] == [mine.id]
        assert await db.registrations.list(agency_ids=()) == []
        assert len(await db.registrations.list(status=RegistrationStatus.PENDING)) == 2
        assert await db.registrations.stale(T0 + timedelta(days=29)) == []
        assert len(await db.registrations.stale(T0 + timedelta(days=30))) == 2
    decided = replace(mine, status=RegistrationStatus.DENIED, decided_at=T0, decided_by="admin", decision_reason="no")
    async with store.transaction() as tx:
        assert await tx.registrations.decide(decided)
        assert not await tx.registrations.decide(replace(decided, status=RegistrationStatus.APPROVED))
    async with store.read() as db:
        assert await db.registrations.get(mine.id) == decided
        assert await db.registrations.pending_for_email("x@a.gov") is None


async def test_activation_links_work_once_and_the_newest_wins(store: SqlStore) -> None:
    a = _agency()
    user = _user(a, "cs0101")
    first = ActivationLink("1" * 64, user.id, T0, T0 + timedelta(hours=72))
    second = ActivationLink("2" * 64, user.id, T0, T0 + timedelta(hours=72))
    async with store.transaction() as tx:
        await tx.agencies.add(a)
        await tx.users.add(user)
        await tx.activations.replace(first)
        await tx.activations.replace(second)
    async with store.transaction() as tx:
        assert await tx.activations.get("1" * 64) is None
        assert await tx.activations.get("2" * 64) == second
        assert not await tx.activations.spend("2" * 64, T0 + timedelta(hours=72))
        assert await tx.activations.spend("2" * 64, T0 + timedelta(hours=1))
        assert not await tx.activations.spend("2" * 64, T0 + timedelta(hours=2))
    async with store.read() as db:
        spent = await db.activations.get("2" * 64)
        assert spent is not None and spent.used_at == T0 + timedelta(hours=1) and not spent.usable(T0)


async def test_coordinator_scopes_and_agency_updates(store: SqlStore) -> None:
    a, b = _agency(), _agency("AL0020000")
    coordinator = _user(a, "co0101", role=Role.COORDINATOR)
    async with store.transaction() as tx:
        await tx.agencies.add(a)
        await tx.agencies.add(b)
        await tx.users.add(coordinator)
        await tx.agencies.set_coordinators(a.id, [coordinator.id, coordinator.id])
        await tx.agencies.set_coordinators(b.id, [coordinator.id])
        await tx.agencies.update(replace(a, name="Renamed", email_domains=("c.gov", "d.gov")))
    async with store.read() as db:
        assert sorted(await db.agencies.coordinated_by(coordinator.id)) == sorted([a.id, b.id])
        assert await db.agencies.coordinators(a.id) == [coordinator.id]
        renamed = await db.agencies.get(a.id)
        assert renamed is not None and renamed.name == "Renamed" and renamed.email_domains == ("c.gov", "d.gov")
    async with store.transaction() as tx:
        await tx.agencies.set_coordinators(b.id, [])
    async with store.read() as db:
        assert await db.agencies.coordinated_by(coordinator.id) == [a.id]


async def test_audit_search_filters_and_scopes(store: SqlStore) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    events = [
        AuditEvent(EventType.LOGIN_FAILED, Outcome.FAILURE, subject_id="u1", agency_id=a),
        AuditEvent(EventType.LOGIN_SUCCEEDED, Outcome.SUCCESS, subject_id="u1", agency_id=a),
        AuditEvent(EventType.ACCOUNT_DISABLED, Outcome.SUCCESS, actor_id="u1", subject_id="u2", agency_id=b),
        AuditEvent(EventType.MAINTENANCE_RUN, Outcome.INFO),
    ]
    async with store.transaction() as tx:
        for event in events:
            await tx.audit.append(event, CTX)
    search = store.audit_reader.search
    assert [r.type for r in await search(AuditQuery())] == [
        "MaintenanceRun",
        "AccountDisabled",
        "LoginSucceeded",
        "LoginFailed",
    ]
    assert [r.seq for r in await search(AuditQuery(user_id="u1"))] == [3, 2, 1]
    assert [r.seq for r in await search(AuditQuery(agency_ids=(a,)))] == [2, 1]
    assert await search(AuditQuery(agency_ids=())) == []
    assert [r.seq for r in await search(AuditQuery(type="LoginFailed", outcome="failure"))] == [1]
    assert await search(AuditQuery(since=T0 + timedelta(seconds=1))) == []
    assert len(await search(AuditQuery(until=T0 + timedelta(seconds=1)))) == 4
    assert len(await search(AuditQuery(limit=2))) == 2


async def test_migrations_build_the_schema_tables_py_describes(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
    finally:
        await engine.dispose()
    assert diff == []
