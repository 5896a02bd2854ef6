"""Mail in tests: a real SMTP server (aiosmtpd) that keeps what it accepts, and an in-memory mailer."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from alacop.core.mail import Mail
from alacop.help.build import free_port


@dataclass
class Inbox:
    """Collects what the SMTP server accepted."""

    envelopes: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(bytes(e.content or b""), policy=email.policy.default)  # type: ignore[misc]
            for e in self.envelopes
        ]


def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@dataclass
class RecordingMailer:
    """Keeps every message in memory; `fail` makes sending raise, as an SMTP outage would."""

    sent: list[Mail] = field(default_factory=list)
    fail: bool = False

    async def send(self, mail: Mail) -> None:
        if self.fail:
            raise OSError("mail server unreachable")
        self.sent.append(mail)

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.sent if m.to == address]

    def last(self, address: str) -> Mail:
        mails = self.to(address)
        assert mails, f"no mail to {address}; sent to {[m.to for m in self.sent]}"
        return mails[-1]


def find(pattern: str, text: str) -> str:
    """The first group of `pattern` in a message body, or a failed assertion naming what was missing."""
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return match.group(1)
