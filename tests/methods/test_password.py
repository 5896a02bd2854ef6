"""Unit tests for PasswordMethod rules that need no storage: forced change and new-password problems."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from cryptography.fernet import Fernet

from alacop.core.accounts import Role, User, UserStatus
from alacop.core.clock import FrozenClock
from alacop.core.deps import Deps
from alacop.core.passwords import BannedList, PasswordHasher
from alacop.core.secretbox import SecretBox
from alacop.methods.password import PasswordMethod
from alacop.policy.cjis import Policy

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class _Untouchable:
    """Stands in for the store and the rate limiter; any use fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected use of {name}")


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(memory_cost=1024, time_cost=1)


def make_method(hasher: PasswordHasher, policy: Policy | None = None) -> PasswordMethod:
    deps = Deps(
        store=cast(Any, _Untouchable()),
        clock=FrozenClock(T0),
        policy=policy or Policy(),
        hasher=hasher,
        banned=BannedList.parse("password\nletmein123\n"),
        limiter=cast(Any, _Untouchable()),
        domain="alacop.gov",
        banner_sha256="0" * 64,
        box=SecretBox((Fernet.generate_key().decode(),)),
        mailer=cast(Any, _Untouchable()),
        captcha=cast(Any, _Untouchable()),
    )
    return PasswordMethod(deps)


def make_user(*, changed_at: datetime | None = T0, must_change: bool = False) -> User:
    return User(
        id="u1",
        username="jsmith",
        email="jsmith@alea.gov",
        name="J Smith",
        agency_id="g1",
        role=Role.USER,
        status=UserStatus.ACTIVE,
        password_hash=None,
        password_changed_at=changed_at,
        must_change_password=must_change,
        created_at=T0,
    )


def test_temporary_password_must_change(hasher: PasswordHasher) -> None:
    assert make_method(hasher).must_change(make_user(must_change=True), T0) == "temporary"


def test_temporary_wins_over_expired(hasher: PasswordHasher) -> None:
    user = make_user(must_change=True, changed_at=T0 - timedelta(days=400))
    assert make_method(hasher).must_change(user, T0) == "temporary"


def test_expiry_at_365_days(hasher: PasswordHasher) -> None:
    method, user = make_method(hasher), make_user()
    assert method.must_change(user, T0) is None
    assert method.must_change(user, T0 + timedelta(days=365) - timedelta(microseconds=1)) is None
    assert method.must_change(user, T0 + timedelta(days=365)) == "expired"
    assert method.must_change(user, T0 + timedelta(days=1000)) == "expired"


def test_expiry_follows_policy(hasher: PasswordHasher) -> None:
    method = make_method(hasher, Policy(password_max_age_days=90))
    assert method.must_change(make_user(), T0 + timedelta(days=89)) is None
    assert method.must_change(make_user(), T0 + timedelta(days=90)) == "expired"


def test_never_changed_is_expired(hasher: PasswordHasher) -> None:
    assert make_method(hasher).must_change(make_user(changed_at=None), T0) == "expired"


def test_problem_mismatch(hasher: PasswordHasher) -> None:
    problem = make_method(hasher).problem(make_user(), "granite harbor 77", "granite harbor 78")
    assert problem is not None
    assert problem.code == "password_mismatch"
    assert problem.message


def test_problem_mismatch_checked_before_policy(hasher: PasswordHasher) -> None:
    problem = make_method(hasher).problem(make_user(), "short", "shorter")
    assert problem is not None
    assert problem.code == "password_mismatch"


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("granite harbor 77", None),
        ("short", "password_too_short"),
        ("xxJSMITHxx", "password_contains_username"),
        ("LetMeIn123", "password_banned"),
    ],
)
def test_problem_applies_policy_with_the_username(hasher: PasswordHasher, password: str, code: str | None) -> None:
    problem = make_method(hasher).problem(make_user(), password, password)
    assert (problem.code if problem else None) == code


def test_needs_rehash(hasher: PasswordHasher) -> None:
    method = make_method(hasher)
    assert method.needs_rehash(make_user()) is False  # no hash at all
    current = hasher.hash("granite harbor 77")
    assert method.needs_rehash(replace(make_user(), password_hash=current)) is False
    weak = PasswordHasher(memory_cost=512, time_cost=1).hash("granite harbor 77")
    assert method.needs_rehash(replace(make_user(), password_hash=weak)) is True


async def test_verify_and_new_password(hasher: PasswordHasher) -> None:
    method = make_method(hasher)
    user = make_user(must_change=True, changed_at=None)
    assert await method.verify(None, "granite harbor 77") is False
    assert await method.verify(user, "granite harbor 77") is False  # no hash stored
    later = T0 + timedelta(days=1)
    changed = await method.with_new_password(user, "granite harbor 77", later)
    assert changed.password_changed_at == later
    assert changed.must_change_password is False
    assert await method.verify(changed, "granite harbor 77") is True
    assert await method.verify(changed, "granite harbor 78") is False
    assert method.must_change(changed, later) is None
