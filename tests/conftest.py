"""Shared fixtures: each app test runs on SQLite and on PostgreSQL, with an injected clock.

PostgreSQL comes from ALACOP_TEST_POSTGRES_URL (default: the local trust-auth server).
Unreachable PostgreSQL skips those cases locally and fails them under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pyotp
import pytest
from starlette.testclient import TestClient

from alacop.config import Settings, load_settings
from alacop.core.accounts import Role, User
from alacop.core.clock import FrozenClock
from alacop.core.context import RequestContext
from alacop.core.directory import Directory
from alacop.core.passwords import PasswordHasher
from alacop.store.database import migrate
from alacop.store.ratelimit import MemoryRateLimiter
from alacop.store.tables import metadata
from alacop.web.app import Portal, create_app
from alacop.web.routes.login import SESSION_COOKIE

T = TypeVar("T")
PG_URL = os.environ.get("ALACOP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI") == "true"
BACKENDS = [b.strip() for b in os.environ.get("ALACOP_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]
STRONG = "granite harbor lantern 77"
# For wide matrices over rules that live in the core (the same refusal for every console action, say):
# they run on SQLite only, while every storage path they touch also runs on PostgreSQL elsewhere.
sqlite_only = pytest.mark.parametrize(
    "database_url", [b for b in BACKENDS if b == "sqlite"] or BACKENDS[:1], indirect=True
)
# Every table but the chain head (reset apart), so a new table is never left holding a previous test's rows.
TABLES = tuple(name for name in metadata.tables if name != "audit_head")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Browser tests go last: Playwright's sync API keeps an event loop running in this thread.
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


def audit_details(record: Any) -> dict[str, Any]:
    """An audit record's details, decoded."""
    decoded: dict[str, Any] = json.loads(record.details)
    return decoded


def run_async(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run a coroutine to completion from sync fixture code, whatever loop this thread has."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(fn(*args))).result()  # type: ignore[arg-type]


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: storage backends must be reachable)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    name = f"alacop_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        run_async(pg_execute, PG_URL, f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL unreachable at {PG_URL}: {exc.__class__.__name__}: {exc}")
    url = re.sub(r"/[^/]*$", f"/{name}", PG_URL)
    migrate(url)
    yield url
    run_async(pg_execute, PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def pg_execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        target = tmp_path / "alacop.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("postgres_database")
    run_async(
        pg_execute,
        url,
        f"TRUNCATE {', '.join(TABLES)} CASCADE",
        "UPDATE audit_head SET seq = 0, hash = repeat('0', 64)",
        # Tamper tests drop the append-only guard, as an intruder would; every test starts with it.
        "CREATE OR REPLACE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION alacop_audit_append_only()",
    )
    return url


# -- the app harness -------------------------------------------------------------------------------
def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    env = {
        "ALACOP_ENV": "development",
        "ALACOP_DATABASE_URL": database_url,
        "ALACOP_DATA_DIR": str(data_dir),
        "ALACOP_SECRET_KEY": "k" * 40,
        "ALACOP_PUBLIC_URL": "http://127.0.0.1:8000",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return load_settings(env)


class Harness:
    """A running app plus handles on its clock and core, for driving flows end to end."""

    def __init__(self, client: TestClient, clock: FrozenClock) -> None:
        self.client = client
        self.clock = clock
        # Accounts made by create_user get this authenticator-app seed and a set of recovery codes.
        self.totp_secret = pyotp.random_base32(32)
        self.recovery_codes: list[str] = []

    def totp_code(self, offset_steps: int = 0) -> str:
        return pyotp.TOTP(self.totp_secret).at(self.clock.now(), counter_offset=offset_steps)

    @property
    def portal(self) -> Portal:
        return self.client.app.state.portal  # type: ignore[attr-defined,no-any-return]

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.client.portal.call(fn, *args)  # type: ignore[union-attr]

    def create_user(
        self,
        username: str = "cs0101",
        password: str = STRONG,
        *,
        role: Role = Role.USER,
        must_change: bool = False,
        ori: str = "AL0010000",
        factor: bool = True,
    ) -> User:
        directory = Directory(self.portal.deps)
        ctx = RequestContext.system("test")

        async def go() -> User:
            async with self.portal.deps.store.transaction() as tx:
                agency = await tx.agencies.by_ori(ori)
            if agency is None:
                await directory.create_agency(ori, "Test County Sheriff", ["test.al.gov"], ctx)
            user, _ = await directory.create_user(
                username,
                agency_ori=ori,
                email=f"{username}@test.al.gov",
                name="Casey Smith",
                role=role,
                password=password,
                ctx=ctx,
            )
            if not must_change:
                user = replace(user, must_change_password=False)
                async with self.portal.deps.store.transaction() as tx:
                    await tx.users.update(user)
            if factor:
                await self._give_factors(user)
            return user

        return self.run(go)

    async def _give_factors(self, user: User) -> None:
        from alacop.core.credentials import AuthMethod, MethodKind
        from alacop.methods import recovery_codes

        deps = self.portal.deps
        now = self.clock.now()
        self.recovery_codes = recovery_codes.generate()
        async with deps.store.transaction() as tx:
            await tx.methods.add(
                AuthMethod(
                    id=str(uuid.uuid4()),
                    user_id=user.id,
                    kind=MethodKind.TOTP,
                    name="Test phone",
                    created_at=now,
                    totp_secret=deps.box.seal(self.totp_secret.encode()),
                )
            )
            await tx.recovery_codes.replace_set(user.id, recovery_codes.records(user.id, self.recovery_codes, now))

    def finish(self, response: Any) -> Any:
        """Complete the second factor with the authenticator app, when the flow asks for it."""
        if getattr(response, "template", None) is None or response.template.name != "login/second_factor.html":
            return response
        flow = self.flow_of(response)
        # A new 30-second step each time, so one test's sign-ins never replay each other's codes.
        self.clock.advance(timedelta(seconds=30))
        return self.client.post(
            f"/login/second-factor?flow={flow.id}",
            data={"csrf_token": flow.csrf_token, "code": self.totp_code(), "credential": ""},
        )

    def user(self, username: str) -> User | None:
        async def go() -> User | None:
            async with self.portal.deps.store.transaction() as tx:
                return await tx.users.by_username(username)

        return self.run(go)

    def audit(self) -> list[Any]:
        async def go() -> list[Any]:
            return [r async for r in self.portal.deps.store.audit_reader.records()]

        return self.run(go)

    def audit_types(self) -> list[str]:
        return [r.type for r in self.audit()]

    def events(self, kind: str) -> list[Any]:
        """The audit records of one type, oldest first."""
        return [r for r in self.audit() if r.type == kind]

    def forget_session(self) -> None:
        """Drop the session cookie, as a browser would on closing; the server-side session stays."""
        self.client.cookies.delete(SESSION_COOKIE)

    # -- the sign-in flow, step by step --
    def start(self) -> Any:
        response = self.client.get("/login")
        assert response.status_code == 200
        return response

    def flow_of(self, response: Any) -> Any:
        return response.context["flow"]

    def identifier(self, value: str, response: Any | None = None) -> Any:
        page = response or self.start()
        flow = self.flow_of(page)
        return self.client.post(
            f"/login/identifier?flow={flow.id}", data={"identifier": value, "csrf_token": flow.csrf_token}
        )

    def password(self, page: Any, value: str) -> Any:
        flow = self.flow_of(page)
        return self.client.post(
            f"/login/password?flow={flow.id}", data={"password": value, "csrf_token": flow.csrf_token}
        )

    def sign_in(self, identifier: str = "cs0101", password: str = STRONG) -> Any:
        return self.finish(self.password(self.identifier(identifier), password))


@pytest.fixture
def fast_hasher() -> PasswordHasher:
    # Tests that are not about hashing use cheap parameters; the rehash test checks the real ones.
    return PasswordHasher(memory_cost=1024, time_cost=1)


@pytest.fixture
def app_factory(database_url: str, tmp_path: Path, fast_hasher: PasswordHasher) -> Iterator[Callable[..., Harness]]:
    stack: list[TestClient] = []

    def build(
        *,
        clock: FrozenClock | None = None,
        hasher: PasswordHasher | None = None,
        base_url: str = "http://127.0.0.1:8000",
        mailer: Any = None,
        peer: tuple[str, int] = ("127.0.0.1", 50000),
        **overrides: Any,
    ) -> Harness:
        settings = make_settings(database_url, tmp_path / "data", **overrides)
        the_clock = clock or FrozenClock()
        app = create_app(
            settings, clock=the_clock, limiter=MemoryRateLimiter(), hasher=hasher or fast_hasher, mailer=mailer
        )
        client = TestClient(app, base_url=base_url, client=peer)
        client.__enter__()
        stack.append(client)
        return Harness(client, the_clock)

    yield build
    for client in reversed(stack):
        client.__exit__(None, None, None)


@pytest.fixture
def harness(app_factory: Callable[..., Harness]) -> Harness:
    return app_factory()
