"""Conformance of the OpenID Connect repositories on SQLite and PostgreSQL: clients, keys, codes, tokens."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from alacop.core.accounts import Agency, Role, User, UserStatus
from alacop.core.audit import AuditChain
from alacop.core.clock import FrozenClock
from alacop.core.errors import Conflict
from alacop.core.oidc import AuthorizationCode, Client, ClientType, IssuedToken, SigningKey, TokenFormat
from alacop.store.sql import SqlStore

pytestmark = pytest.mark.storage
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    the_store = SqlStore.open(database_url, AuditChain(None), FrozenClock(T0))
    yield the_store
    await the_store.close()


def _client(client_id: str = "c" * 24, **changes: object) -> Client:
    client = Client(
        client_id=client_id,
        name="Records Search",
        client_type=ClientType.CONFIDENTIAL,
        redirect_uris=("https://records.example/callback", "http://localhost:9000/cb"),
        created_at=T0,
        secret_hash="s" * 64,
        post_logout_redirect_uris=("https://records.example/",),
        scopes=("openid", "profile"),
        logo_url="https://records.example/logo.png",
        initiate_login_uri="https://records.example/login",
        backchannel_logout_uri="https://records.example/bcl",
        access_token_format=TokenFormat.OPAQUE,
        agency_ids=("a1",),
    )
    return replace(client, **changes)  # type: ignore[arg-type]


async def _user(store: SqlStore) -> User:
    agency = Agency(id=str(uuid.uuid4()), ori="AL0010000", name="A", email_domains=(), created_at=T0)
    user = User(
        id=str(uuid.uuid4()),
        username="cs0101",
        email="cs0101@a.gov",
        name="C S",
        agency_id=agency.id,
        role=Role.USER,
        status=UserStatus.ACTIVE,
        password_hash="x",
        password_changed_at=T0,
        must_change_password=False,
        created_at=T0,
    )
    async with store.transaction() as tx:
        await tx.agencies.add(agency)
        await tx.users.add(user)
    return user


def _issued(user_id: str | None, **changes: object) -> IssuedToken:
    """A refresh-capable token of the test client, issued at T0; tests change what they look at."""
    token = IssuedToken(
        id=str(uuid.uuid4()),
        family_id="fam1",
        client_id="c" * 24,
        user_id=user_id,
        scope="openid offline_access",
        issued_at=T0,
        access_expires_at=T0 + timedelta(minutes=5),
        access_hash="a1" * 32,
        refresh_hash="r1" * 32,
        refresh_expires_at=T0 + timedelta(hours=8),
        auth_time=T0,
        amr=("pwd", "otp"),
        acr="aal2",
    )
    return replace(token, **changes)  # type: ignore[arg-type]


async def test_clients_round_trip_update_and_unique_id(store: SqlStore) -> None:
    client = _client()
    async with store.transaction() as tx:
        await tx.clients.add(client)
        await tx.clients.add(_client("d" * 24, name="Alpha", client_type=ClientType.PUBLIC, secret_hash=None))
    async with store.read() as db:
        assert await db.clients.get(client.client_id) == client
        assert [c.name for c in await db.clients.list()] == ["Alpha", "Records Search"]
        assert await db.clients.get("nope") is None
    disabled = replace(client, disabled_at=T0 + timedelta(hours=1), secret_hash="t" * 64, secret_rotated_at=T0)
    async with store.transaction() as tx:
        await tx.clients.update(disabled)
    async with store.read() as db:
        assert await db.clients.get(client.client_id) == disabled
    with pytest.raises(Conflict):
        async with store.transaction() as tx:
            await tx.clients.add(client)


async def test_signing_keys_supersede_all_but_the_new_one(store: SqlStore) -> None:
    keys = [
        SigningKey(f"k{i}", alg, "sealed", "{}", T0 + timedelta(minutes=i))
        for i, alg in enumerate(("ES256", "RS256", "ES256"))
    ]
    async with store.transaction() as tx:
        for key in keys:
            await tx.signing_keys.add(key)
        assert await tx.signing_keys.supersede("ES256", T0 + timedelta(hours=1), keep="k2") == 1
    async with store.read() as db:
        listed = await db.signing_keys.list()
    assert [k.kid for k in listed] == ["k2", "k1", "k0"]
    by_kid = {k.kid: k for k in listed}
    assert by_kid["k0"].retire_after == T0 + timedelta(hours=1) and not by_kid["k0"].current
    assert by_kid["k2"].current and by_kid["k1"].current
    assert by_kid["k0"].published(T0) and not by_kid["k0"].published(T0 + timedelta(hours=1))


async def test_codes_are_spent_once_and_purged_after_expiry(store: SqlStore) -> None:
    user = await _user(store)
    code = AuthorizationCode(
        code_hash="h" * 64,
        client_id="c" * 24,
        user_id=user.id,
        redirect_uri="https://records.example/callback",
        scope="openid profile",
        created_at=T0,
        expires_at=T0 + timedelta(seconds=60),
        auth_time=T0,
        session_hash="s" * 64,
        nonce="n-0S6_WzA2Mj",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        code_challenge_method="S256",
        amr=("pwd", "otp"),
    )
    async with store.transaction() as tx:
        await tx.clients.add(_client())
        await tx.codes.add(code)
    async with store.transaction() as tx:
        assert await tx.codes.get(code.code_hash) == code
        assert await tx.codes.spend(code.code_hash, T0 + timedelta(seconds=5))
        assert not await tx.codes.spend(code.code_hash, T0 + timedelta(seconds=6))
        assert await tx.codes.purge_expired(T0 + timedelta(seconds=30)) == 0
        assert await tx.codes.purge_expired(T0 + timedelta(seconds=61)) == 1
        assert await tx.codes.get(code.code_hash) is None


async def test_tokens_rotate_once_and_revoke_by_family_code_and_session(store: SqlStore) -> None:
    user = await _user(store)
    first = _issued(user.id, code_hash="h" * 64, session_hash="s" * 64)
    second = replace(first, id=str(uuid.uuid4()), access_hash="a2" * 32, refresh_hash="r2" * 32, code_hash=None)
    other = replace(
        first,
        id=str(uuid.uuid4()),
        family_id="fam2",
        access_hash="a3" * 32,
        refresh_hash=None,
        code_hash=None,
        session_hash="t" * 64,
        user_id=None,
    )
    async with store.transaction() as tx:
        await tx.clients.add(_client())
        for token in (first, second, other):
            await tx.tokens.add(token)
    async with store.transaction() as tx:
        assert await tx.tokens.by_access_hash("a1" * 32) == first
        assert await tx.tokens.by_refresh_hash("r2" * 32) == second
        assert await tx.tokens.mark_refreshed(first.id, T0 + timedelta(minutes=1))
        assert not await tx.tokens.mark_refreshed(first.id, T0 + timedelta(minutes=2))
        assert await tx.tokens.revoke_for_code("h" * 64, T0 + timedelta(minutes=3)) == 2
        assert not await tx.tokens.mark_refreshed(second.id, T0 + timedelta(minutes=4))
        revoked = await tx.tokens.revoke_for_session("t" * 64, T0 + timedelta(minutes=5))
        assert [t.id for t in revoked] == [other.id]
        assert await tx.tokens.revoke_family("fam2", T0) == 0
    async with store.read() as db:
        gone = await db.tokens.by_access_hash("a2" * 32)
        assert gone is not None and gone.revoked_at == T0 + timedelta(minutes=3)


async def test_tokens_added_many_at_once_read_back_the_same(store: SqlStore) -> None:
    user = await _user(store)
    base = _issued(
        user.id, family_id="fam", scope="openid", access_hash="b0" * 32, refresh_hash=None, refresh_expires_at=None
    )
    tokens = [replace(base, id=str(uuid.uuid4()), access_hash=f"b{n}" * 32) for n in range(1, 4)]
    async with store.transaction() as tx:
        await tx.clients.add(_client())
        await tx.tokens.add_many([])
        await tx.tokens.add_many(tokens[:1])
        await tx.tokens.add_many(tokens[1:])
    async with store.read() as tx:
        for token in tokens:
            assert await tx.tokens.by_access_hash(token.access_hash) == token
    # One bad row (a duplicate id) fails the whole statement, and its transaction with it.
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own integrity error
        async with store.transaction() as tx:
            await tx.tokens.add_many([replace(base, access_hash="c1" * 32), tokens[0]])
    async with store.read() as tx:
        assert await tx.tokens.by_access_hash("c1" * 32) is None


async def test_refresh_grant_reads_the_token_with_its_user_and_agency(store: SqlStore) -> None:
    user = await _user(store)
    token = _issued(user.id, family_id="famr", access_hash="d1" * 32, refresh_hash="e1" * 32, amr=("pwd",))
    machine = replace(token, id=str(uuid.uuid4()), user_id=None, access_hash="d2" * 32, refresh_hash="e2" * 32)
    async with store.transaction() as tx:
        await tx.clients.add(_client())
        await tx.tokens.add_many([token, machine])
    async with store.read() as tx:
        found = await tx.tokens.refresh_grant("e1" * 32)
        assert found is not None
        assert found[0] == token and found[1] == user
        assert found[2] is not None and found[2].id == user.agency_id
        assert await tx.tokens.refresh_grant("e2" * 32) == (machine, None, None)
        assert await tx.tokens.refresh_grant("f" * 64) is None
