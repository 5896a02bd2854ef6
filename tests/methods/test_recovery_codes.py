"""Recovery codes (NIST 800-63B look-up secrets): format, strength, matching and storage."""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime

import pytest

from alacop.methods import recovery_codes as rc

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
USER = str(uuid.uuid4())
FORMAT = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){5}")
# Holds every symbol that has a lookalike: 0 and 1.
KNOWN = "10AB-01CD-EF10-GH01-2345-6789"


def test_ten_codes_in_six_groups_of_four() -> None:
    codes = rc.generate()
    assert len(codes) == rc.COUNT == 10
    for code in codes:
        assert FORMAT.fullmatch(code), code


def test_alphabet_has_32_unambiguous_symbols() -> None:
    assert len(rc.ALPHABET) == 32
    assert len(set(rc.ALPHABET)) == 32
    assert not set("ILOU") & set(rc.ALPHABET)
    assert set(rc.ALPHABET) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def test_each_code_carries_at_least_112_bits() -> None:
    # 112 bits lets a plain salted hash store them (NIST 800-63B 5.1.2.2); the policy floor is 64.
    symbols = len(rc.generate()[0].replace("-", ""))
    assert symbols == 24
    assert symbols * math.log2(len(rc.ALPHABET)) >= 112


def test_codes_are_distinct_and_use_the_whole_alphabet() -> None:
    sets = [rc.generate() for _ in range(60)]
    every = [c for s in sets for c in s]
    assert len(set(every)) == len(every)
    assert all(len(set(s)) == 10 for s in sets)
    # 9,600 symbols: each of the 32 would appear ~300 times if drawn uniformly.
    seen = {ch for c in every for ch in c.replace("-", "")}
    assert seen == set(rc.ALPHABET)


def test_find_matches_only_the_right_code() -> None:
    codes = rc.generate()
    records = rc.records(USER, codes, NOW)
    for index in (0, 4, 9):
        found = rc.find(records, codes[index])
        assert found is not None
        assert found.id == records[index].id
    other = rc.generate()[0]
    assert rc.find(records, other) is None
    # A code that is spent (no longer in the unused list) does not match.
    assert rc.find(records[1:], codes[0]) is None
    assert rc.find([], codes[0]) is None


@pytest.mark.parametrize(
    "typed",
    [
        KNOWN.lower(),
        KNOWN.replace("-", ""),
        KNOWN.replace("-", " "),
        f"  {KNOWN}  ",
        "lOAB-OlCD-EFiO-GHOI-2345-6789",  # l, i, I for 1; O and o for 0
        "IoaB-oicd-efLo-ghoL-2345-6789",
        "10AB01CDEF10GH0123456789",
        "10ab–01cd–ef10–gh01–2345–6789",  # en dashes, as a word processor writes them
    ],
)
def test_typing_variants_are_normalised(typed: str) -> None:
    records = rc.records(USER, [KNOWN, rc.generate()[0]], NOW)
    found = rc.find(records, typed)
    assert found is not None
    assert found.id == records[0].id
    assert rc.normalise(typed) == KNOWN.replace("-", "")


@pytest.mark.parametrize(
    "typed",
    ["", "10AB-01CD-EF10-GH0", "10AB-01CD-EF10-GH011", "10AB-01CD-EF10-GH02", "X" * 200, "10AB-01CD-EF10"],
)
def test_wrong_length_or_wrong_symbols_are_refused(typed: str) -> None:
    assert rc.find(rc.records(USER, [KNOWN], NOW), typed) is None


def test_records_store_only_a_salted_hash() -> None:
    codes = rc.generate()
    records = rc.records(USER, codes, NOW)
    assert len(records) == 10
    assert len({r.salt for r in records}) == 10
    assert len({r.id for r in records}) == 10
    for code, record in zip(codes, records, strict=True):
        assert record.user_id == USER
        assert record.created_at == NOW
        assert record.used_at is None
        assert re.fullmatch(r"[0-9a-f]{32}", record.salt)
        assert re.fullmatch(r"[0-9a-f]{64}", record.code_hash)
        assert code not in record.code_hash
        assert code.replace("-", "") not in record.code_hash
        assert record.code_hash == rc.digest(code, record.salt)


def test_digest_is_salted() -> None:
    assert rc.digest(KNOWN, "salt-a") != rc.digest(KNOWN, "salt-b")
    assert rc.digest(KNOWN, "salt-a") == rc.digest(KNOWN.lower(), "salt-a")
    # The same code for two users (or twice) is stored as two different hashes.
    first, second = rc.records(USER, [KNOWN, KNOWN], NOW)
    assert first.code_hash != second.code_hash


def test_find_with_a_hash_from_another_salt_fails() -> None:
    record = rc.records(USER, [KNOWN], NOW)[0]
    other_salt = rc.records(USER, [KNOWN], NOW)[0].salt
    moved = type(record)(id=record.id, user_id=USER, code_hash=record.code_hash, salt=other_salt, created_at=NOW)
    assert rc.find([moved], KNOWN) is None
