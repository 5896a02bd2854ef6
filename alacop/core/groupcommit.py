"""Group commit: the small writes of many concurrent requests in one transaction.

Every write that appends to the audit chain holds the chain's head lock until it commits, so such
writes run one at a time, each paying for its own lock, head update and durable commit. Under load
the token endpoint issues hundreds of tokens a second, each a few rows and one audit event. Here one
writer per process takes whatever is waiting, runs all of it in one transaction, and commits once:
one head lock, one fsync, for the whole batch. Each request still gets its answer only after the
commit that holds its rows, so nothing is acknowledged before it is durable.

A request's work runs inside the shared transaction and must keep all its effects there. After every
work of a batch has run, `finish` (when given) gets the transaction and their results, in order, to
write what they decided in bulk (one statement for many rows). If anything in a batch raises, the
batch rolls back and every work in it runs again alone, in its own transaction, so one bad request
never fails the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from alacop.core.ports import Store, Transaction

T = TypeVar("T")
Work = Callable[[Transaction], Awaitable[Any]]


Finish = Callable[[Transaction, list[Any]], Awaitable[None]]


class GroupCommit:
    """`writers` batches may be in flight at once: while one waits for its durable commit the next does
    its statements, and takes the chain's head lock (the transaction's last step) when the first lets
    go of it. Two writers that ever deadlock on a row are undone by the database, and their works are
    run again alone."""

    def __init__(self, store: Store, *, max_batch: int = 64, finish: Finish | None = None, writers: int = 2) -> None:
        self._store = store
        self._max = max_batch
        self._finish = finish
        self._writers_max = writers
        self._queue: list[tuple[Work, asyncio.Future[Any]]] = []
        self._writers: set[asyncio.Task[None]] = set()
        # How many batches and works went through; read by tests and benchmarks.
        self.batches = 0
        self.works = 0

    async def run(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """Runs `work` in a transaction shared with whatever else is waiting; returns once committed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._queue.append((work, done))
        # done() rather than the set's size: a writer that has just finished is out of work at once,
        # though its done-callback has not run yet; counting it could leave this write with no writer.
        self._writers = {w for w in self._writers if not w.done()}
        if len(self._writers) < self._writers_max:
            self._writers.add(loop.create_task(self._drain()))
        return await done

    async def _drain(self) -> None:
        batch: list[tuple[Work, asyncio.Future[Any]]] = []
        try:
            while self._queue:
                batch = self._queue[: self._max]
                del self._queue[: self._max]
                try:
                    results = await self._together([work for work, _ in batch])
                except Exception:
                    await self._alone(batch)
                    continue
                for (_, done), result in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(result)
        except asyncio.CancelledError:
            # Shutdown: nobody may wait for ever on a write that will not be made (this writer's batch,
            # whose transaction was rolled back, and whatever is still queued).
            for _, done in [*batch, *self._queue]:
                if not done.done():
                    done.set_exception(RuntimeError("the writer stopped before this write"))
            self._queue.clear()
            raise

    async def _together(self, works: list[Work]) -> list[Any]:
        async with self._store.transaction() as tx:
            results = [await work(tx) for work in works]
            if self._finish is not None:
                await self._finish(tx, results)
        self.batches += 1
        self.works += len(works)
        return results

    async def _alone(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> None:
        for work, done in batch:
            try:
                async with self._store.transaction() as tx:
                    result = await work(tx)
                    if self._finish is not None:
                        await self._finish(tx, [result])
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
                continue
            self.batches += 1
            self.works += 1
            if not done.done():
                done.set_result(result)
