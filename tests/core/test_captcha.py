"""The self-hosted CAPTCHA: answers derived from (key, nonce), checked once, pictures and audio, the test seed."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alacop.config import load_settings
from alacop.core.captcha import ALPHABET, LENGTH, LIFETIME, Captcha, Challenge, answer_for, normalise
from alacop.core.errors import ConfigError

KEY = b"seed"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SECRET = "k" * 40


def _challenge(nonce: str = "nonce-1", issued_at: datetime = NOW) -> Challenge:
    return Challenge(nonce=nonce, issued_at=issued_at)


# -- answer_for ---------------------------------------------------------------------------------------
def test_answer_is_deterministic_per_key_and_nonce() -> None:
    assert answer_for(KEY, "abc") == answer_for(KEY, "abc")
    # Pinned: a change of derivation would silently break every test that computes answers from the seed.
    assert answer_for(b"seed", "abc") == "PWJYRP"
    assert answer_for(b"seed", "nonce-1") == "YMXDP4"


def test_answer_differs_across_nonces_and_keys() -> None:
    nonces = [f"nonce-{i}" for i in range(50)]
    answers = {answer_for(KEY, n) for n in nonces}
    # 20**6 possible answers: fifty nonces colliding more than once would mean the nonce is ignored.
    assert len(answers) >= 49
    by_key = {answer_for(k, "nonce-1") for k in (b"seed", b"seed2", b"another key", b"k" * 32)}
    assert len(by_key) == 4


def test_answer_has_six_symbols_from_the_alphabet_only() -> None:
    assert LENGTH == 6
    seen: set[str] = set()
    for i in range(300):
        answer = answer_for(KEY, f"n{i}")
        assert len(answer) == 6
        assert set(answer) <= set(ALPHABET), answer
        seen |= set(answer)
    # Every symbol of the alphabet turns up, and none of the confusable ones ever does.
    assert seen == set(ALPHABET)
    for confusable in "0O1IL2Z5S8BUVGQ":
        assert confusable not in seen


def test_normalise_uppercases_and_drops_whitespace() -> None:
    assert normalise(" ac d\tef\nh ") == "ACDEFH"
    assert len(normalise("a" * 100)) == 32


# -- check ---------------------------------------------------------------------------------------------
def test_check_accepts_the_right_answer_in_any_case_and_with_spaces() -> None:
    captcha = Captcha(KEY)
    challenge = _challenge()
    answer = answer_for(KEY, challenge.nonce)
    assert captcha.check(challenge, answer, NOW)
    assert captcha.check(challenge, answer.lower(), NOW)
    assert captcha.check(challenge, " ".join(answer.lower()), NOW)
    assert captcha.check(challenge, f"  {answer[:3]} {answer[3:]}  ", NOW)


def test_check_refuses_wrong_empty_and_other_keys_answers() -> None:
    captcha = Captcha(KEY)
    challenge = _challenge()
    answer = answer_for(KEY, challenge.nonce)
    wrong = next(c for c in ALPHABET if c != answer[0]) + answer[1:]
    assert not captcha.check(challenge, wrong, NOW)
    assert not captcha.check(challenge, "", NOW)
    assert not captcha.check(challenge, answer[:-1], NOW)
    assert not captcha.check(challenge, answer + "A", NOW)
    # The answer for another nonce, or for the same nonce under another key, is not this one's.
    assert not captcha.check(challenge, answer_for(KEY, "nonce-2"), NOW)
    assert not Captcha(b"other").check(challenge, answer, NOW)


def test_check_refuses_no_challenge() -> None:
    assert not Captcha(KEY).check(None, answer_for(KEY, "nonce-1"), NOW)


def test_check_refuses_an_expired_challenge() -> None:
    captcha = Captcha(KEY)
    challenge = _challenge()
    answer = answer_for(KEY, challenge.nonce)
    assert timedelta(minutes=5) == LIFETIME
    assert captcha.check(challenge, answer, NOW + LIFETIME)
    assert not captcha.check(challenge, answer, NOW + LIFETIME + timedelta(seconds=1))
    assert not captcha.check(challenge, answer, NOW + timedelta(hours=1))


def test_new_challenges_have_fresh_unguessable_nonces() -> None:
    challenges = [Captcha.new(NOW) for _ in range(20)]
    assert len({c.nonce for c in challenges}) == 20
    assert all(c.issued_at == NOW for c in challenges)
    assert all(len(c.nonce) >= 24 for c in challenges)


# -- media ---------------------------------------------------------------------------------------------
def test_picture_is_a_png() -> None:
    body = Captcha(KEY).picture("nonce-1")
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", body[16:24])
    assert (width, height) == (280, 90)
    assert len(body) > 1000


def test_audio_is_a_wav() -> None:
    body = Captcha(KEY).audio("nonce-1")
    assert body[:4] == b"RIFF"
    assert body[8:12] == b"WAVE"
    assert struct.unpack("<I", body[4:8])[0] == len(body) - 8
    assert len(body) > 20_000


# -- the test seed in settings ---------------------------------------------------------------------------
def test_seed_without_test_environment_is_a_config_error() -> None:
    for env in ({}, {"ALACOP_ENV": "development"}, {"ALACOP_ENV": "production"}):
        with pytest.raises(ConfigError, match="ALACOP_CAPTCHA_SEED"):
            load_settings({**env, "ALACOP_CAPTCHA_SEED": "seed", "ALACOP_SECRET_KEY": SECRET})


def test_seed_in_test_environment_is_the_captcha_key() -> None:
    settings = load_settings({"ALACOP_ENV": "test", "ALACOP_CAPTCHA_SEED": "seed", "ALACOP_SECRET_KEY": SECRET})
    assert settings.captcha_key == b"seed"
    assert Captcha(settings.captcha_key).check(_challenge(), answer_for(b"seed", "nonce-1"), NOW)


def test_without_seed_the_key_is_derived_from_the_secret_key() -> None:
    one = load_settings({"ALACOP_ENV": "test", "ALACOP_SECRET_KEY": SECRET})
    same = load_settings({"ALACOP_ENV": "test", "ALACOP_SECRET_KEY": SECRET})
    other = load_settings({"ALACOP_ENV": "test", "ALACOP_SECRET_KEY": "z" * 40})
    assert one.captcha_key != b"seed"
    assert one.captcha_key == same.captcha_key
    assert one.captcha_key != other.captcha_key
    assert len(one.captcha_key) == 32
    # Not the secret itself, nor the other key derived from it.
    assert one.captcha_key != SECRET.encode()
    assert one.captcha_key != one.pepper


def test_seed_in_a_config_file_outside_test_environment_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "alacop.toml"
    config.write_text('env = "development"\ncaptcha_seed = "seed"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"captcha_seed|ALACOP_CAPTCHA_SEED"):
        load_settings({"ALACOP_CONFIG": str(config), "ALACOP_SECRET_KEY": SECRET})
