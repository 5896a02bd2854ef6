"""Unit tests for the account validators."""

from __future__ import annotations

import pytest

from alacop.core.accounts import validate_domain, validate_email, validate_ori, validate_username
from alacop.core.errors import InvalidInput


def code_of(validator: object, value: str) -> str:
    assert callable(validator)
    with pytest.raises(InvalidInput) as info:
        validator(value)
    return info.value.code


@pytest.mark.parametrize(
    ("raw", "ori"),
    [
        ("AL0010000", "AL0010000"),
        ("al001000a", "AL001000A"),
        (" ALABCDEFG ", "ALABCDEFG"),
        ("GA1234567", "GA1234567"),
    ],
)
def test_valid_ori(raw: str, ori: str) -> None:
    assert validate_ori(raw) == ori


@pytest.mark.parametrize(
    "raw", ["", "AL001000", "AL00100000", "A10010000", "120010000", "AL-010000", "AL001 000", "AL00100é0"]
)
def test_invalid_ori(raw: str) -> None:
    assert code_of(validate_ori, raw) == "invalid_ori"


@pytest.mark.parametrize(
    ("raw", "username"),
    [
        ("jsmith", "jsmith"),
        (" JSmith ", "jsmith"),
        ("j.smith_2-x", "j.smith_2-x"),
        ("ab", "ab"),
        ("a" * 32, "a" * 32),
    ],
)
def test_valid_username(raw: str, username: str) -> None:
    assert validate_username(raw) == username


@pytest.mark.parametrize("raw", ["", "a", "a" * 33, "1jsmith", ".jsmith", "j smith", "jsmith@alacop.gov", "jsmïth"])
def test_invalid_username(raw: str) -> None:
    assert code_of(validate_username, raw) == "invalid_username"


@pytest.mark.parametrize(
    ("raw", "domain"),
    [
        ("alea.gov", "alea.gov"),
        (" ALEA.GOV ", "alea.gov"),
        ("dps.state.al.us", "dps.state.al.us"),
        ("a-b.co", "a-b.co"),
    ],
)
def test_valid_domain(raw: str, domain: str) -> None:
    assert validate_domain(raw) == domain


@pytest.mark.parametrize(
    "raw",
    ["", "localhost", "-alea.gov", "alea-.gov", "alea..gov", "alea.g", "alea.gov.", "ale a.gov", "a@b.gov"],
)
def test_invalid_domain(raw: str) -> None:
    assert code_of(validate_domain, raw) == "invalid_domain"


def test_domain_length_limit() -> None:
    label = "a" * 63
    assert validate_domain(f"{label}.gov") == f"{label}.gov"
    assert code_of(validate_domain, f"{'a' * 64}.gov") == "invalid_domain"
    long = ".".join([label] * 4) + ".gov"
    assert len(long) > 253
    assert code_of(validate_domain, long) == "invalid_domain"


@pytest.mark.parametrize(
    ("raw", "email"),
    [
        ("J.Smith@ALEA.gov", "J.Smith@alea.gov"),
        ("  jsmith@alea.gov  ", "jsmith@alea.gov"),
        ("first+tag@dps.state.al.us", "first+tag@dps.state.al.us"),
    ],
)
def test_valid_email(raw: str, email: str) -> None:
    assert validate_email(raw) == email


@pytest.mark.parametrize(
    "raw", ["", "jsmith", "@alea.gov", "jsmith@", "a@b@alea.gov", "j smith@alea.gov", f"{'a' * 65}@alea.gov"]
)
def test_invalid_email(raw: str) -> None:
    assert code_of(validate_email, raw) == "invalid_email"


def test_email_with_bad_domain_reports_the_domain() -> None:
    assert code_of(validate_email, "jsmith@localhost") == "invalid_domain"


@pytest.mark.parametrize("value", ["alßßß0", "ALSSSSSS\u0660", "AL00000\n0"])
def test_ori_must_be_plain_ascii(value: str) -> None:
    from alacop.core.accounts import validate_ori
    from alacop.core.errors import InvalidInput

    with pytest.raises(InvalidInput):
        validate_ori(value)
