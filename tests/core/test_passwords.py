"""Unit tests for the password policy (NIST 800-63B / CJIS IA-5) and argon2id hashing."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alacop.core.passwords import (
    ARGON2_MEMORY_KIB,
    BannedList,
    PasswordHasher,
    check_password,
    normalise_password,
    temporary_password,
)
from alacop.policy.cjis import Policy

POLICY = Policy()
BANNED = BannedList.parse("# a comment\npassword\nletmein123\nCorrectHorse\n")


def code(
    password: str, *, username: str | None = None, banned: BannedList = BANNED, policy: Policy = POLICY
) -> str | None:
    problem = check_password(password, policy=policy, banned=banned, username=username)
    if problem is not None:
        assert problem.message
    return None if problem is None else problem.code


@pytest.fixture(scope="module")
def fast() -> PasswordHasher:
    return PasswordHasher(memory_cost=1024, time_cost=1)


@pytest.fixture(scope="module")
def default() -> PasswordHasher:
    return PasswordHasher()


# -- check_password ------------------------------------------------------------------------------


def test_length_bounds() -> None:
    assert code("x" * 7) == "password_too_short"
    assert code("x" * 8) is None
    assert code("x" * 256) is None
    assert code("x" * 257) == "password_too_long"
    assert code("") == "password_too_short"


def test_length_counts_nfkc_characters() -> None:
    # U+FB03 (ffi ligature) is one code point that NFKC expands to three: 6 typed, 8 counted.
    assert code("\ufb03abcde") is None
    # e + combining acute composes to one character: 8 typed, 7 counted.
    assert len("abcdefe\u0301") == 8
    assert code("abcdefe\u0301") == "password_too_short"
    assert len(normalise_password("abcdefe\u0301")) == 7


def test_length_follows_policy() -> None:
    policy = Policy(password_min_length=12, password_max_length=64)
    assert code("x" * 11, policy=policy) == "password_too_short"
    assert code("x" * 12, policy=policy) is None
    assert code("x" * 64, policy=policy) is None
    assert code("x" * 65, policy=policy) == "password_too_long"


@pytest.mark.parametrize("char", ["\x00", "\t", "\n", "\x7f", "\u200b", "\ue000", "\u0378"])
def test_unprintable_characters_refused(char: str) -> None:
    assert code(f"granite{char}harbor") == "password_unprintable"


def test_no_composition_rules() -> None:
    assert code("aaaaaaaaaaaa") is None
    assert code("12345678901234") is None
    assert code("all lower case words") is None


def test_spaces_and_unicode_allowed() -> None:
    assert code("granite harbor lantern") is None
    assert code("        ") is None
    assert code("contraseña segura") is None
    assert code("пароль-надёжный") is None


@pytest.mark.parametrize("password", ["xxjsmithxx", "JSMITH-harbor", "harbor-JSmith"])
def test_contains_username_case_insensitively(password: str) -> None:
    assert code(password, username="jsmith") == "password_contains_username"


def test_username_check_skipped_without_username() -> None:
    assert code("xxjsmithxx") is None
    assert code("xxjsmithxx", username="") is None


@pytest.mark.parametrize("password", ["password", "PASSWORD", "PassWord", "ｐａｓｓｗｏｒｄ", "correcthorse"])
def test_banned_case_insensitive(password: str) -> None:
    assert code(password) == "password_banned"


def test_banned_applies_only_to_whole_password() -> None:
    assert code("password is long enough") is None


@settings(max_examples=50, database=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + " !-_.", min_size=8, max_size=64))
def test_property_printable_ascii_of_allowed_length_is_accepted(password: str) -> None:
    assert code(password, banned=BannedList(frozenset())) is None


# -- BannedList ----------------------------------------------------------------------------------


def test_parse_skips_comments_and_blank_lines() -> None:
    banned = BannedList.parse("# header line\n\n   \npassword\n  Dragon  \n#hashtag\n")
    assert len(banned) == 3
    assert "password" in banned
    assert "dragon" in banned
    assert "#hashtag" in banned
    assert "# header line" not in banned
    assert "" not in banned


@pytest.fixture(scope="module")
def shipped() -> BannedList:
    return BannedList.load()


def test_shipped_list(shipped: BannedList) -> None:
    assert len(shipped) >= 10_000
    assert "password" in shipped
    assert "123456" in shipped
    assert "Password" in shipped
    assert "granite harbor lantern 77" not in shipped
    assert not any(word.startswith("# ") for word in shipped._words)


def test_shipped_list_refuses_common_password(shipped: BannedList) -> None:
    assert code("password", banned=shipped) == "password_banned"
    assert code("123456789", banned=shipped) == "password_banned"


def test_override_file_is_used(tmp_path: Path) -> None:
    override = tmp_path / "banned.txt"
    override.write_text("# local list\nonlyword1\nonlyword2\n", encoding="utf-8")
    banned = BannedList.load(override)
    assert len(banned) == 2
    assert "onlyword1" in banned
    assert "password" not in banned


def test_missing_override_falls_back_to_shipped(tmp_path: Path, shipped: BannedList) -> None:
    assert len(BannedList.load(tmp_path / "absent.txt")) == len(shipped)


# -- PasswordHasher ------------------------------------------------------------------------------


def test_default_parameters_in_hash(default: PasswordHasher) -> None:
    stored = default.hash("granite harbor lantern 77")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert ARGON2_MEMORY_KIB == 19456
    assert default.verify(stored, "granite harbor lantern 77") is True
    assert default.needs_rehash(stored) is False


def test_weak_parameters_need_rehash(default: PasswordHasher, fast: PasswordHasher) -> None:
    weak = fast.hash("granite harbor lantern 77")
    assert weak.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert default.needs_rehash(weak) is True
    # The old hash still verifies, so the user can sign in and be rehashed.
    assert default.verify(weak, "granite harbor lantern 77") is True


def test_verify(fast: PasswordHasher) -> None:
    stored = fast.hash("granite harbor")
    assert fast.verify(stored, "granite harbor") is True
    assert fast.verify(stored, "granite harbor ") is False
    assert fast.verify(stored, "Granite harbor") is False
    assert fast.verify(stored, "") is False


def test_hashes_are_salted(fast: PasswordHasher) -> None:
    assert fast.hash("granite harbor") != fast.hash("granite harbor")


def test_nfkc_equivalence(fast: PasswordHasher) -> None:
    stored = fast.hash("granite harbor")
    assert fast.verify(stored, "ｇranite harbor") is True  # fullwidth g
    fullwidth_stored = fast.hash("ｇｒａｎｉｔｅ harbor")
    assert fast.verify(fullwidth_stored, "granite harbor") is True


class _Spy:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def verify(self, stored: str, password: str) -> bool:
        self.calls.append((stored, password))
        return bool(self.inner.verify(stored, password))


def test_verify_without_a_hash_is_false_but_still_runs(fast: PasswordHasher, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy(fast._argon)
    monkeypatch.setattr(fast, "_argon", spy)
    assert fast.verify(None, "granite harbor") is False
    assert fast.verify("", "granite harbor") is False
    fast.burn("granite harbor")
    assert len(spy.calls) == 3
    assert all(stored.startswith("$argon2id$") for stored, _ in spy.calls)


def test_verify_none_is_false_even_for_the_dummy_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # Unknown accounts are checked against the dummy hash; matching it must still not sign anyone in.
    hasher = PasswordHasher(memory_cost=1024, time_cost=1)
    monkeypatch.setattr(hasher, "_dummy", hasher.hash("known dummy"))
    assert hasher.verify(None, "known dummy") is False
    assert hasher.verify(hasher._dummy, "known dummy") is True


@pytest.mark.parametrize("garbage", ["garbage", "", "$argon2id$v=19$m=1024,t=1,p=1$bad", "$2b$12$abcdefghijk"])
def test_garbage_hash(fast: PasswordHasher, garbage: str) -> None:
    if garbage:
        assert fast.verify(garbage, "granite harbor") is False
    assert fast.needs_rehash(garbage) is True


# -- temporary_password --------------------------------------------------------------------------


def test_temporary_password() -> None:
    first, second = temporary_password(), temporary_password()
    assert len(first) == 20
    assert first.isascii()
    assert first.isalnum()
    assert first != second
    assert code(first) is None


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
def test_line_and_paragraph_separators_are_not_printable(separator: str) -> None:
    from alacop.core.passwords import BannedList, check_password
    from alacop.policy.cjis import Policy

    problem = check_password(f"long enough{separator}passphrase", policy=Policy(), banned=BannedList(frozenset()))
    assert problem is not None
    assert problem.code == "password_unprintable"


def test_indented_comment_is_not_a_banned_word() -> None:
    from alacop.core.passwords import BannedList

    banned = BannedList.parse("  # a comment\nhunter2\n")
    assert len(banned) == 1
    assert "# a comment" not in banned
