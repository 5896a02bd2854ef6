"""`serve` runs account maintenance on its own, hourly, and survives a failing run."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from alacop.core.accounts import UserStatus
from alacop.web import app as web_app
from tests.conftest import Harness
from tests.support.mail import RecordingMailer


def _wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_app, "MAINTENANCE_FIRST_SECONDS", 0.0)
    monkeypatch.setattr(web_app, "MAINTENANCE_JITTER_SECONDS", 0.0)


def test_the_app_runs_maintenance_after_start(
    fast: None, app_factory: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_app, "MAINTENANCE_SECONDS", 0.05)
    h = app_factory(mailer=RecordingMailer())
    user = h.create_user("cs0101")
    h.clock.advance(timedelta(days=91))
    _wait_for(lambda: bool(h.events("AccountDisabled")))
    (event,) = h.events("AccountDisabled")
    assert (event.subject_id, event.reason) == (user.id, "inactive_90_days")
    assert h.user("cs0101").status is UserStatus.DISABLED  # type: ignore[union-attr]
    assert h.events("MaintenanceRun")[0].user_agent.startswith("alacop-maintenance serve@")
    assert h.client.get("/healthz").status_code == 200


def test_a_failing_run_is_logged_and_the_next_one_still_comes(
    fast: None,
    app_factory: Callable[..., Harness],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    real = web_app.run_maintenance

    async def flaky(deps: Any, ctx: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database away")
        return await real(deps, ctx)

    monkeypatch.setattr(web_app, "MAINTENANCE_SECONDS", 0.05)
    monkeypatch.setattr(web_app, "run_maintenance", flaky)
    h = app_factory(mailer=RecordingMailer())
    _wait_for(lambda: bool(h.events("MaintenanceRun")))
    assert len(calls) >= 2
    assert "maintenance failed" in caplog.text
    assert h.client.get("/healthz").status_code == 200
