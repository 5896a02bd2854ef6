"""The command line operators script against: users, unlock, audit verify and export, banned list."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from alacop.cli import main
from tests.conftest import STRONG, Harness, run_async


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ALACOP_DATABASE_URL", database_url)
    monkeypatch.setenv("ALACOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ALACOP_SECRET_KEY", "k" * 40)
    monkeypatch.delenv("ALACOP_AUDIT_HMAC_KEY", raising=False)
    return database_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def tamper(url: str, *statements: str) -> None:
    """What an intruder with database access does: drop the append-only guard, then edit."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
        conn.close()
        return

    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    run_async(go)


def seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(capsys, "agencies", "create", "AL0010000", "Test County Sheriff", "--email-domain", "test.al.gov")[0] == 0
    )
    for name in ("cs0101", "cs0102", "cs0103"):
        assert run(capsys, "users", "create", name, "--agency", "AL0010000", "--email", f"{name}@test.al.gov")[0] == 0


# -- users -------------------------------------------------------------------------------------------
def test_users_create_prints_a_temporary_password(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "agencies", "create", "AL0010000", "Test County Sheriff")
    code, out, _ = run(
        capsys,
        "users",
        "create",
        "cs0101",
        "--agency",
        "al0010000",
        "--email",
        "c@test.al.gov",
        "--name",
        "Casey Smith",
        "--role",
        "coordinator",
    )
    assert code == 0
    temp = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("temporary password"))
    assert len(temp) == 20
    code, out, _ = run(capsys, "users", "list", "--agency", "AL0010000")
    assert "cs0101\tcoordinator\tactive\tAL0010000\tnever" in out


def test_users_create_with_password_stdin(
    cli_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, "agencies", "create", "AL0010000", "Test County Sheriff")
    monkeypatch.setattr("sys.stdin", io.StringIO("password\n"))
    code, _, err = run(
        capsys, "users", "create", "cs0101", "--agency", "AL0010000", "--email", "c@t.gov", "--password-stdin"
    )
    assert code == 2 and "common or breached" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(STRONG + "\n"))
    code, out, _ = run(
        capsys, "users", "create", "cs0101", "--agency", "AL0010000", "--email", "c@t.gov", "--password-stdin"
    )
    assert code == 0 and "temporary password" not in out and STRONG not in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("agencies", "create", "AL123", "Short ORI"), "ORI is 9 characters"),
        (("users", "create", "cs0101", "--agency", "AL9999999", "--email", "a@b.gov"), "no agency"),
        (("users", "create", "Bad Name!", "--agency", "AL0010000", "--email", "a@b.gov"), "username"),
        (("users", "create", "cs0102", "--agency", "AL0010000", "--email", "not-an-email"), "email"),
        (("users", "unlock", "nobody"), "no user"),
        (("audit", "export", "--since", "yesterday"), "--since"),
    ],
)
def test_errors_are_one_clear_line_and_exit_2(
    cli_env: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], needle: str
) -> None:
    run(capsys, "agencies", "create", "AL0010000", "Test County Sheriff")
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_duplicate_username_and_ori_are_refused(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(capsys)
    assert run(capsys, "agencies", "create", "AL0010000", "Again")[0] == 2
    code, _, err = run(capsys, "users", "create", "cs0101", "--agency", "AL0010000", "--email", "x@test.al.gov")
    assert code == 2 and "taken" in err


def test_config_error_stops_with_one_line_naming_the_setting(
    cli_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALACOP_PUBLIC_URL", "http://portal.example.gov")
    code, _, err = run(capsys, "migrate")
    assert code == 2
    assert err.startswith("alacop: public_url:")
    assert len(err.strip().splitlines()) == 1


def test_unlock_releases_a_locked_account(app_factory, cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    h: Harness = app_factory()
    h.create_user()
    for attempt in range(5):
        h.sign_in("cs0101", f"wrong {attempt}")
    assert h.sign_in().context["message_ids"] == ["account_locked"]
    code, out, _ = run(capsys, "users", "unlock", "cs0101")
    assert code == 0 and "unlocked cs0101" in out
    assert h.sign_in().url.path == "/apps"
    unlocked = [r for r in h.audit() if r.type == "AccountUnlocked"]
    assert unlocked and '"locked":true' in unlocked[-1].details


def test_disable_and_enable(app_factory, cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    h: Harness = app_factory()
    h.create_user()
    assert run(capsys, "users", "disable", "cs0101")[0] == 0
    assert h.sign_in().context["message_ids"] == ["account_disabled"]
    assert run(capsys, "users", "enable", "cs0101")[0] == 0
    assert h.sign_in().url.path == "/apps"
    disabled = next(r for r in h.audit() if r.type == "AccountDisabled")
    assert '"before":{"status":"active"}' in disabled.details and '"after":{"status":"disabled"}' in disabled.details


def test_update_banned_replaces_the_list(
    app_factory,
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    words = [f"quarterly-word-{i}" for i in range(1500)]
    source = tmp_path / "banned.txt"
    source.write_text("# updated list\n" + "\n".join(words) + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "passwords", "update-banned", str(source))
    assert code == 0 and "1500 entries" in out
    h: Harness = app_factory()
    assert "quarterly-word-7" in h.portal.deps.banned
    assert "BannedListUpdated" in h.audit_types()
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a\nb\n")
    assert run(capsys, "passwords", "update-banned", str(tiny))[0] == 2


# -- audit verify ------------------------------------------------------------------------------------
def test_verify_passes_on_an_untouched_chain(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(capsys)
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "intact: 4 records" in out


def test_verify_names_an_edited_record(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(capsys)
    tamper(cli_env, "UPDATE audit_events SET outcome = 'failure' WHERE seq = 2")
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1
    assert "record 2" in err and "does not match its hash" in err


def test_verify_names_a_deleted_record(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(capsys)
    tamper(cli_env, "DELETE FROM audit_events WHERE seq = 2")
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1 and "record 3" in err and "expected record 2" in err


def test_verify_catches_records_cut_from_the_end(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(capsys)
    tamper(cli_env, "DELETE FROM audit_events WHERE seq = 4")
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1 and "missing" in err


def test_verify_names_a_reordered_record(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(capsys)
    tamper(
        cli_env,
        "UPDATE audit_events SET seq = -1 WHERE seq = 2",
        "UPDATE audit_events SET seq = 2 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = -1",
    )
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1 and "record 2" in err


def test_hmac_chain_resists_a_recomputed_forgery(
    cli_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from alacop.core.audit import AuditChain, AuditRecord

    monkeypatch.setenv("ALACOP_AUDIT_HMAC_KEY", "h" * 40)
    seed(capsys)
    assert run(capsys, "audit", "verify")[0] == 0
    monkeypatch.setenv("ALACOP_AUDIT_HMAC_KEY", "wrong-key-" + "x" * 30)
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1 and "record 1" in err
    # An intruder without the key re-seals record 4 with plain SHA-256: still caught.
    monkeypatch.setenv("ALACOP_AUDIT_HMAC_KEY", "h" * 40)
    forged = AuditChain(None).digest(AuditRecord(4, "", "", "", "", None, None, None, None, "", "", "", "", "", ""))
    tamper(cli_env, f"UPDATE audit_events SET hash = '{forged}' WHERE seq = 4")
    assert run(capsys, "audit", "verify")[0] == 1


def test_the_database_refuses_to_edit_audit_events(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(capsys)
    if cli_env.startswith("sqlite"):
        conn = sqlite3.connect(cli_env.removeprefix("sqlite:///"))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit_events SET reason = 'x' WHERE seq = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit_events")
        conn.close()
        return

    async def go() -> None:
        conn = await asyncpg.connect(cli_env)
        try:
            for statement in (
                "UPDATE audit_events SET reason = 'x' WHERE seq = 1",
                "DELETE FROM audit_events",
            ):
                with pytest.raises(asyncpg.RaiseError, match="append-only"):
                    await conn.execute(statement)
        finally:
            await conn.close()

    run_async(go)


# -- audit export ------------------------------------------------------------------------------------
def test_export_streams_json_lines_within_the_window(
    app_factory,
    cli_env: str,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    from datetime import timedelta

    h: Harness = app_factory()
    h.create_user()
    start = h.clock.now()
    h.clock.advance(timedelta(hours=1))
    h.sign_in("cs0101", "wrong password here")
    h.clock.advance(timedelta(hours=1))
    h.sign_in()
    code, out, _ = run(capsys, "audit", "export")
    everything = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(everything) == len(h.audit()) - 1  # the export itself is audited after
    assert all(e["occurred_at"].endswith("Z") and len(e["occurred_at"]) == 27 for e in everything)
    since = (start + timedelta(minutes=30)).isoformat()
    until = (start + timedelta(minutes=90)).isoformat()
    code, out, _ = run(capsys, "audit", "export", "--since", since, "--until", until)
    window = [json.loads(line) for line in out.splitlines()]
    assert {e["type"] for e in window} == {"BannerAcknowledged", "LoginFailed"}
    assert h.audit_types()[-1] == "AuditExported"
    assert all("password" not in json.dumps(e["details"]).lower() or "[redacted]" in json.dumps(e) for e in window)


def test_command_line_actions_name_the_operator(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    import getpass

    seed(capsys)
    run(capsys, "users", "list")
    run(capsys, "audit", "verify")

    async def records() -> list:  # type: ignore[type-arg]
        from alacop.config import load_settings
        from alacop.wiring import build_deps

        deps = build_deps(load_settings())
        try:
            return [r async for r in deps.store.audit_reader.records()]
        finally:
            await deps.store.close()

    trail = run_async(records)
    assert all(r.user_agent.startswith(f"alacop-cli {getpass.getuser()}@") for r in trail)
    assert [r.type for r in trail][-2:] == ["AccountsListed", "AuditVerified"]
    assert trail[-1].outcome == "success"


def test_reseal_moves_stored_secrets_to_the_new_first_key(
    app_factory,
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    from cryptography.fernet import Fernet, InvalidToken

    old_key = Fernet.generate_key().decode()
    monkeypatch.setenv("ALACOP_ENCRYPTION_KEYS", old_key)
    h: Harness = app_factory(ALACOP_ENCRYPTION_KEYS=old_key)
    h.create_user()
    # The first use makes the token signing keys (ES256, RS256) and the SAML signing key, sealed too.
    assert h.client.get("/oauth/jwks").status_code == 200
    assert h.client.get("/saml/metadata").status_code == 200
    code, out, _ = run(capsys, "secrets", "new-key")
    new_key = out.strip()
    assert code == 0
    assert Fernet(new_key.encode())
    monkeypatch.setenv("ALACOP_ENCRYPTION_KEYS", f"{new_key},{old_key}")
    code, out, _ = run(capsys, "secrets", "reseal")
    assert code == 0
    assert "resealed 4 secrets" in out

    async def sealed() -> str:
        async with h.portal.deps.store.read() as db:
            user = await db.users.by_username("cs0101")
            assert user is not None
            return (await db.methods.for_user(user.id))[0].totp_secret or ""

    token = h.run(sealed)
    assert Fernet(new_key.encode()).decrypt(token.encode()).decode() == h.totp_secret
    with pytest.raises(InvalidToken):
        Fernet(old_key.encode()).decrypt(token.encode())
    # With only the new key the account still signs in: the old key can go.
    only_new = app_factory(ALACOP_ENCRYPTION_KEYS=new_key, clock=h.clock)
    only_new.totp_secret = h.totp_secret
    assert only_new.sign_in().url.path == "/apps"
    assert only_new.run(only_new.portal.oidc.keys.signer).alg == "ES256"
    assert only_new.run(only_new.portal.saml.certs.signer).key.key_size == 2048
    assert "SecretsResealed" in h.audit_types()


def test_reset_methods_after_reproofing(app_factory, cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    h: Harness = app_factory()
    h.create_user()
    assert h.sign_in().url.path == "/apps"
    code, _, err = run(capsys, "users", "reset-methods", "cs0101", "--note", "  ")
    assert code == 2
    assert "re-proofed" in err
    code, out, _ = run(capsys, "users", "reset-methods", "cs0101", "--note", "Badge and driver licence seen in person")
    assert code == 0
    assert "removed 1 methods and 10 recovery codes" in out
    # Every session ended, and the next sign-in sets up new methods after the password.
    assert h.client.get("/apps").url.path == "/login"
    h.client.cookies.clear()
    page = h.password(h.identifier("cs0101"), STRONG)
    assert page.template.name == "login/enroll.html"
    reset = next(r for r in h.audit() if r.type == "MethodsReset")
    assert "Badge and driver licence seen in person" in reset.details
    assert '"before":{"methods":1,"recovery_codes":10}' in reset.details


def test_maintenance_disables_an_old_inactive_account_and_prints_the_counts(  # type: ignore[no-untyped-def]
    app_factory, cli_env: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from alacop.core.clock import FrozenClock

    # The command reads the system clock: the account was created, and last used, 100 days ago.
    h: Harness = app_factory(clock=FrozenClock(datetime.now(UTC) - timedelta(days=100)))
    h.create_user("cs0101")
    h.create_user("cs0102")
    h.clock.set(datetime.now(UTC) - timedelta(days=80))
    assert h.sign_in("cs0102").url.path == "/apps"  # 10 days to go: warned
    code, out, _ = run(capsys, "maintenance", "--json")
    assert code == 0
    counts = json.loads(out)
    assert (counts["disabled_inactive"], counts["warned_inactive"], counts["errors"]) == (1, 1, 0)
    assert h.user("cs0101").status == "disabled"  # type: ignore[union-attr]
    assert h.user("cs0102").active  # type: ignore[union-attr]
    # No SMTP server: the two letters wait in the outbox.
    assert len(list((tmp_path / "data" / "outbox").glob("*.eml"))) == 2
    (ran,) = [r for r in h.audit() if r.type == "MaintenanceRun"]
    assert ran.user_agent.startswith("alacop-cli ")

    code, out, _ = run(capsys, "maintenance")
    assert code == 0
    lines = out.splitlines()
    assert "disabled_inactive: 0" in lines and "warned_inactive: 0" in lines and "errors: 0" in lines
    assert len([r for r in h.audit() if r.type == "MaintenanceRun"]) == 2
