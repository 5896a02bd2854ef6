"""`alacop registrations list|approve|deny`: the operator's way to the agency queue."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from alacop.core.audit import AuditChain
from alacop.core.clock import FrozenClock
from alacop.core.registration import Application, Registration, RegistrationStatus
from alacop.store.sql import SqlStore
from tests.conftest import run_async
from tests.test_cli import cli_env, run  # noqa: F401 - the fixture is shared

NOW = datetime.now(UTC)


def _pending(url: str, email: str) -> str:
    async def go() -> str:
        store = SqlStore.open(url, AuditChain(None), FrozenClock(NOW))
        try:
            async with store.transaction() as tx:
                agency = await tx.agencies.by_ori("AL0010000")
                assert agency is not None
                registration = Registration(
                    id=str(uuid.uuid4()),
                    application=Application(
                        first_name="Casey",
                        last_name="Smith",
                        agency_id=agency.id,
                        title="Officer",
                        email=email,
                        phone="334 555 0100",
                        supervisor="Sgt. Lee",
                        reason="Patrol.",
                        training_date=date.today() - timedelta(days=10),
                        rules_sha256="0" * 64,
                    ),
                    status=RegistrationStatus.PENDING,
                    created_at=NOW,
                    expires_at=NOW + timedelta(days=30),
                    status_token_hash=uuid.uuid4().hex,
                )
                await tx.registrations.add(registration)
            return registration.id
        finally:
            await store.close()

    return run_async(go)


def test_list_approve_and_deny(cli_env: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    assert run(capsys, "agencies", "create", "AL0010000", "Test County", "--email-domain", "test.al.gov")[0] == 0
    first = _pending(cli_env, "casey@test.al.gov")
    second = _pending(cli_env, "other@test.al.gov")
    code, out, _ = run(capsys, "registrations", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and {r["id"] for r in rows} == {first, second}
    assert {r["agency"] for r in rows} == {"AL0010000"} and {r["status"] for r in rows} == {"pending"}

    code, out, _ = run(capsys, "registrations", "approve", first)
    assert code == 0 and "account cs0101 created" in out
    # The activation link went to the outbox (no SMTP configured), never to the terminal.
    assert "token" not in out
    outbox = list((tmp_path / "data" / "outbox").glob("*.eml"))
    assert any(b"/activate?token=" in p.read_bytes() for p in outbox)

    code, _, err = run(capsys, "registrations", "deny", second, "--reason", "   ")
    assert code != 0 and "reason" in err
    code, out, _ = run(capsys, "registrations", "deny", second, "--reason", "Unknown to the agency.")
    assert code == 0
    code, out, _ = run(capsys, "registrations", "list")
    assert code == 0 and out.strip() == ""
    code, out, _ = run(capsys, "registrations", "list", "--status", "all")
    assert "approved" in out and "denied" in out

    code, _, err = run(capsys, "registrations", "approve", first)
    assert code != 0 and "already" in err
    code, _, err = run(capsys, "registrations", "approve", str(uuid.uuid4()))
    assert code != 0


def test_users_delete_retires_the_username(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert run(capsys, "agencies", "create", "AL0010000", "Test County", "--email-domain", "test.al.gov")[0] == 0
    first = _pending(cli_env, "casey@test.al.gov")
    assert run(capsys, "registrations", "approve", first)[0] == 0
    code, _, err = run(capsys, "users", "delete", "cs0101", "--confirm", "cs0102")
    assert code == 2 and "--confirm" in err
    code, out, _ = run(capsys, "users", "delete", "cs0101", "--confirm", "cs0101")
    assert code == 0 and "365 days" in out
    code, out, _ = run(capsys, "users", "list")
    assert "cs0101" not in out
    # The next Casey Smith does not get the deleted name back.
    second = _pending(cli_env, "casey2@test.al.gov")
    code, out, _ = run(capsys, "registrations", "approve", second)
    assert code == 0 and "cs0102" in out
    code, out, _ = run(capsys, "audit", "export")
    deleted = [json.loads(line) for line in out.splitlines() if '"AccountDeleted"' in line]
    assert len(deleted) == 1
    details = json.loads(deleted[0]["details"]) if isinstance(deleted[0]["details"], str) else deleted[0]["details"]
    assert details["before"]["username"] == "cs0101" and details["after"] is None
    code, _, err = run(capsys, "users", "delete", "cs0101", "--confirm", "cs0101")
    assert code != 0
