"""Unit tests for session expiry (CJIS AC-11, AC-12) and bearer tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alacop.core.sessions import TOUCH_INTERVAL, EndReason, Session
from alacop.core.tokens import new_token, same, token_hash
from alacop.policy.cjis import Policy

POLICY = Policy()
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def session(last_seen: datetime = T0, absolute: timedelta = timedelta(hours=12)) -> Session:
    return Session(
        id_hash="h" * 64,
        user_id="u1",
        created_at=T0,
        last_seen_at=last_seen,
        expires_at=T0 + absolute,
        auth_time=T0,
        aal="aal1",
        amr=("pwd",),
        source_ip="203.0.113.7",
        user_agent="pytest",
    )


def test_fresh_session_is_live() -> None:
    assert session().expiry_reason(T0, POLICY) is None


def test_idle_boundary() -> None:
    s = session()
    assert s.expiry_reason(T0 + timedelta(minutes=30) - timedelta(microseconds=1), POLICY) is None
    assert s.expiry_reason(T0 + timedelta(minutes=30), POLICY) is EndReason.IDLE
    assert EndReason.IDLE == "idle_timeout"


def test_activity_postpones_idle() -> None:
    s = session(last_seen=T0 + timedelta(hours=2))
    assert s.expiry_reason(T0 + timedelta(hours=2, minutes=29), POLICY) is None
    assert s.expiry_reason(T0 + timedelta(hours=2, minutes=30), POLICY) is EndReason.IDLE


def test_absolute_boundary() -> None:
    end = T0 + timedelta(hours=12)
    s = session(last_seen=end - timedelta(minutes=1))
    assert s.expiry_reason(end - timedelta(microseconds=1), POLICY) is None
    assert s.expiry_reason(end, POLICY) is EndReason.ABSOLUTE
    assert EndReason.ABSOLUTE == "absolute_timeout"


def test_absolute_wins_over_idle() -> None:
    s = session()
    assert s.expiry_reason(T0 + timedelta(hours=13), POLICY) is EndReason.ABSOLUTE


def test_idle_follows_policy() -> None:
    policy = Policy(session_idle_minutes=10)
    s = session()
    assert s.expiry_reason(T0 + timedelta(minutes=9), policy) is None
    assert s.expiry_reason(T0 + timedelta(minutes=10), policy) is EndReason.IDLE


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (timedelta(0), False),
        (timedelta(seconds=59), False),
        (timedelta(seconds=60), True),
        (timedelta(hours=1), True),
    ],
)
def test_needs_touch(elapsed: timedelta, expected: bool) -> None:
    assert TOUCH_INTERVAL.total_seconds() == 60
    assert session().needs_touch(T0 + elapsed) is expected


def test_tokens() -> None:
    first, second = new_token(), new_token()
    assert first != second
    assert len(first) >= 43  # 32 bytes, URL-safe base64
    assert token_hash(first) != first
    assert len(token_hash(first)) == 64
    assert token_hash(first) == token_hash(first)
    assert token_hash(first) != token_hash(second)
    assert same(first, first) is True
    assert same(first, second) is False


def test_tightened_absolute_limit_applies_to_open_sessions() -> None:
    from datetime import UTC, datetime, timedelta

    from alacop.core.sessions import EndReason, Session
    from alacop.policy.cjis import Policy

    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    session = Session(
        "h",
        "u",
        t0,
        t0 + timedelta(hours=5, minutes=59),
        t0 + timedelta(hours=12),
        t0,
        "aal1",
        ("pwd",),
        "ip",
        "ua",
    )
    assert session.expiry_reason(t0 + timedelta(hours=6), Policy()) is None
    assert session.expiry_reason(t0 + timedelta(hours=6), Policy(session_absolute_hours=6)) is EndReason.ABSOLUTE
