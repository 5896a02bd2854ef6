"""Mailer implementations: SMTP for deployments, an outbox folder of .eml files for development."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from alacop.config import Settings
from alacop.core.mail import Mail, Mailer

log = logging.getLogger("alacop.mail")


def _message(mail: Mail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip("> ") or "alacop.local")
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(mail.body)
    return message


class SmtpMailer:
    def __init__(
        self, host: str, port: int, *, sender: str, starttls: bool = True, username: str = "", password: str = ""
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._starttls = starttls
        self._username = username
        self._password = password

    async def send(self, mail: Mail) -> None:
        await asyncio.to_thread(self._send, _message(mail, self._sender))

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self._host, self._port, timeout=15) as smtp:
            if self._starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self._username:
                smtp.login(self._username, self._password)
            smtp.send_message(message)


class OutboxMailer:
    """Writes each message to data/outbox/*.eml and logs one line: mail you can read without a server."""

    def __init__(self, folder: Path, *, sender: str) -> None:
        self._folder = folder
        self._sender = sender

    async def send(self, mail: Mail) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        path = self._folder / f"{uuid.uuid4().hex}.eml"
        path.write_bytes(bytes(_message(mail, self._sender)))
        log.info("mail to %s saved in %s (%s)", mail.to, path, mail.subject)


def build_mailer(settings: Settings) -> Mailer:
    if settings.smtp_host:
        return SmtpMailer(
            settings.smtp_host,
            settings.smtp_port,
            sender=settings.mail_from,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password,
        )
    return OutboxMailer(settings.data_dir / "outbox", sender=settings.mail_from)
