"""Unit tests for the sign-in identifier: username@domain, normalised."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alacop.core.errors import InvalidInput
from alacop.core.identifiers import MAX_IDENTIFIER_LENGTH, Identifier, WrongDomain, normalise_identifier

DOMAIN = "alacop.gov"


def code_of(raw: str) -> str:
    with pytest.raises(InvalidInput) as info:
        normalise_identifier(raw, DOMAIN)
    return info.value.code


@pytest.mark.parametrize(
    ("raw", "username"),
    [
        ("jsmith", "jsmith"),
        ("jsmith@alacop.gov", "jsmith"),
        ("  JSmith@AlaCOP.gov \t", "jsmith"),
        ("ｊｓｍｉｔｈ", "jsmith"),  # fullwidth letters, NFKC
        ("jsmith＠alacop.gov", "jsmith"),  # fullwidth at sign
        ("j.smith-2_x", "j.smith-2_x"),
        ("0day", "0day"),
        ("a" * 64, "a" * 64),
    ],
)
def test_normalises(raw: str, username: str) -> None:
    ident = normalise_identifier(raw, DOMAIN)
    assert ident == Identifier(username=username, domain=DOMAIN)
    assert ident.email == f"{username}@{DOMAIN}"


@pytest.mark.parametrize("raw", ["jsmith@gmail.com", "jsmith@alacop.gov.evil.com", "jsmith@sub.alacop.gov"])
def test_wrong_domain(raw: str) -> None:
    with pytest.raises(WrongDomain) as info:
        normalise_identifier(raw, DOMAIN)
    assert info.value.code == "wrong_domain"
    assert isinstance(info.value, InvalidInput)


@pytest.mark.parametrize("raw", ["", "   ", "\t\n", "\u3000"])
def test_missing(raw: str) -> None:
    assert code_of(raw) == "identifier_missing"


@pytest.mark.parametrize(
    "raw",
    [
        "j smith",
        "jsmith!",
        "-jsmith",
        ".jsmith",
        "_jsmith",
        "jsmïth",
        "a" * 65,
        "@alacop.gov",
        "a@b@alacop.gov",
        "jsmith@@alacop.gov",
        "x" * (MAX_IDENTIFIER_LENGTH + 1),
        "x" * (MAX_IDENTIFIER_LENGTH - len(DOMAIN)) + "@" + DOMAIN,
    ],
)
def test_invalid(raw: str) -> None:
    assert code_of(raw) == "identifier_invalid"


def test_newline_inside_the_identifier_is_refused() -> None:
    assert code_of("abc\n@alacop.gov") == "identifier_invalid"


LOCAL_CHARS = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
VALID_LOCAL = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
    st.text(LOCAL_CHARS, max_size=63),
)


@settings(max_examples=50, database=None)
@given(local=VALID_LOCAL, with_domain=st.booleans(), pad=st.sampled_from(["", " ", "\t", "  \n"]))
def test_property_valid_input_normalises(local: str, with_domain: bool, pad: str) -> None:
    raw = pad + (f"{local}@{DOMAIN.upper()}" if with_domain else local) + pad
    ident = normalise_identifier(raw, DOMAIN)
    assert ident.username == local.lower()
    assert ident.email == ident.email.lower()
    assert ident.email.endswith("@" + DOMAIN)
    assert normalise_identifier(ident.email, DOMAIN) == ident


MESSY = st.builds(
    lambda body, suffix: body + suffix,
    st.one_of(st.text(max_size=20), st.text("abcXYZ019._- @＠ＡＢｃ１\u3000\t", max_size=20)),
    st.sampled_from(["", "@alacop.gov", "@ALACOP.GOV", "＠ａｌａｃｏｐ．ｇｏｖ", "@other.gov", " "]),
)
REFUSAL_CODES = {"identifier_missing", "identifier_invalid", "wrong_domain"}


@settings(max_examples=50, database=None)
@given(raw=MESSY)
def test_property_any_text_is_normalised_or_refused(raw: str) -> None:
    ident: Identifier | None = None
    refusal = ""
    try:
        ident = normalise_identifier(raw, DOMAIN)
    except InvalidInput as exc:
        refusal = exc.code
    if ident is None:
        assert refusal in REFUSAL_CODES
        return
    assert ident.email == ident.email.lower()
    assert ident.email.endswith("@" + DOMAIN)
    assert ident.domain == DOMAIN
    assert "@" not in ident.username
    assert normalise_identifier(ident.email, DOMAIN) == ident
