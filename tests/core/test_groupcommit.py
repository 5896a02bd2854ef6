"""alacop/core/groupcommit.py: concurrent writes share a transaction, and one bad write fails alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest

from alacop.core.audit import AuditChain, AuditEvent, EventType, Outcome, verify_chain
from alacop.core.clock import FrozenClock
from alacop.core.context import RequestContext
from alacop.core.groupcommit import GroupCommit
from alacop.core.ports import Transaction
from alacop.store.sql import SqlStore

pytestmark = pytest.mark.storage
CTX = RequestContext("192.0.2.1", "pytest", "req-1")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    the_store = SqlStore.open(database_url, AuditChain(None), FrozenClock(T0))
    yield the_store
    await the_store.close()


def _event(n: int) -> AuditEvent:
    return AuditEvent(EventType.TOKEN_ISSUED, Outcome.SUCCESS, "client_credentials", details={"n": n})


async def _records(store: SqlStore) -> list[int]:
    return [int(json.loads(r.details)["n"]) async for r in store.audit_reader.records()]


async def test_concurrent_writes_are_committed_together_in_order(store: SqlStore) -> None:
    # One writer, so batches commit one after another and the chain keeps the order of submission.
    commits = GroupCommit(store, writers=1)

    def work(n: int) -> Callable[[Transaction], Awaitable[int]]:
        async def append(tx: Transaction) -> int:
            await tx.audit.append(_event(n), CTX)
            return n * 10

        return append

    results = await asyncio.gather(*(commits.run(work(n)) for n in range(40)))
    assert results == [n * 10 for n in range(40)]
    assert commits.works == 40
    # The first write starts a batch alone; the 39 queued behind it share far fewer transactions.
    assert commits.batches < 40
    assert await _records(store) == list(range(40))
    records = [r async for r in store.audit_reader.records()]
    assert verify_chain(records, AuditChain(None), head=await store.audit_reader.head()).ok


async def test_a_failing_write_fails_alone_and_leaves_nothing(store: SqlStore) -> None:
    commits = GroupCommit(store)

    async def good(tx: Transaction) -> bool:
        await tx.audit.append(_event(1), CTX)
        return True

    async def bad(tx: Transaction) -> bool:
        await tx.audit.append(_event(666), CTX)
        raise RuntimeError("boom")

    outcomes = await asyncio.gather(commits.run(good), commits.run(bad), commits.run(good), return_exceptions=True)
    assert outcomes[0] is True and outcomes[2] is True
    assert isinstance(outcomes[1], RuntimeError)
    # The shared batch rolled back, then each write ran alone: the bad one's row is nowhere.
    assert sorted(await _records(store)) == [1, 1]
    records = [r async for r in store.audit_reader.records()]
    assert verify_chain(records, AuditChain(None), head=await store.audit_reader.head()).ok


async def test_a_write_whose_waiter_went_away_does_not_stop_the_others(store: SqlStore) -> None:
    commits = GroupCommit(store)
    release = asyncio.Event()

    async def slow(tx: Transaction) -> bool:
        await release.wait()
        await tx.audit.append(_event(1), CTX)
        return True

    async def quick(tx: Transaction) -> bool:
        await tx.audit.append(_event(2), CTX)
        return True

    first = asyncio.ensure_future(commits.run(slow))
    await asyncio.sleep(0)
    abandoned = asyncio.ensure_future(commits.run(quick))
    kept = asyncio.ensure_future(commits.run(quick))
    await asyncio.sleep(0)
    abandoned.cancel()
    release.set()
    assert await first is True and await kept is True
    assert abandoned.cancelled()
    # The abandoned write was already queued: it is committed all the same, and nothing hangs.
    assert sorted(await _records(store)) == [1, 2, 2]


async def test_finish_writes_what_the_works_decided_once_per_transaction(store: SqlStore) -> None:
    seen: list[list[int]] = []

    async def finish(tx: Transaction, results: list[int]) -> None:
        seen.append(list(results))
        for n in results:
            if n >= 0:
                await tx.audit.append(_event(n), CTX)

    commits = GroupCommit(store, finish=finish)

    def work(n: int) -> Callable[[Transaction], Awaitable[int]]:
        async def decide(tx: Transaction) -> int:
            if n == 13:
                raise RuntimeError("unlucky")
            return n

        return decide

    outcomes = await asyncio.gather(*(commits.run(work(n)) for n in (1, 2, 13, 4)), return_exceptions=True)
    assert outcomes[:2] == [1, 2] and outcomes[3] == 4
    assert isinstance(outcomes[2], RuntimeError)
    # The batch with the failing work rolled back; then each ran alone, finish once per transaction.
    assert sorted(await _records(store)) == [1, 2, 4]
    assert [1] in seen and [2] in seen and [4] in seen


async def test_a_write_queued_as_both_writers_finish_still_gets_a_writer(store: SqlStore) -> None:
    """Writers that have just finished may still be in the set (their done-callbacks not yet run);
    a write queued then must start a new writer rather than wait for ever."""
    commits = GroupCommit(store, writers=2)

    async def one(tx: Transaction) -> int:
        await tx.audit.append(_event(1), CTX)
        return 1

    async def finished() -> None:
        return None

    # Two writers that are done but still counted, as between their last step and their callbacks.
    done_writers = {asyncio.ensure_future(finished()), asyncio.ensure_future(finished())}
    await asyncio.gather(*done_writers)
    commits._writers = set(done_writers)
    assert await asyncio.wait_for(commits.run(one), timeout=10) == 1


async def test_cancelled_writers_fail_their_writes_instead_of_leaving_them_waiting(store: SqlStore) -> None:
    commits = GroupCommit(store, writers=1)
    release = asyncio.Event()

    async def stuck(tx: Transaction) -> int:
        await release.wait()
        return 1

    first = asyncio.ensure_future(commits.run(stuck))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(commits.run(stuck))
    await asyncio.sleep(0)
    for writer in list(commits._writers):
        writer.cancel()
    for waiting in (first, queued):
        with pytest.raises(RuntimeError, match="writer stopped"):
            await asyncio.wait_for(waiting, timeout=10)
