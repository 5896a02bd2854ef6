"""Security notices reach a real SMTP server, carry no secret, and never undo the change when mail fails."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pyotp
import pytest

from alacop.core.accounts import User
from alacop.help.build import free_port
from tests.conftest import STRONG, Harness
from tests.support.mail import Inbox, smtp_server

NEW = "a brand new passphrase 42"
EMAIL = "cs0101@test.al.gov"
ACCOUNT = "cs0101@alacop.gov"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    yield from smtp_server()


@pytest.fixture
def mailed(app_factory: Callable[..., Harness], smtp: tuple[Inbox, int]) -> tuple[Harness, Inbox]:
    inbox, port = smtp
    h = app_factory(ALACOP_SMTP_HOST="127.0.0.1", ALACOP_SMTP_PORT=port, ALACOP_SMTP_STARTTLS="false")
    return h, inbox


def _only(inbox: Inbox) -> EmailMessage:
    assert len(inbox.envelopes) == 1, [m["Subject"] for m in inbox.messages()]
    (envelope,) = inbox.envelopes
    assert envelope.rcpt_tos == [EMAIL]
    (message,) = inbox.messages()
    return message


def _check(message: EmailMessage, subject: str, *secrets: str) -> str:
    assert message["To"] == EMAIL
    assert message["Subject"] == f"AlaCOP: {subject}"
    assert message["Auto-Submitted"] == "auto-generated"
    assert "@" in message["From"] and message["Message-ID"]
    body = message.get_content()
    assert "Hello Casey Smith" in body
    assert f"Account: {ACCOUNT}" in body
    # Decoded body and headers both: quoted-printable soft breaks could hide a secret from the raw text.
    seen = "".join(f"{k}: {v}\n" for k, v in message.items()) + body + message.as_string()
    for secret in (STRONG, NEW, *secrets):
        assert secret and secret not in seen
        assert secret.replace(" ", "").lower() not in seen.replace(" ", "").lower()
    return str(body)


def _secrets(h: Harness) -> tuple[str, ...]:
    return (h.totp_secret, *h.recovery_codes)


def _page_token(h: Harness) -> str:
    return str(h.client.get("/account/security").context["csrf_token"])


def _add_totp(h: Harness, name: str) -> str:
    token = _page_token(h)
    started = h.client.post("/account/security/add", data={"csrf_token": token, "kind": "totp"})
    secret = str(started.context["totp_secret"]).replace(" ", "")
    flow = started.context["flow"]
    done = h.client.post(
        f"/account/security/add?flow={flow.id}",
        data={"csrf_token": token, "code": pyotp.TOTP(secret).at(h.clock.now()), "name": name},
        follow_redirects=False,
    )
    assert done.headers["location"] == "/account/security?done=method_added"
    return secret


def _methods(h: Harness, user: User) -> list[Any]:
    async def go() -> list[Any]:
        async with h.portal.deps.store.read() as db:
            return list(await db.methods.for_user(user.id))

    return h.run(go)


def _change_password(h: Harness) -> Any:
    token = str(h.client.get("/account/password").context["csrf_token"])
    return h.client.post(
        "/account/password",
        data={"csrf_token": token, "current_password": STRONG, "new_password": NEW, "confirm_password": NEW},
    )


# -- one notice per change ---------------------------------------------------------------------------
def test_signing_in_sends_nothing(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    h.create_user()
    assert h.sign_in().url.path == "/apps"
    assert inbox.envelopes == []


def test_method_added_notice(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    h.create_user()
    h.sign_in()
    new_secret = _add_totp(h, "Work phone")
    body = _check(_only(inbox), "A sign-in method was added to your account", new_secret, *_secrets(h))
    assert "Authenticator app “Work phone”" in body
    assert "NotificationFailed" not in h.audit_types()


def test_method_removed_notice(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    user = h.create_user()
    h.sign_in()
    new_secret = _add_totp(h, "Work phone")
    old = next(m for m in _methods(h, user) if m.name == "Test phone")
    inbox.envelopes.clear()
    removed = h.client.post(
        "/account/security/remove", data={"csrf_token": _page_token(h), "method_id": old.id}, follow_redirects=False
    )
    assert removed.headers["location"] == "/account/security?done=method_removed"
    body = _check(_only(inbox), "A sign-in method was removed from your account", new_secret, *_secrets(h))
    assert "Authenticator app “Test phone”" in body
    assert old.id not in body


def test_a_refused_removal_sends_nothing(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    user = h.create_user()
    h.sign_in()
    (only,) = _methods(h, user)
    refused = h.client.post(
        "/account/security/remove", data={"csrf_token": _page_token(h), "method_id": only.id}, follow_redirects=False
    )
    assert refused.headers["location"] == "/account/security?refused=method_last_required"
    assert inbox.envelopes == []


def test_password_changed_notice_after_sign_in(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    h.create_user()
    h.sign_in()
    done = _change_password(h)
    assert done.context["message_ids"] == ["password_changed"]
    body = _check(_only(inbox), "Your AlaCOP password was changed", *_secrets(h))
    assert "The password of your AlaCOP account was changed." in body


def test_password_changed_notice_for_the_forced_change_at_first_sign_in(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    h.create_user(must_change=True)
    page = h.sign_in()
    assert page.context["message_ids"] == ["password_temporary"]
    flow = page.context["flow"]
    done = h.finish(
        h.client.post(
            f"/login/new-password?flow={flow.id}",
            data={
                "csrf_token": flow.csrf_token,
                "current_password": STRONG,
                "new_password": NEW,
                "confirm_password": NEW,
            },
        )
    )
    assert done.url.path == "/apps"
    _check(_only(inbox), "Your AlaCOP password was changed", *_secrets(h))


def test_a_refused_password_change_sends_nothing(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    h.create_user()
    h.sign_in()
    token = str(h.client.get("/account/password").context["csrf_token"])
    refused = h.client.post(
        "/account/password",
        data={"csrf_token": token, "current_password": STRONG, "new_password": NEW, "confirm_password": "other"},
    )
    assert refused.status_code == 400
    assert inbox.envelopes == []


def test_recovery_codes_regenerated_notice(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    h.create_user()
    h.sign_in()
    shown = h.client.post("/account/security/recovery-codes", data={"csrf_token": _page_token(h)})
    codes = shown.context["codes"]
    assert len(codes) == 10
    body = _check(_only(inbox), "New recovery codes were created for your account", *codes, *_secrets(h))
    assert "the codes you had before no longer work" in body


def test_account_locked_notice_after_five_wrong_passwords(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    h.create_user()
    page = h.identifier("cs0101")
    wrong = [f"wrong guess number {i}" for i in range(5)]
    for guess in wrong[:4]:
        page = h.password(page, guess)
        assert page.context["message_ids"] == ["credentials_invalid"]
    assert inbox.envelopes == []
    locked = h.password(page, wrong[4])
    assert locked.context["message_ids"] == ["account_locked"]
    body = _check(_only(inbox), "Your AlaCOP account was locked", *wrong, *_secrets(h))
    assert "too many failed sign-in attempts" in body
    # A sixth attempt on the locked account sends no second notice.
    h.password(locked, "yet another guess")
    assert len(inbox.envelopes) == 1


def test_unknown_account_lock_sends_nothing(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    h.create_user()
    page = h.identifier("zz9999")
    for i in range(6):
        page = h.password(page, f"guess {i}")
    assert inbox.envelopes == []


def test_account_locked_notice_after_five_wrong_second_factors(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    h.create_user()
    page = h.password(h.identifier("cs0101"), STRONG)
    flow = h.flow_of(page)
    right = h.totp_code()
    wrong = f"{(int(right) + 500_000) % 1_000_000:06d}"
    for _ in range(5):
        flow = h.flow_of(page)
        page = h.client.post(
            f"/login/second-factor?flow={flow.id}",
            data={"csrf_token": flow.csrf_token, "code": wrong, "credential": ""},
        )
    assert "AccountLocked" in h.audit_types()
    _check(_only(inbox), "Your AlaCOP account was locked", *_secrets(h))


def test_account_locked_notice_after_five_wrong_passwords_at_reauth(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    h.create_user()
    h.sign_in()
    h.clock.advance(timedelta(minutes=11))
    for i in range(5):
        token = h.client.get("/account/reauth").context["csrf_token"]
        h.client.post("/account/reauth", data={"csrf_token": token, "password": f"guess {i}", "next": ""})
    assert h.client.get("/apps").url.path == "/login"
    _check(_only(inbox), "Your AlaCOP account was locked", *_secrets(h))


# -- failures ----------------------------------------------------------------------------------------
def test_smtp_down_the_change_still_succeeds_and_the_failure_is_audited(app_factory: Callable[..., Harness]) -> None:
    h = app_factory(ALACOP_SMTP_HOST="127.0.0.1", ALACOP_SMTP_PORT=free_port(), ALACOP_SMTP_STARTTLS="false")
    user = h.create_user()
    h.sign_in()
    _add_totp(h, "Work phone")
    assert sorted(m.name for m in _methods(h, user)) == ["Test phone", "Work phone"]
    done = _change_password(h)
    assert done.status_code == 200
    assert done.context["message_ids"] == ["password_changed"]
    types = h.audit_types()
    assert "MethodAdded" in types and "PasswordChanged" in types
    failures = [r for r in h.audit() if r.type == "NotificationFailed"]
    assert [r.reason for r in failures] == ["method_added", "password_changed"]
    assert all(r.outcome == "failure" and r.subject_id == user.id for r in failures)
    assert json.loads(failures[0].details)["error"] == "ConnectionRefusedError"
    # The new password is the one that works.
    h.client.cookies.clear()
    assert h.sign_in("cs0101", NEW).url.path == "/apps"


# -- the development outbox --------------------------------------------------------------------------
def test_outbox_mailer_writes_a_parseable_eml_file(app_factory: Callable[..., Harness], tmp_path: Path) -> None:
    h = app_factory()
    outbox = tmp_path / "data" / "outbox"
    h.create_user()
    h.sign_in()
    assert not outbox.exists() or list(outbox.iterdir()) == []
    _change_password(h)
    (path,) = list(outbox.glob("*.eml"))
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    body = _check(message, "Your AlaCOP password was changed", *_secrets(h))
    assert "monitored and logged" in body
    assert "NotificationFailed" not in h.audit_types()


def test_recovery_code_used_notice(mailed: tuple[Harness, Inbox]) -> None:
    h, inbox = mailed
    h.create_user()
    page = h.password(h.identifier("cs0101"), STRONG)
    flow = h.flow_of(page)
    h.client.post(f"/login/method?flow={flow.id}", data={"csrf_token": flow.csrf_token, "kind": "recovery_code"})
    done = h.client.post(
        f"/login/second-factor?flow={flow.id}",
        data={"csrf_token": flow.csrf_token, "code": h.recovery_codes[0], "credential": ""},
    )
    assert done.url.path == "/apps"
    body = _check(_only(inbox), "A recovery code was used to sign in to your account", *_secrets(h))
    assert "9 unused codes are left" in body


def test_methods_reset_notice(mailed: tuple[Harness, Inbox]) -> None:
    from alacop.core.context import RequestContext
    from alacop.core.directory import Directory

    h, inbox = mailed
    h.create_user()
    h.run(Directory(h.portal.deps).reset_methods, "cs0101", "ID badge checked in person", RequestContext.system())
    _check(_only(inbox), "Your AlaCOP sign-in methods were reset", *_secrets(h))
