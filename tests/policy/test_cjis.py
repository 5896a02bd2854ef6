"""Unit tests for the shipped CJIS policy and its overrides."""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta

import pytest

from alacop.core.errors import ConfigError
from alacop.policy.cjis import Policy, policy_from_mapping

CJIS_TABLE = {
    "password_min_length": 8,
    "password_max_length": 256,
    "password_max_age_days": 365,
    "lockout_threshold": 5,
    "lockout_window_minutes": 15,
    "session_idle_minutes": 30,
    "session_absolute_hours": 12,
    "inactive_disable_days": 90,
    "identifier_reuse_days": 365,
}


@pytest.mark.parametrize(("name", "value"), CJIS_TABLE.items())
def test_defaults_match_cjis(name: str, value: int) -> None:
    assert getattr(Policy(), name) == value


def test_switches_default_off() -> None:
    assert Policy().passkey_sign_in is False
    assert Policy().social_sign_in is False


def test_durations() -> None:
    policy = Policy()
    assert policy.lockout_window == timedelta(minutes=15)
    assert policy.session_idle == timedelta(minutes=30)
    assert policy.session_absolute == timedelta(hours=12)
    assert policy.password_max_age == timedelta(days=365)
    assert policy.flow_lifetime == timedelta(minutes=policy.flow_lifetime_minutes)


def test_describe_lists_every_field_with_a_source() -> None:
    policy = Policy()
    described = policy.describe()
    assert [name for name, _, _ in described] == [f.name for f in fields(Policy)]
    for name, value, source in described:
        assert value == getattr(policy, name)
        assert source.strip(), name


def test_describe_cites_cjis_controls() -> None:
    sources = {name: source for name, _, source in Policy().describe()}
    assert "AC-7" in sources["lockout_threshold"]
    assert "AC-11" in sources["session_idle_minutes"]
    assert "IA-5" in sources["password_max_age_days"]


def test_describe_reports_overridden_values() -> None:
    described = {name: value for name, value, _ in Policy(lockout_threshold=3).describe()}
    assert described["lockout_threshold"] == 3


def test_policy_from_mapping_accepts_strings_and_ints() -> None:
    policy = policy_from_mapping({"lockout_threshold": " 4 ", "session_idle_minutes": 20})
    assert policy.lockout_threshold == 4
    assert policy.session_idle_minutes == 20
    assert policy_from_mapping({}) == Policy()


@pytest.mark.parametrize(("name", "value"), CJIS_TABLE.items())
def test_cjis_defaults_are_themselves_accepted(name: str, value: int) -> None:
    assert getattr(policy_from_mapping({name: value}), name) == value


@pytest.mark.parametrize("value", ["-1", "1.5", "", None, [5]])
def test_policy_from_mapping_refuses_non_integers(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        policy_from_mapping({"lockout_threshold": value})
    assert str(info.value).startswith("policy.lockout_threshold:")


def test_policy_from_mapping_prefix() -> None:
    with pytest.raises(ConfigError) as info:
        policy_from_mapping({"lockout_threshold": 9}, prefix="tenant.policy")
    assert str(info.value).startswith("tenant.policy.lockout_threshold:")
