"""One conformance suite for the storage Protocols, run against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from alacop.core.accounts import Agency, Role, User, UserStatus
from alacop.core.audit import AuditChain, AuditEvent, EventType, Outcome, verify_chain
from alacop.core.clock import FrozenClock
from alacop.core.context import RequestContext
from alacop.core.errors import Conflict
from alacop.core.ports import FlowRecord, Throttle
from alacop.core.sessions import Session
from alacop.store.sql import SqlStore

pytestmark = pytest.mark.storage
CTX = RequestContext("192.0.2.1", "pytest", "req-1")
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    the_store = SqlStore.open(database_url, AuditChain(None), FrozenClock(T0))
    yield the_store
    await the_store.close()


def _agency(ori: str = "AL0010000") -> Agency:
    return Agency(id=str(uuid.uuid4()), ori=ori, name="Test County", email_domains=("a.gov", "b.gov"), created_at=T0)


def _user(agency: Agency, username: str = "cs0101") -> User:
    return User(
        id=str(uuid.uuid4()),
        username=username,
        email=f"{username}@a.gov",
        name="Casey Smith",
        agency_id=agency.id,
        role=Role.COORDINATOR,
        status=UserStatus.ACTIVE,
        password_hash="$argon2id$x",
        password_changed_at=T0,
        must_change_password=True,
        created_at=T0,
        meta={"note": "é"},
    )


async def test_agencies_round_trip_and_unique_ori(store: SqlStore) -> None:
    agency = _agency()
    async with store.transaction() as tx:
        await tx.agencies.add(agency)
    async with store.transaction() as tx:
        assert await tx.agencies.get(agency.id) == agency
        assert await tx.agencies.by_ori("AL0010000") == agency
        assert [a.ori for a in await tx.agencies.list()] == ["AL0010000"]
    with pytest.raises(Conflict):
        async with store.transaction() as tx:
            await tx.agencies.add(replace(agency, id=str(uuid.uuid4())))


async def test_users_round_trip_update_and_unique_username(store: SqlStore) -> None:
    agency = _agency()
    user = _user(agency)
    async with store.transaction() as tx:
        await tx.agencies.add(agency)
        await tx.users.add(user)
    async with store.transaction() as tx:
        assert await tx.users.get(user.id) == user
        assert await tx.users.by_username("cs0101") == user
        changed = replace(
            user,
            status=UserStatus.DISABLED,
            disabled_at=T0 + timedelta(seconds=1),
            must_change_password=False,
            last_login_at=T0,
        )
        await tx.users.update(changed)
    async with store.transaction() as tx:
        assert await tx.users.get(user.id) == changed
        assert [u.username for u in await tx.users.list(agency.id)] == ["cs0101"]
        assert await tx.users.list(str(uuid.uuid4())) == []
    with pytest.raises(Conflict):
        async with store.transaction() as tx:
            await tx.users.add(replace(user, id=str(uuid.uuid4())))


async def test_a_failed_transaction_leaves_nothing_behind(store: SqlStore) -> None:
    agency = _agency()
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.agencies.add(agency)
            await tx.audit.append(AuditEvent(EventType.AGENCY_CREATED, Outcome.SUCCESS), CTX)
            raise RuntimeError("boom")
    async with store.transaction() as tx:
        assert await tx.agencies.get(agency.id) is None
    assert [r async for r in store.audit_reader.records()] == []
    assert await store.audit_reader.head() == (0, "0" * 64)


async def test_sessions_touch_end_and_list(store: SqlStore) -> None:
    agency = _agency()
    user = _user(agency)
    session = Session(
        id_hash="a" * 64,
        user_id=user.id,
        created_at=T0,
        last_seen_at=T0,
        expires_at=T0 + timedelta(hours=12),
        auth_time=T0,
        aal="aal1",
        amr=("pwd",),
        source_ip="192.0.2.1",
        user_agent="pytest",
    )
    other = replace(session, id_hash="b" * 64)
    async with store.transaction() as tx:
        await tx.agencies.add(agency)
        await tx.users.add(user)
        await tx.sessions.add(session)
        await tx.sessions.add(other)
    async with store.transaction() as tx:
        assert await tx.sessions.get("a" * 64) == session
        await tx.sessions.touch("a" * 64, T0 + timedelta(minutes=5))
        assert (await tx.sessions.get("a" * 64)).last_seen_at == T0 + timedelta(minutes=5)  # type: ignore[union-attr]
        assert await tx.sessions.end("a" * 64, T0, "signed_out") is True
        assert await tx.sessions.end("a" * 64, T0, "signed_out") is False
        assert [s.id_hash for s in await tx.sessions.active_for_user(user.id)] == ["b" * 64]
        assert await tx.sessions.end_all_for_user(user.id, T0, "ended_by_admin") == 1
        assert await tx.sessions.active_for_user(user.id) == []
        ended = await tx.sessions.get("b" * 64)
        assert ended is not None and ended.end_reason == "ended_by_admin"


async def test_flows_save_delete_and_purge(store: SqlStore) -> None:
    flow = FlowRecord(
        id="f1",
        kind="login",
        state="identifier",
        issued_at=T0,
        expires_at=T0 + timedelta(minutes=15),
        csrf_token="c",
        binding="b",
        return_to="/apps",
        payload='{"a":1}',
    )
    stale = replace(flow, id="f2", expires_at=T0 - timedelta(minutes=1))
    async with store.transaction() as tx:
        await tx.flows.add(flow)
        await tx.flows.add(stale)
        await tx.flows.save(replace(flow, state="password", payload='{"a":2}'))
    async with store.transaction() as tx:
        saved = await tx.flows.get("f1")
        assert saved is not None and saved.state == "password" and saved.payload == '{"a":2}'
        assert await tx.flows.purge_expired(T0) == 1
        assert await tx.flows.get("f2") is None
        await tx.flows.delete("f1")
        assert await tx.flows.get("f1") is None


async def test_throttles_put_is_an_upsert(store: SqlStore) -> None:
    async with store.transaction() as tx:
        await tx.throttles.put(Throttle("cs0101@alacop.gov", (T0,), None))
        times = tuple(T0 + timedelta(minutes=m) for m in range(5))
        await tx.throttles.put(Throttle("cs0101@alacop.gov", times, T0))
    async with store.transaction() as tx:
        assert await tx.throttles.get("cs0101@alacop.gov") == Throttle("cs0101@alacop.gov", times, T0)
        await tx.throttles.clear("cs0101@alacop.gov")
        assert await tx.throttles.get("cs0101@alacop.gov") is None


async def test_audit_appends_chain_and_stream_by_time(store: SqlStore, database_url: str) -> None:
    clock = FrozenClock(T0)
    chained = SqlStore.open(database_url, AuditChain(None), clock)
    try:
        for minute in range(5):
            async with chained.transaction() as tx:
                await tx.audit.append(
                    AuditEvent(
                        EventType.LOGIN_FAILED,
                        Outcome.FAILURE,
                        "x",
                        details={"password": "hunter2", "n": minute},
                    ),
                    CTX,
                )
            clock.advance(timedelta(minutes=1))
        records = [r async for r in chained.audit_reader.records()]
        assert [r.seq for r in records] == [1, 2, 3, 4, 5]
        assert records[0].occurred_at == "2026-03-01T12:00:00.123456Z"
        assert all("hunter2" not in r.details for r in records)
        assert verify_chain(records, AuditChain(None), head=await chained.audit_reader.head()).ok
        window = [
            r.seq async for r in chained.audit_reader.records(T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))
        ]
        assert window == [2, 3]
    finally:
        await chained.close()


async def test_concurrent_appends_keep_one_unbroken_chain(database_url: str) -> None:
    """Many writers at once (as several instances would) must never fork the chain."""
    writers = [SqlStore.open(database_url, AuditChain(None), FrozenClock(T0), pool_size=4) for _ in range(3)]

    async def write(store: SqlStore, n: int) -> None:
        for i in range(10):
            async with store.transaction() as tx:
                await tx.audit.append(AuditEvent(EventType.LOGIN_FAILED, Outcome.FAILURE, f"{n}-{i}"), CTX)

    try:
        await asyncio.gather(*(write(w, n) for n, w in enumerate(writers) for _ in range(2)))
        records = [r async for r in writers[0].audit_reader.records()]
        assert len(records) == 60
        assert verify_chain(records, AuditChain(None), head=await writers[0].audit_reader.head()).ok
    finally:
        for w in writers:
            await w.close()


async def test_ping(store: SqlStore) -> None:
    assert await store.ping() is True
    broken = SqlStore.open("postgresql://nobody@127.0.0.1:1/none", AuditChain(None), FrozenClock(T0))
    assert await broken.ping() is False
    await broken.close()


async def test_parallel_failures_are_all_counted(database_url: str) -> None:
    """Parallel wrong passwords must not overwrite each other's count and so escape the lockout."""
    from alacop.core.lockout import record_failure
    from alacop.policy.cjis import Policy

    stores = [SqlStore.open(database_url, AuditChain(None), FrozenClock(T0)) for _ in range(5)]

    async def fail(store: SqlStore) -> None:
        async with store.transaction() as tx:
            row = await tx.throttles.get("cs0101@alacop.gov", for_update=True)
            await asyncio.sleep(0.01)  # widen the race a lost update would need
            await tx.throttles.put(record_failure(row, "cs0101@alacop.gov", T0, Policy()))

    try:
        await asyncio.gather(*(fail(s) for s in stores))
        async with stores[0].transaction() as tx:
            final = await tx.throttles.get("cs0101@alacop.gov")
        assert final is not None
        assert final.failures == 5
        assert final.locked_at == T0
    finally:
        for s in stores:
            await s.close()


async def test_parallel_attempts_claim_no_more_than_the_threshold(database_url: str) -> None:
    """However many guesses arrive at once, at most `lockout_threshold` are checked (CJIS AC-7)."""
    from alacop.core import attempts
    from alacop.core.deps import Deps
    from alacop.policy.cjis import Policy

    stores = [SqlStore.open(database_url, AuditChain(None), FrozenClock(T0)) for _ in range(4)]

    def deps_for(store: SqlStore) -> Deps:
        return Deps(
            store=store,
            clock=FrozenClock(T0),
            policy=Policy(),
            hasher=None,
            banned=None,  # type: ignore[arg-type]
            limiter=None,
            domain="alacop.gov",
            banner_sha256="",
            box=None,
            mailer=None,  # type: ignore[arg-type]
            captcha=None,
        )  # type: ignore[arg-type]

    try:
        claims = await asyncio.gather(
            *(attempts.claim(deps_for(stores[i % 4]), "cs0101@alacop.gov") for i in range(20))
        )
        granted = [c for c in claims if c is not None]
        assert len(granted) == 5
        # A success gives its provisional failure back: one more guess may be checked.
        await attempts.release(deps_for(stores[0]), granted[0])
        assert await attempts.claim(deps_for(stores[1]), "cs0101@alacop.gov") is not None
        assert await attempts.claim(deps_for(stores[2]), "cs0101@alacop.gov") is None
        # Failures settle: the threshold reached, the identifier locks.
        async with stores[0].transaction() as tx:
            updated, locked = await attempts.settle(tx, granted[1], deps_for(stores[0]))
        assert locked
        assert updated.locked_at == T0
    finally:
        for s in stores:
            await s.close()


async def test_user_with_agency_in_one_read(store: SqlStore) -> None:
    agency = _agency()
    user = _user(agency)
    async with store.transaction() as tx:
        await tx.agencies.add(agency)
        await tx.users.add(user)
    async with store.read() as tx:
        assert await tx.users.get_with_agency(user.id) == (user, agency)
        assert await tx.users.get_with_agency(str(uuid.uuid4())) is None
