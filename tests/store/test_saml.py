"""Conformance of the SAML repositories on SQLite and PostgreSQL: applications, certificates, pending requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from alacop.core.audit import AuditChain
from alacop.core.clock import FrozenClock
from alacop.core.errors import Conflict
from alacop.core.saml import (
    AssertionConsumer,
    IdpCertificate,
    NameIdFormat,
    PendingRequest,
    ServiceProvider,
    new_nameid_salt,
    new_pending_id,
    new_sp_id,
)
from alacop.store.sql import SqlStore

pytestmark = pytest.mark.storage
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    the_store = SqlStore.open(database_url, AuditChain(None), FrozenClock(T0))
    yield the_store
    await the_store.close()


def _sp(entity_id: str = "https://records.example/saml", **changes: object) -> ServiceProvider:
    sp = ServiceProvider(
        id=new_sp_id(),
        entity_id=entity_id,
        name="Records Search",
        acs=(
            AssertionConsumer("https://records.example/acs", 0, False),
            AssertionConsumer("https://records.example/acs2", 3, True),
        ),
        certificates=("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",),
        created_at=T0,
        nameid_salt=new_nameid_salt(),
        authn_requests_signed=True,
        nameid_format=NameIdFormat.EMAIL,
        attributes=("username", "roles"),
        idp_initiated=True,
        default_relay_state="/home",
        logo_url="https://records.example/logo.png",
        start_url="https://records.example/login",
        agency_ids=("a1", "a2"),
    )
    return replace(sp, **changes)  # type: ignore[arg-type]


async def test_service_providers_round_trip_every_field(store: SqlStore) -> None:
    sp = _sp()
    async with store.transaction() as tx:
        await tx.saml_sps.add(sp)
    async with store.read() as tx:
        assert await tx.saml_sps.get(sp.id) == sp
        assert await tx.saml_sps.by_entity_id(sp.entity_id) == sp
        assert await tx.saml_sps.by_entity_id("https://other.example") is None
        assert await tx.saml_sps.get("sp_missing") is None
    disabled = replace(sp, disabled_at=T0 + timedelta(days=1), name="Records (old)")
    async with store.transaction() as tx:
        await tx.saml_sps.update(disabled)
    async with store.read() as tx:
        assert [s.name for s in await tx.saml_sps.list()] == ["Records (old)"]
        assert (await tx.saml_sps.get(sp.id)) == disabled
    assert disabled.default_acs.url == "https://records.example/acs2"  # the isDefault one, not index 0


async def test_an_entity_id_is_registered_once(store: SqlStore) -> None:
    async with store.transaction() as tx:
        await tx.saml_sps.add(_sp())
    with pytest.raises(Conflict) as caught:
        async with store.transaction() as tx:
            await tx.saml_sps.add(_sp())
    assert caught.value.code == "sp_exists"


async def test_certificates_list_newest_first_and_supersede_all_but_one(store: SqlStore) -> None:
    old = IdpCertificate("a" * 64, "PEM-A", "sealed-a", T0, T0)
    new = IdpCertificate("b" * 64, "PEM-B", "sealed-b", T0 + timedelta(hours=1), T0 + timedelta(days=7))
    async with store.transaction() as tx:
        await tx.saml_certs.add(old)
        await tx.saml_certs.add(new)
        assert await tx.saml_certs.supersede(T0 + timedelta(days=8), keep=new.id) == 1
        # Already given an end: a later one does not move it, an earlier one (a leaked key) does.
        assert await tx.saml_certs.supersede(T0 + timedelta(days=30), keep=new.id) == 0
        assert await tx.saml_certs.supersede(T0 + timedelta(days=2), keep=new.id) == 1
        assert await tx.saml_certs.supersede(T0 + timedelta(days=8), keep=new.id) == 0
    async with store.read() as tx:
        listed = await tx.saml_certs.list()
    assert [c.id for c in listed] == [new.id, old.id]
    assert listed[1].retire_after == T0 + timedelta(days=2) and listed[0].retire_after is None
    assert listed[0].active_from == T0 + timedelta(days=7)


async def test_pending_requests_answer_once_and_find_replays(store: SqlStore) -> None:
    sp = _sp()
    pending = PendingRequest(
        id=new_pending_id(),
        sp_id=sp.id,
        acs_url="https://records.example/acs",
        received_at=T0,
        expires_at=T0 + timedelta(minutes=15),
        request_id="_req1",
        relay_state="/x?y=1",
        force_authn=True,
        is_passive=False,
    )
    async with store.transaction() as tx:
        await tx.saml_sps.add(sp)
        await tx.saml_requests.add(pending)
    async with store.read() as tx:
        assert await tx.saml_requests.get(pending.id) == pending
        assert await tx.saml_requests.by_request_id(sp.id, "_req1") == pending
        assert await tx.saml_requests.by_request_id(sp.id, "_req2") is None
    # The same request ID from the same application is one row: the second insert conflicts.
    with pytest.raises(Conflict):
        async with store.transaction() as tx:
            await tx.saml_requests.add(replace(pending, id=new_pending_id()))
    async with store.transaction() as tx:
        assert await tx.saml_requests.answer(pending.id, T0 + timedelta(minutes=1)) is True
        assert await tx.saml_requests.answer(pending.id, T0 + timedelta(minutes=2)) is False
    async with store.read() as tx:
        answered = await tx.saml_requests.get(pending.id)
    assert answered is not None and answered.answered_at == T0 + timedelta(minutes=1)


async def test_idp_initiated_starts_without_request_ids_coexist_and_expired_ones_are_purged(store: SqlStore) -> None:
    sp = _sp()
    starts = [
        PendingRequest(new_pending_id(), sp.id, "https://records.example/acs", T0, T0 + timedelta(minutes=m))
        for m in (5, 20)
    ]
    async with store.transaction() as tx:
        await tx.saml_sps.add(sp)
        for start in starts:
            await tx.saml_requests.add(start)
        assert await tx.saml_requests.purge_expired(T0 + timedelta(minutes=10)) == 1
    async with store.read() as tx:
        assert await tx.saml_requests.get(starts[0].id) is None
        assert await tx.saml_requests.get(starts[1].id) == starts[1]
