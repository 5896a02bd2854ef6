"""Unit tests for the audit chain: sealing, scrubbing and verification."""

from __future__ import annotations

import json
import re
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from alacop.core.audit import (
    GENESIS_HASH,
    AuditChain,
    AuditEvent,
    AuditRecord,
    EventType,
    Outcome,
    scrub,
    verify_chain,
)
from alacop.core.context import RequestContext

CTX = RequestContext(source_ip="203.0.113.7", user_agent="pytest", request_id="req-1")
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
KEY = b"k" * 32


def build(chain: AuditChain, count: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        event = AuditEvent(
            EventType.LOGIN_FAILED,
            Outcome.FAILURE,
            "invalid_credentials",
            subject_name=f"user{seq}@alacop.gov",
            details={"n": seq},
        )
        record = chain.seal(event, seq=seq, at=T0 + timedelta(seconds=seq), ctx=CTX, prev_hash=prev)
        records.append(record)
        prev = record.hash
    return records


def head_of(records: list[AuditRecord]) -> tuple[int, str]:
    return (records[-1].seq, records[-1].hash)


# -- seal and digest -----------------------------------------------------------------------------


def test_seal_links_records() -> None:
    records = build(AuditChain(), 3)
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev_hash == GENESIS_HASH
    assert records[1].prev_hash == records[0].hash
    assert records[2].prev_hash == records[1].hash
    assert len({r.hash for r in records}) == 3
    assert all(re.fullmatch(r"[0-9a-f]{64}", r.hash) for r in records)


def test_seal_copies_the_event_and_context() -> None:
    event = AuditEvent(
        EventType.LOGIN_SUCCEEDED,
        Outcome.SUCCESS,
        "ok",
        actor_id="a1",
        subject_id="u1",
        subject_name="jsmith@alacop.gov",
        agency_id="g1",
        details={"password": "hunter2", "b": 2, "a": 1},
    )
    record = AuditChain().seal(event, seq=7, at=T0, ctx=CTX, prev_hash="f" * 64)
    assert record.type == "LoginSucceeded"
    assert record.outcome == "success"
    assert (record.actor_id, record.subject_id, record.subject_name, record.agency_id) == (
        "a1",
        "u1",
        "jsmith@alacop.gov",
        "g1",
    )
    assert (record.source_ip, record.user_agent, record.request_id) == ("203.0.113.7", "pytest", "req-1")
    assert record.details == '{"a":1,"b":2,"password":"[redacted]"}'
    assert "hunter2" not in json.dumps(record.as_dict())
    assert record.as_dict()["details"] == {"a": 1, "b": 2, "password": "[redacted]"}
    assert record.hash == AuditChain().digest(record)


def test_seal_truncates_long_fields() -> None:
    event = AuditEvent(EventType.REQUEST_REFUSED, Outcome.FAILURE, "r" * 500, subject_name="s" * 400)
    ctx = RequestContext(source_ip="i" * 100, user_agent="u" * 1000, request_id="q" * 100)
    record = AuditChain().seal(event, seq=1, at=T0, ctx=ctx, prev_hash=GENESIS_HASH)
    assert len(record.reason) == 128
    assert record.subject_name is not None
    assert len(record.subject_name) == 254
    assert (len(record.source_ip), len(record.user_agent), len(record.request_id)) == (64, 512, 64)


def test_empty_subject_name_is_stored_as_none() -> None:
    event = AuditEvent(EventType.REQUEST_REFUSED, Outcome.FAILURE, subject_name="")
    assert AuditChain().seal(event, seq=1, at=T0, ctx=CTX, prev_hash=GENESIS_HASH).subject_name is None


HASHED_FIELDS = [f.name for f in fields(AuditRecord) if f.name != "hash"]


def _changed(value: object) -> object:
    if isinstance(value, int):
        return value + 1
    if value is None:
        return "x"
    return str(value) + "x"


@pytest.mark.parametrize("name", HASHED_FIELDS)
@pytest.mark.parametrize("key", [None, KEY], ids=["sha256", "hmac"])
def test_digest_covers_every_field(name: str, key: bytes | None) -> None:
    chain = AuditChain(key)
    record = build(chain, 1)[0]
    edited = replace(record, **{name: _changed(getattr(record, name))})
    assert chain.digest(edited) != record.hash


def test_digest_distinguishes_none_from_empty() -> None:
    chain = AuditChain()
    record = build(chain, 1)[0]
    assert record.actor_id is None
    assert chain.digest(replace(record, actor_id="")) != record.hash


def test_occurred_at_is_utc_with_microseconds() -> None:
    eastern = timezone(timedelta(hours=-5))
    at = datetime(2026, 1, 5, 4, 30, 15, 123, tzinfo=eastern)
    event = AuditEvent(EventType.LOGIN_SUCCEEDED, Outcome.INFO)
    record = AuditChain().seal(event, seq=1, at=at, ctx=CTX, prev_hash=GENESIS_HASH)
    assert record.occurred_at == "2026-01-05T09:30:15.000123Z"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", record.occurred_at)
    utc = AuditChain().seal(event, seq=1, at=at.astimezone(UTC), ctx=CTX, prev_hash=GENESIS_HASH)
    assert utc.occurred_at == record.occurred_at
    assert utc.hash == record.hash


# -- scrub ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "NEW_PASSWORD",
        "current_password",
        "token",
        "Token",
        "code",
        "secret",
        "SECRET",
        "csrf_token",
        "CSRF_Token",
        "session",
    ],
)
def test_scrub_redacts_secret_keys(key: str) -> None:
    assert scrub({key: "hunter2", "keep": "me"}) == {key: "[redacted]", "keep": "me"}


def test_scrub_keeps_other_values_and_truncates_strings() -> None:
    clean = scrub({"long": "x" * 2000, "short": "ok", "n": 5, "none": None, "flag": True})
    assert clean["long"] == "x" * 512
    assert (clean["short"], clean["n"], clean["none"], clean["flag"]) == ("ok", 5, None, True)


def test_scrub_redacts_non_string_secrets() -> None:
    assert scrub({"code": 123456}) == {"code": "[redacted]"}


def test_scrub_does_not_modify_its_input() -> None:
    details = {"password": "hunter2"}
    scrub(details)
    assert details == {"password": "hunter2"}


def test_scrub_redacts_nested_secret_keys() -> None:
    clean = scrub({"after": {"password": "hunter2", "name": "x"}})
    assert "hunter2" not in json.dumps(clean)


# -- verify_chain --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, KEY], ids=["sha256", "hmac"])
def test_intact_chain_verifies(key: bytes | None) -> None:
    chain = AuditChain(key)
    records = build(chain, 5)
    result = verify_chain(records, chain, head=head_of(records))
    assert result.ok is True
    assert result.checked == 5
    assert result.first_bad_seq is None
    assert verify_chain(records, chain).ok is True


def test_empty_chain() -> None:
    assert verify_chain([], AuditChain()).ok is True
    assert verify_chain([], AuditChain(), head=(0, GENESIS_HASH)).ok is True
    result = verify_chain([], AuditChain(), head=(3, "a" * 64))
    assert result.ok is False
    assert result.first_bad_seq == 1


def test_edited_record_detected() -> None:
    chain = AuditChain()
    records = build(chain, 5)
    records[2] = replace(records[2], outcome="success")
    result = verify_chain(records, chain)
    assert result.ok is False
    assert result.first_bad_seq == 3
    assert result.checked == 2
    assert "hash" in result.problem


def test_edited_and_resealed_record_breaks_the_next_link() -> None:
    chain = AuditChain()
    records = build(chain, 5)
    forged = replace(records[2], outcome="success")
    records[2] = replace(forged, hash=chain.digest(forged))
    result = verify_chain(records, chain)
    assert result.ok is False
    assert result.first_bad_seq == 4
    assert "link" in result.problem


def test_resealed_last_record_caught_by_head() -> None:
    chain = AuditChain()
    records = build(chain, 5)
    head = head_of(records)
    forged = replace(records[-1], outcome="success")
    records[-1] = replace(forged, hash=chain.digest(forged))
    assert verify_chain(records, chain).ok is True  # without a head the forgery is self-consistent
    result = verify_chain(records, chain, head=head)
    assert result.ok is False


def test_deleted_record_detected() -> None:
    chain = AuditChain()
    records = build(chain, 5)
    del records[1]
    result = verify_chain(records, chain)
    assert result.ok is False
    assert result.first_bad_seq == 3
    assert "expected record 2" in result.problem


def test_deleted_first_record_detected() -> None:
    chain = AuditChain()
    records = build(chain, 3)[1:]
    result = verify_chain(records, chain)
    assert result.ok is False
    assert result.first_bad_seq == 2


def test_reordered_records_detected() -> None:
    chain = AuditChain()
    records = build(chain, 5)
    records[1], records[2] = records[2], records[1]
    result = verify_chain(records, chain)
    assert result.ok is False
    assert result.first_bad_seq == 3


def test_renumbered_records_detected() -> None:
    chain = AuditChain()
    records = build(chain, 5)
    del records[1]
    records = [replace(r, seq=i) for i, r in enumerate(records, start=1)]
    result = verify_chain(records, chain)
    assert result.ok is False
    assert result.first_bad_seq == 2


def test_truncation_at_the_end_needs_the_head() -> None:
    chain = AuditChain()
    records = build(chain, 5)
    head = head_of(records)
    assert verify_chain(records[:3], chain).ok is True
    result = verify_chain(records[:3], chain, head=head)
    assert result.ok is False
    assert result.checked == 3
    assert result.first_bad_seq == 4
    assert "missing" in result.problem


def test_head_with_wrong_hash_detected() -> None:
    chain = AuditChain()
    records = build(chain, 3)
    assert verify_chain(records, chain, head=(3, "0" * 64)).ok is False


def test_hmac_and_sha256_digests_differ() -> None:
    plain, keyed = AuditChain(), AuditChain(KEY)
    record = build(plain, 1)[0]
    assert keyed.digest(record) != plain.digest(record)
    assert AuditChain(b"j" * 32).digest(record) != keyed.digest(record)


def test_wrong_key_fails_verification() -> None:
    records = build(AuditChain(KEY), 3)
    assert verify_chain(records, AuditChain(KEY)).ok is True
    result = verify_chain(records, AuditChain(b"j" * 32))
    assert result.ok is False
    assert result.first_bad_seq == 1
    assert verify_chain(records, AuditChain()).ok is False


def test_sha256_chain_fails_under_a_key() -> None:
    records = build(AuditChain(), 2)
    assert verify_chain(records, AuditChain(KEY)).ok is False
