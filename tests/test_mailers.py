"""Mailer implementations against a real in-process SMTP server, and the choice between them."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from alacop.config import load_settings
from alacop.core.mail import Mail, compose
from alacop.help.build import free_port
from alacop.mailers import OutboxMailer, SmtpMailer, build_mailer
from tests.test_notifications import Inbox

MAIL = compose(
    "method_added",
    to="cs0101@test.al.gov",
    name="Casey Smith",
    username="cs0101@alacop.gov",
    portal="AlaCOP",
    support="ALEA Support Center",
    detail="Authenticator app “Work phone”",
)


class Authenticator:
    def __init__(self) -> None:
        self.logins: list[tuple[str, str]] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login = (data.login.decode(), data.password.decode())
        self.logins.append(login)
        return AuthResult(success=login == ("relay-user", "relay-pass"))


@pytest.fixture
def server() -> Iterator[tuple[Inbox, int, Authenticator]]:
    inbox, auth, port = Inbox(), Authenticator(), free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=auth, auth_require_tls=False, auth_required=False
    )
    controller.start()
    try:
        yield inbox, port, auth
    finally:
        controller.stop()


def _settings(tmp_path: Path, **env: str) -> Any:
    return load_settings(
        {
            "ALACOP_ENV": "development",
            "ALACOP_DATA_DIR": str(tmp_path),
            "ALACOP_SECRET_KEY": "k" * 40,
            **env,
        }
    )


async def test_smtp_mailer_delivers_one_plain_text_message(server: tuple[Inbox, int, Authenticator]) -> None:
    inbox, port, auth = server
    await SmtpMailer("127.0.0.1", port, sender="AlaCOP <no-reply@alacop.gov>", starttls=False).send(MAIL)
    (envelope,) = inbox.envelopes
    assert envelope.mail_from == "no-reply@alacop.gov"
    assert envelope.rcpt_tos == ["cs0101@test.al.gov"]
    (message,) = inbox.messages()
    assert message["Subject"] == "AlaCOP: A sign-in method was added to your account"
    assert message["From"] == "AlaCOP <no-reply@alacop.gov>"
    assert message["Message-ID"].endswith("@alacop.gov>")
    assert message.get_content_type() == "text/plain"
    assert "Authenticator app “Work phone”" in message.get_content()
    assert auth.logins == []


@pytest.mark.filterwarnings("ignore::UserWarning")
async def test_smtp_mailer_logs_in_when_given_credentials(server: tuple[Inbox, int, Authenticator]) -> None:
    inbox, port, auth = server
    mailer = SmtpMailer(
        "127.0.0.1",
        port,
        sender="no-reply@alacop.gov",
        starttls=False,
        username="relay-user",
        password="relay-pass",
    )
    await mailer.send(MAIL)
    assert auth.logins == [("relay-user", "relay-pass")]
    assert len(inbox.envelopes) == 1


async def test_starttls_required_never_falls_back_to_plain_text(server: tuple[Inbox, int, Authenticator]) -> None:
    inbox, port, _ = server
    # The server offers no STARTTLS: the mailer must refuse rather than send the notice in the clear.
    with pytest.raises(Exception, match=r"(?i)starttls"):
        await SmtpMailer("127.0.0.1", port, sender="no-reply@alacop.gov", starttls=True).send(MAIL)
    assert inbox.envelopes == []


async def test_smtp_mailer_raises_when_the_server_is_down() -> None:
    with pytest.raises(OSError):
        await SmtpMailer("127.0.0.1", free_port(), sender="no-reply@alacop.gov", starttls=False).send(MAIL)


async def test_outbox_mailer_writes_one_eml_per_message(tmp_path: Path) -> None:
    folder = tmp_path / "nested" / "outbox"
    mailer = OutboxMailer(folder, sender="AlaCOP <no-reply@alacop.gov>")
    await mailer.send(MAIL)
    await mailer.send(Mail(to="other@test.al.gov", subject="Second", body="Body two"))
    files = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    assert len(files) == 2
    parsed = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]
    assert {m["To"] for m in parsed} == {"cs0101@test.al.gov", "other@test.al.gov"}
    first = next(m for m in parsed if m["To"] == "cs0101@test.al.gov")
    assert first["Auto-Submitted"] == "auto-generated"
    assert "Account: cs0101@alacop.gov" in first.get_content()  # type: ignore[attr-defined]


def test_mail_with_a_line_break_in_a_header_is_refused(tmp_path: Path) -> None:
    import asyncio

    mailer = OutboxMailer(tmp_path, sender="no-reply@alacop.gov")
    with pytest.raises(ValueError):
        asyncio.run(mailer.send(Mail(to="a@test.al.gov\nBcc: evil@example.com", subject="x", body="y")))
    assert list(tmp_path.glob("*.eml")) == []


def test_build_mailer_uses_smtp_only_when_a_host_is_set(tmp_path: Path) -> None:
    outbox = build_mailer(_settings(tmp_path))
    assert isinstance(outbox, OutboxMailer)
    smtp = build_mailer(
        _settings(
            tmp_path,
            ALACOP_SMTP_HOST="mail.example.gov",
            ALACOP_SMTP_PORT="2525",
            ALACOP_SMTP_STARTTLS="false",
            ALACOP_SMTP_USERNAME="u",
            ALACOP_SMTP_PASSWORD="p",
            ALACOP_MAIL_FROM="Portal <portal@example.gov>",
        )
    )
    assert isinstance(smtp, SmtpMailer)
    assert (smtp._host, smtp._port, smtp._starttls, smtp._sender) == (
        "mail.example.gov",
        2525,
        False,
        "Portal <portal@example.gov>",
    )
    assert (smtp._username, smtp._password) == ("u", "p")
    assert build_mailer(_settings(tmp_path, ALACOP_SMTP_HOST="mail.example.gov"))._starttls is True  # type: ignore[attr-defined]
