"""A thin async database layer: one SQL text, run by asyncpg on PostgreSQL or aiosqlite on SQLite.

The schema and its migrations are SQLAlchemy's (tables.py, migrations/). Queries on the request path
go straight to the driver: measured on this machine, a statement through SQLAlchemy's async engine
costs about 200 µs of CPU and a raw asyncpg statement about 45 µs, and a sign-in runs about twenty.

SQL is written once with PostgreSQL's `$1` placeholders; SQLite receives them as `?1`. Row locks
(`FOR UPDATE`) are PostgreSQL's; SQLite takes its single write lock with BEGIN IMMEDIATE instead.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg
from sqlalchemy.engine import make_url

Row = Mapping[str, Any]


class Connection(Protocol):
    """One connection, inside a transaction or (for reads) in autocommit."""

    dialect: str
    for_update: str

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def execute(self, sql: str, *args: Any) -> int: ...
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def ts(self, value: datetime | None) -> Any: ...
    def dt(self, value: Any) -> datetime | None: ...


class Database(Protocol):
    dialect: str
    integrity_errors: tuple[type[Exception], ...]

    def transaction(self) -> Any: ...
    def read(self) -> Any: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


def open_database(url: str, *, pool_size: int = 10) -> Database:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return SqliteDatabase(parsed.database or ":memory:")
    if backend in {"postgresql", "postgres"}:
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        return PostgresDatabase(dsn, pool_size=pool_size)
    raise ValueError(f"unsupported database: {backend}")


# -- PostgreSQL ------------------------------------------------------------------------------------
def _pg_ts(value: datetime | None) -> datetime | None:
    # Columns are TIMESTAMP WITHOUT TIME ZONE holding UTC, the same on both backends.
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not stored")
    return value.astimezone(UTC).replace(tzinfo=None)


def _pg_dt(value: Any) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _count(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _PgConnection:
    dialect = "postgresql"
    for_update = " FOR UPDATE"
    ts = staticmethod(_pg_ts)
    dt = staticmethod(_pg_dt)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._conn.fetchrow(sql, *args)  # type: ignore[no-any-return]

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._conn.fetch(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        return _count(await self._conn.execute(sql, *args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)


class PostgresDatabase:
    dialect = "postgresql"
    integrity_errors: tuple[type[Exception], ...] = (asyncpg.IntegrityConstraintViolationError,)

    def __init__(self, dsn: str, *, pool_size: int = 10) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=self._pool_size, timeout=10, command_timeout=30
                    )
        return self._pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgConnection]:
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            yield _PgConnection(conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_PgConnection]:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            yield _PgConnection(conn)

    async def ping(self) -> bool:
        try:
            pool = await asyncio.wait_for(self._get_pool(), timeout=5)
            async with pool.acquire(timeout=5) as conn:
                await conn.fetchval("SELECT 1", timeout=5)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


# -- SQLite ----------------------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\$(\d+)")
_SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"


def _sqlite_ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not stored")
    return value.astimezone(UTC).strftime(_SQLITE_TS)


def _sqlite_dt(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


class _SqliteConnection:
    dialect = "sqlite"
    for_update = ""
    ts = staticmethod(_sqlite_ts)
    dt = staticmethod(_sqlite_dt)

    def __init__(self, conn: aiosqlite.Connection, translate: dict[str, str]) -> None:
        self._conn = conn
        self._sql = translate

    def _t(self, sql: str) -> str:
        done = self._sql.get(sql)
        if done is None:
            done = self._sql[sql] = _PLACEHOLDER.sub(r"?\1", sql)
        return done

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._conn.execute(self._t(sql), args) as cursor:
            return await cursor.fetchone()  # type: ignore[return-value]

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._conn.execute(self._t(sql), args) as cursor:
            return list(await cursor.fetchall())  # type: ignore[arg-type]

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._conn.execute(self._t(sql), args) as cursor:
            return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(self._t(sql), rows)


class SqliteDatabase:
    """One connection per process, used by one task at a time: SQLite has a single writer anyway."""

    dialect = "sqlite"
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._translate: dict[str, str] = {}

    async def _connect(self) -> aiosqlite.Connection:
        if self._conn is None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(self._path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON", "synchronous=NORMAL"):
                await conn.execute(f"PRAGMA {pragma}")
            self._conn = conn
        return self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteConnection]:
        async with self._lock:
            conn = await self._connect()
            # The write lock up front, so two processes never deadlock upgrading a read lock.
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteConnection(conn, self._translate)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_SqliteConnection]:
        async with self._lock:
            yield _SqliteConnection(await self._connect(), self._translate)

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.fetchrow("SELECT 1")
        except (sqlite3.Error, OSError):
            return False
        return True

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
