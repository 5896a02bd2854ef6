"""Authenticator-app codes (RFC 6238): time steps, skew, input tolerance, and the enrolment QR code."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlparse

import pyotp
import pytest

from alacop.methods import totp

SECRET = pyotp.random_base32(32)
# Mid-step, so neither edge of the 30-second window is involved by accident.
NOW = datetime(2026, 1, 5, 9, 0, 15, tzinfo=UTC)
STEP = int(NOW.timestamp()) // 30


def _code(offset: int, secret: str = SECRET) -> str:
    return pyotp.TOTP(secret).at(NOW, counter_offset=offset)


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_code_within_one_step_matches_its_own_step(offset: int) -> None:
    assert totp.matching_step(SECRET, _code(offset), NOW, skew=1) == STEP + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_code_two_or_more_steps_away_is_refused(offset: int) -> None:
    code = _code(offset)
    # A code of another step could by chance equal one inside the window: skip that one-in-a-million case.
    if code in {_code(o) for o in (-1, 0, 1)}:
        pytest.skip("random collision between time steps")
    assert totp.matching_step(SECRET, code, NOW, skew=1) is None


def test_zero_skew_accepts_only_the_current_step() -> None:
    assert totp.matching_step(SECRET, _code(0), NOW, skew=0) == STEP
    assert totp.matching_step(SECRET, _code(-1), NOW, skew=0) is None
    assert totp.matching_step(SECRET, _code(1), NOW, skew=0) is None


def test_step_boundary_belongs_to_the_new_step() -> None:
    boundary = datetime(2026, 1, 5, 9, 0, 30, tzinfo=UTC)
    code = pyotp.TOTP(SECRET).at(boundary)
    assert totp.matching_step(SECRET, code, boundary, skew=0) == int(boundary.timestamp()) // 30
    assert totp.matching_step(SECRET, code, boundary - timedelta(seconds=1), skew=0) is None


def test_code_for_another_secret_is_refused() -> None:
    other = pyotp.random_base32(32)
    code = _code(0, other)
    if code in {_code(o) for o in (-1, 0, 1)}:
        pytest.skip("random collision between secrets")
    assert totp.matching_step(SECRET, code, NOW, skew=1) is None


@pytest.mark.parametrize(
    "spaced",
    [
        lambda c: f"{c[:3]} {c[3:]}",
        lambda c: f" {c} ",
        lambda c: f"{c[:2]} {c[2:4]} {c[4:]}",
        lambda c: f"{c}\t",
        lambda c: f"\u00a0{c}",
    ],
)
def test_spaces_are_tolerated(spaced: object) -> None:
    assert totp.matching_step(SECRET, spaced(_code(0)), NOW, skew=1) == STEP  # type: ignore[operator]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c[:5],
        lambda c: c + "0",
        lambda c: "0" + c,
        lambda c: c[:5] + "a",
        lambda c: c.replace(c[0], "x", 1),
        lambda c: c[:3] + "-" + c[3:],
        lambda c: "".join(chr(0x0660 + int(d)) for d in c),  # Arabic-Indic digits are not ASCII digits
        lambda c: "",
        lambda c: "      ",
        lambda c: c * 3,
    ],
)
def test_anything_but_six_ascii_digits_is_refused(mangle: object) -> None:
    typed = mangle(_code(0))  # type: ignore[operator]
    assert totp.matching_step(SECRET, typed, NOW, skew=1) is None


def test_normalise_code_strips_whitespace_and_caps_length() -> None:
    assert totp.normalise_code(" 12 34\t56\n") == "123456"
    assert len(totp.normalise_code("1" * 1000)) == 16


def test_new_secret_is_160_bits_of_base32_and_random() -> None:
    secrets = {totp.new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        assert len(base64.b32decode(secret)) == 20


def test_provisioning_uri_names_issuer_account_and_parameters() -> None:
    uri = totp.provisioning_uri(SECRET, "cs0101@alacop.gov", "AlaCOP Portal")
    parsed = urlparse(uri)
    assert parsed.scheme == "otpauth"
    assert parsed.netloc == "totp"
    assert unquote(parsed.path) == "/AlaCOP Portal:cs0101@alacop.gov"
    query = parse_qs(parsed.query)
    assert query["secret"] == [SECRET]
    assert query["issuer"] == ["AlaCOP Portal"]
    assert query.get("digits", ["6"]) == ["6"]
    assert query.get("period", ["30"]) == ["30"]
    assert query.get("algorithm", ["SHA1"]) == ["SHA1"]
    again = pyotp.parse_uri(uri)
    assert isinstance(again, pyotp.TOTP)
    assert again.secret == SECRET
    assert again.digits == totp.DIGITS == 6
    assert again.interval == totp.PERIOD == 30
    # The URI's parameters give the codes the server accepts.
    assert totp.matching_step(SECRET, again.at(NOW), NOW, skew=0) == STEP


def test_qr_code_is_inline_svg_without_script() -> None:
    svg = totp.qr_svg(totp.provisioning_uri(SECRET, "cs0101@alacop.gov", "AlaCOP"))
    assert svg.lstrip().startswith("<svg")
    assert svg.rstrip().endswith("</svg>")
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg
    assert "<title>QR code for your authenticator app</title>" in svg
    lowered = svg.lower()
    assert "<script" not in lowered
    assert "<?xml" not in lowered
    assert "javascript:" not in lowered
    assert "href" not in lowered
    assert "<image" not in lowered
    assert re.search(r"\son[a-z]+\s*=", lowered) is None
    # The seed is drawn, never written out in the markup.
    assert SECRET not in svg


def test_qr_codes_differ_per_secret() -> None:
    a = totp.qr_svg(totp.provisioning_uri(SECRET, "cs0101@alacop.gov", "AlaCOP"))
    b = totp.qr_svg(totp.provisioning_uri(pyotp.random_base32(32), "cs0101@alacop.gov", "AlaCOP"))
    assert a != b
