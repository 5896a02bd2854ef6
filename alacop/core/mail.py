"""Outgoing mail: what the core asks for, and the notices it sends (never a secret in a message)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str


class Mailer(Protocol):
    async def send(self, mail: Mail) -> None: ...


@dataclass(frozen=True, slots=True)
class Notice:
    """A security notice (NIST 800-63B: tell the user of every change to their authenticators)."""

    subject: str
    lead: str


NOTICES = {
    "method_added": Notice("A sign-in method was added to your account", "A new sign-in method was added: {detail}."),
    "method_removed": Notice(
        "A sign-in method was removed from your account", "A sign-in method was removed: {detail}."
    ),
    "password_changed": Notice("Your AlaCOP password was changed", "The password of your AlaCOP account was changed."),
    "recovery_codes_regenerated": Notice(
        "New recovery codes were created for your account",
        "A new set of recovery codes was created; the codes you had before no longer work.",
    ),
    "recovery_code_used": Notice(
        "A recovery code was used to sign in to your account",
        "A recovery code was used to sign in to your account; {detail} unused codes are left.",
    ),
    "methods_reset": Notice(
        "Your AlaCOP sign-in methods were reset",
        "Your sign-in methods were reset by your agency; set them up again at your next sign-in.",
    ),
    "password_reset": Notice(
        "Your AlaCOP password was reset",
        "The password of your AlaCOP account was reset through “Can't access your account?”. "
        "Every session of the account was signed out.",
    ),
    "account_unlocked": Notice(
        "Your AlaCOP account was unlocked",
        "Your AlaCOP account was unlocked through “Can't access your account?”.",
    ),
    "account_locked": Notice(
        "Your AlaCOP account was locked",
        "Your AlaCOP account was locked after too many failed sign-in attempts.",
    ),
}


def compose(kind: str, *, to: str, name: str, username: str, portal: str, support: str, detail: str = "") -> Mail:
    notice = NOTICES[kind]
    body = (
        f"Hello {name},\n\n"
        f"{notice.lead.format(detail=detail)}\n\n"
        f"Account: {username}\n\n"
        "If this was you, there is nothing to do. If it was not, contact your agency coordinator or the "
        f"{support} at once: someone else may have your password.\n\n"
        f"This message was sent by {portal}. All transactions are monitored and logged.\n"
    )
    return Mail(to=to, subject=f"{portal}: {notice.subject}", body=body)


def letter(subject: str, *, to: str, name: str | None, portal: str, paragraphs: list[str]) -> Mail:
    """A message that is not a security notice: registration codes, decisions, activation, warnings.

    `name` None greets without one: for an address not confirmed yet, whose "name" anyone could type.
    """
    greeting = f"Hello {name}," if name else "Hello,"
    body = (
        f"{greeting}\n\n"
        + "\n\n".join(paragraphs)
        + (f"\n\nThis message was sent by {portal}. All transactions are monitored and logged.\n")
    )
    return Mail(to=to, subject=f"{portal}: {subject}", body=body)
