"""Account upkeep (CJIS AC-2(3), training, stale requests) with an injected clock, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from alacop.core.accounts import Role, User, UserStatus
from alacop.core.approvals import Approvals
from alacop.core.authz import Actor
from alacop.core.clock import FrozenClock
from alacop.core.context import RequestContext
from alacop.core.directory import Directory
from alacop.core.mail import Mail
from alacop.core.maintenance import MaintenanceReport, run_maintenance
from alacop.core.registration import REQUEST_LIFETIME, Application, Registration, RegistrationStatus
from alacop.wiring import build_deps
from tests.conftest import STRONG, Harness, audit_details, make_settings
from tests.support.mail import Inbox, RecordingMailer, find, smtp_server

App = Callable[..., Harness]
CTX = RequestContext.system("maintenance-test")
DAY = timedelta(days=1)
NOTHING = MaintenanceReport()


@pytest.fixture
def mail() -> RecordingMailer:
    return RecordingMailer()


@pytest.fixture
def h(app_factory: App, mail: RecordingMailer) -> Harness:
    return app_factory(mailer=mail)


def run(h: Harness) -> MaintenanceReport:
    return h.run(run_maintenance, h.portal.deps, CTX)


def changed(report: MaintenanceReport, **counts: int) -> None:
    """The report's counts, ignoring the census of accounts without a training date."""
    assert replace(report, no_training_date=0) == MaintenanceReport(**counts)


def save(h: Harness, user: User) -> None:
    async def go() -> None:
        async with h.portal.deps.store.transaction() as tx:
            await tx.users.update(user)

    h.run(go)


def fresh(h: Harness, username: str) -> User:
    user = h.user(username)
    assert user is not None
    return user


def at(h: Harness, start: datetime, days: float) -> None:
    h.clock.set(start + timedelta(days=days))


def subjects(mail: RecordingMailer, address: str) -> list[str]:
    return [m.subject for m in mail.to(address)]


def sessions_of(h: Harness, user: User) -> list[Any]:
    async def go() -> list[Any]:
        async with h.portal.deps.store.read() as db:
            rows = await db.sessions.active_for_user(user.id)
        return list(rows)

    return h.run(go)


# -- inactivity (CJIS AC-2(3)) -----------------------------------------------------------------------
def test_inactive_account_is_warned_once_then_disabled_and_an_active_one_untouched(
    h: Harness, mail: RecordingMailer
) -> None:
    start = h.clock.now()
    idle = h.create_user("cs0101")
    assert h.sign_in("cs0101").url.path == "/apps"  # the last sign-in: day 0
    h.forget_session()
    h.create_user("cs0102")
    admin = h.create_user("ad0101", role=Role.ADMIN)
    assert len(sessions_of(h, idle)) == 1

    at(h, start, 70)
    assert h.sign_in("cs0102").url.path == "/apps"  # signs in on day 70: good until day 160
    h.forget_session()

    at(h, start, 75.9)
    changed(run(h))
    assert mail.sent == []

    at(h, start, 76.1)
    changed(run(h), warned_inactive=2)
    (warning,) = mail.to("cs0101@test.al.gov")
    assert warning.subject == "AlaCOP: Sign in or your account will be disabled"
    assert "will be disabled on April 5, 2026" in warning.body  # 2026-01-05 + 90 days
    assert "cs0101@alacop.gov" in warning.body
    assert "http" not in warning.body  # no link: a warning must not look like a phishing lure
    assert subjects(mail, "ad0101@test.al.gov") == [warning.subject]  # administrators are not exempt
    assert mail.to("cs0102@test.al.gov") == []
    events = [e for e in h.events("DisableWarningSent") if e.subject_id == idle.id]
    assert [(e.reason, audit_details(e)["disable_on"]) for e in events] == [("inactive_90_days", "2026-04-05")]
    assert fresh(h, "cs0101").meta["inactivity_warned_for"] == "2026-04-05"

    # Idempotent: again the same day, and every day up to the deadline, nothing more is sent.
    changed(run(h))
    at(h, start, 89.9)
    changed(run(h))
    assert len(mail.sent) == 2
    assert fresh(h, "cs0101").active

    at(h, start, 90.1)
    changed(run(h), disabled_inactive=2)
    user = fresh(h, "cs0101")
    assert user.status is UserStatus.DISABLED
    assert user.disabled_at == h.clock.now()
    assert sessions_of(h, idle) == []
    assert fresh(h, "ad0101").status is UserStatus.DISABLED
    (disabled,) = [e for e in h.events("AccountDisabled") if e.subject_id == idle.id]
    details = audit_details(disabled)
    assert disabled.reason == "inactive_90_days"
    assert disabled.actor_id is None
    assert details["before"] == {"status": "active"} and details["after"] == {"status": "disabled"}
    assert details["sessions_ended"] == 1
    assert details["inactive_disable_days"] == 90
    assert details["last_login_at"].startswith("2026-01-05T09:00:30")
    notice = mail.last("cs0101@test.al.gov")
    assert notice.subject == "AlaCOP: Your account was disabled after 90 days without use"
    assert "ask your agency's coordinator to enable it" in notice.body
    assert admin.id in {e.subject_id for e in h.events("AccountDisabled")}

    # The active account: no warning, still active.
    assert fresh(h, "cs0102").active
    assert mail.to("cs0102@test.al.gov") == []

    # A second run changes nothing; every run was audited with its counts.
    sent = len(mail.sent)
    assert run(h) == MaintenanceReport(no_training_date=1)
    assert len(mail.sent) == sent
    runs = h.events("MaintenanceRun")
    assert len(runs) == 6
    assert audit_details(runs[1])["warned_inactive"] == 2
    assert audit_details(runs[4])["disabled_inactive"] == 2
    assert audit_details(runs[5])["disabled_inactive"] == 0
    assert {r.outcome for r in runs} == {"success"}


def test_a_sign_in_after_the_warning_moves_the_date_and_allows_a_later_warning(
    h: Harness, mail: RecordingMailer
) -> None:
    start = h.clock.now()
    h.create_user("cs0101")
    at(h, start, 77)
    changed(run(h), warned_inactive=1)
    assert h.sign_in("cs0101").url.path == "/apps"
    h.forget_session()

    at(h, start, 91)
    changed(run(h))
    assert fresh(h, "cs0101").active
    at(h, start, 77 + 76.1)
    changed(run(h), warned_inactive=1)
    assert len(mail.to("cs0101@test.al.gov")) == 2
    assert "will be disabled on June 21, 2026" in mail.last("cs0101@test.al.gov").body  # day 77 + 90


def test_reenabled_account_is_not_disabled_again_at_once(h: Harness, mail: RecordingMailer) -> None:
    start = h.clock.now()
    h.create_user("cs0101")
    at(h, start, 95)
    changed(run(h), disabled_inactive=1)  # never warned (maintenance did not run): disabled all the same

    at(h, start, 96)
    h.run(Directory(h.portal.deps).set_status, "cs0101", UserStatus.ACTIVE, CTX, None)
    user = fresh(h, "cs0101")
    assert user.active
    assert user.meta["enabled_at"].startswith("2026-04-11T09:00:00")
    changed(run(h))
    assert fresh(h, "cs0101").active

    # 90 days from the re-enabling, unless the user signs in.
    at(h, start, 96 + 76)
    changed(run(h), warned_inactive=1)
    at(h, start, 96 + 90)
    changed(run(h), disabled_inactive=1)
    reasons = [(e.type, e.reason) for e in h.audit() if e.subject_id == user.id and e.type.startswith("Account")]
    assert reasons[-3:] == [
        ("AccountDisabled", "inactive_90_days"),
        ("AccountEnabled", ""),
        ("AccountDisabled", "inactive_90_days"),
    ]


def test_enabling_an_active_account_does_not_extend_it(h: Harness) -> None:
    start = h.clock.now()
    h.create_user("cs0101")
    at(h, start, 89)
    h.run(Directory(h.portal.deps).set_status, "cs0101", UserStatus.ACTIVE, CTX, None)
    assert "enabled_at" not in fresh(h, "cs0101").meta
    at(h, start, 90.5)
    changed(run(h), disabled_inactive=1)


# -- approved accounts, activated or not -----------------------------------------------------------
def _application(agency_id: str, email: str, trained: date) -> Application:
    return Application(
        first_name="Jordan",
        last_name="Reyes",
        agency_id=agency_id,
        title="Dispatcher",
        email=email,
        phone="(334) 555-0101",
        supervisor="Sgt. Dana Lee",
        reason="Dispatch.",
        training_date=trained,
        rules_sha256="0" * 64,
    )


def _pending(h: Harness, email: str, trained: date | None = None) -> Registration:
    deps = h.portal.deps
    now = h.clock.now()

    async def go() -> Registration:
        async with deps.store.transaction() as tx:
            agency = await tx.agencies.by_ori("AL0010000")
        if agency is None:
            agency = await Directory(deps).create_agency("AL0010000", "Test County Sheriff", ["test.al.gov"], CTX)
        registration = Registration(
            id=str(uuid.uuid4()),
            application=_application(agency.id, email, trained or now.date() - timedelta(days=10)),
            status=RegistrationStatus.PENDING,
            created_at=now,
            expires_at=now + REQUEST_LIFETIME,
            status_token_hash=uuid.uuid4().hex,
        )
        async with deps.store.transaction() as tx:
            await tx.registrations.add(registration)
        return registration

    return h.run(go)


def _approve(h: Harness, email: str) -> User:
    registration = _pending(h, email)
    return h.run(Approvals(h.portal.deps).approve, Actor.operator(), registration.id, CTX)


def test_never_activated_account_is_kept_at_first_then_disabled_after_90_days(
    h: Harness, mail: RecordingMailer
) -> None:
    start = h.clock.now()
    user = _approve(h, "jordan.reyes@test.al.gov")
    assert fresh(h, user.username).awaiting_activation
    at(h, start, 1)
    changed(run(h))
    at(h, start, 76)
    changed(run(h), warned_inactive=1)
    warning = mail.last("jordan.reyes@test.al.gov")
    assert warning.subject == "AlaCOP: Activate your account or it will be disabled"
    assert "ask your agency's coordinator for a new activation link" in warning.body
    at(h, start, 90)
    changed(run(h), disabled_inactive=1)
    assert fresh(h, user.username).status is UserStatus.DISABLED


def test_activation_counts_as_activity(h: Harness, mail: RecordingMailer) -> None:
    start = h.clock.now()
    user = _approve(h, "jordan.reyes@test.al.gov")
    token = find(r"token=(\S+)", mail.last("jordan.reyes@test.al.gov").body)
    at(h, start, 2)
    h.run(Approvals(h.portal.deps).activate, token, "a long activation passphrase 7", CTX)
    at(h, start, 91)  # 90 days from approval, 89 from activation
    changed(run(h), warned_inactive=1)
    assert fresh(h, user.username).active
    assert "will be disabled on April 7, 2026" in mail.last("jordan.reyes@test.al.gov").body
    at(h, start, 92)
    changed(run(h), disabled_inactive=1)


# -- security awareness training (CJIS 5.2) ----------------------------------------------------------
def _trained(h: Harness, username: str, days_ago: int) -> User:
    user = replace(fresh(h, username), training_date=h.clock.now().date() - timedelta(days=days_ago))
    save(h, user)
    return user


def test_lapsed_training_is_warned_then_disabled(h: Harness, mail: RecordingMailer) -> None:
    start = h.clock.now()
    h.create_user("cs0101")
    user = _trained(h, "cs0101", 340)  # trained 2025-01-30; lapses 2026-01-30
    changed(run(h))

    at(h, start, 10)  # 350 days old
    changed(run(h))
    at(h, start, 11)  # 351 days old: 14 days left
    changed(run(h), warned_training=1)
    warning = mail.last("cs0101@test.al.gov")
    assert warning.subject == "AlaCOP: Renew your security awareness training or your account will be disabled"
    assert "dated January 30, 2025" in warning.body
    assert "will be disabled on January 30, 2026" in warning.body
    (event,) = h.events("DisableWarningSent")
    assert (event.reason, audit_details(event)["disable_on"]) == ("training_lapsed", "2026-01-30")
    changed(run(h))

    at(h, start, 24.5)  # 364 days old
    changed(run(h))
    assert fresh(h, "cs0101").active
    at(h, start, 25)  # 365 days old
    changed(run(h), disabled_training=1)
    assert fresh(h, "cs0101").status is UserStatus.DISABLED
    disabled = [e for e in h.events("AccountDisabled") if e.subject_id == user.id]
    assert [(e.reason, audit_details(e)["training_date"]) for e in disabled] == [("training_lapsed", "2025-01-30")]
    notice = mail.last("cs0101@test.al.gov")
    assert notice.subject == "AlaCOP: Your account was disabled: security awareness training lapsed"
    assert "Complete the training" in notice.body
    assert len(mail.sent) == 2


def test_a_new_training_date_resets_the_rule(h: Harness, mail: RecordingMailer) -> None:
    start = h.clock.now()
    h.create_user("cs0101")
    _trained(h, "cs0101", 351)
    changed(run(h), warned_training=1)
    # The coordinator records this week's training.
    save(h, replace(fresh(h, "cs0101"), training_date=h.clock.now().date()))
    at(h, start, 14)
    changed(run(h))
    assert fresh(h, "cs0101").active
    # The user keeps signing in; a year on, the new date is warned of in its turn.
    user = replace(fresh(h, "cs0101"), last_login_at=start + timedelta(days=340))
    save(h, user)
    at(h, start, 351)
    changed(run(h), warned_training=1)
    assert "will be disabled on January 5, 2027" in mail.last("cs0101@test.al.gov").body


def test_reenabling_with_training_still_lapsed_disables_again_at_the_next_run(h: Harness) -> None:
    h.create_user("cs0101")
    _trained(h, "cs0101", 366)
    changed(run(h), disabled_training=1)
    h.run(Directory(h.portal.deps).set_status, "cs0101", UserStatus.ACTIVE, CTX, None)
    h.clock.advance(timedelta(hours=1))
    changed(run(h), disabled_training=1)
    assert fresh(h, "cs0101").status is UserStatus.DISABLED


def test_accounts_without_a_training_date_are_counted_not_disabled(h: Harness) -> None:
    h.create_user("cs0101")
    h.create_user("cs0102")
    _trained(h, "cs0102", 10)
    report = run(h)
    assert report.no_training_date == 1
    assert report.disabled_training == 0


# -- registration requests ---------------------------------------------------------------------------
def test_stale_registration_request_is_expired_once(h: Harness, mail: RecordingMailer) -> None:
    start = h.clock.now()
    registration = _pending(h, "late.applicant@test.al.gov")
    at(h, start, 29)
    changed(run(h))
    at(h, start, 30)
    changed(run(h), requests_expired=1)

    async def status() -> RegistrationStatus:
        async with h.portal.deps.store.read() as db:
            found = await db.registrations.get(registration.id)
        assert found is not None
        return found.status

    assert h.run(status) is RegistrationStatus.EXPIRED
    assert mail.last("late.applicant@test.al.gov").subject == "AlaCOP: Your registration request expired"
    changed(run(h))
    assert len(h.events("RegistrationExpired")) == 1


# -- mail failures -----------------------------------------------------------------------------------
def test_a_mail_failure_is_audited_retried_and_never_stops_the_run(app_factory: App) -> None:
    mail = RecordingMailer(fail=True)
    h = app_factory(mailer=mail)
    start = h.clock.now()
    user = h.create_user("cs0101")

    at(h, start, 80)
    changed(run(h), mail_failed=1)
    (failed,) = h.events("NotificationFailed")
    assert (failed.reason, failed.subject_id) == ("inactive_90_days_warning", user.id)
    assert audit_details(failed) == {"error": "OSError", "retried_next_run": True}
    assert "inactivity_warned_for" not in fresh(h, "cs0101").meta  # the claim was withdrawn

    mail.fail = False
    changed(run(h), warned_inactive=1)
    assert len(mail.sent) == 1
    changed(run(h))

    mail.fail = True
    at(h, start, 90)
    changed(run(h), disabled_inactive=1, mail_failed=1)
    assert fresh(h, "cs0101").status is UserStatus.DISABLED
    assert [e.reason for e in h.events("NotificationFailed")] == ["inactive_90_days_warning", "inactive_90_days"]
    assert [r.outcome for r in h.events("MaintenanceRun")] == ["success"] * 4


def test_one_failing_account_does_not_stop_the_others(
    h: Harness, mail: RecordingMailer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alacop.core import maintenance

    start = h.clock.now()
    broken = h.create_user("cs0101")
    h.create_user("cs0102")
    real = maintenance._disable_details

    def explode(user: User, reason: str, policy: Any) -> dict[str, object]:
        if user.id == broken.id:
            raise RuntimeError("boom")
        return real(user, reason, policy)

    monkeypatch.setattr(maintenance, "_disable_details", explode)
    at(h, start, 91)
    changed(run(h), disabled_inactive=1, errors=1)
    assert fresh(h, "cs0101").active  # its transaction rolled back whole
    assert fresh(h, "cs0102").status is UserStatus.DISABLED
    assert h.events("MaintenanceRun")[-1].outcome == "failure"


# -- several instances at once -----------------------------------------------------------------------
class SlowMailer(RecordingMailer):
    async def send(self, mail: Mail) -> None:
        await asyncio.sleep(0.02)  # widen any window two instances could both send in
        await super().send(mail)


def test_instances_running_at_once_warn_and_disable_once(h: Harness, database_url: str, tmp_path: Any) -> None:
    start = h.clock.now()
    for n in range(1, 6):
        h.create_user(f"cs010{n}")
    mailers = [SlowMailer() for _ in range(4)]

    async def together() -> list[MaintenanceReport]:
        settings = make_settings(database_url, tmp_path / "data")
        deps = [build_deps(settings, clock=h.clock, mailer=m) for m in mailers]
        try:
            return list(await asyncio.gather(*(run_maintenance(d, CTX) for d in deps)))
        finally:
            for d in deps:
                await d.store.close()

    at(h, start, 80)
    reports = h.run(together)
    assert sum(r.warned_inactive for r in reports) == 5
    assert sorted(m.to for mailer in mailers for m in mailer.sent) == [f"cs010{n}@test.al.gov" for n in range(1, 6)]
    assert len(h.events("DisableWarningSent")) == 5

    at(h, start, 90)
    reports = h.run(together)
    assert sum(r.disabled_inactive for r in reports) == 5
    assert len(h.events("AccountDisabled")) == 5
    assert sum(len(m.sent) for m in mailers) == 10


# -- a real SMTP server ------------------------------------------------------------------------------
@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    yield from smtp_server()


def test_warning_and_disabling_emails_reach_a_real_smtp_server(app_factory: App, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    h = app_factory(ALACOP_SMTP_HOST="127.0.0.1", ALACOP_SMTP_PORT=port, ALACOP_SMTP_STARTTLS="false")
    start = h.clock.now()
    user = h.create_user("cs0101")
    coordinator = h.create_user("co0101", role=Role.COORDINATOR)

    async def coordinate() -> None:
        async with h.portal.deps.store.transaction() as tx:
            await tx.agencies.set_coordinators(user.agency_id, [coordinator.id])
            # The coordinator signs in often; only cs0101 goes quiet.
            await tx.users.update(replace(coordinator, last_login_at=start + timedelta(days=85)))

    h.run(coordinate)
    at(h, start, 80)
    run(h)
    at(h, start, 90)
    run(h)

    assert [e.rcpt_tos for e in inbox.envelopes] == [["cs0101@test.al.gov"]] * 2
    warning, disabled = inbox.messages()
    assert warning["Subject"] == "AlaCOP: Sign in or your account will be disabled"
    assert disabled["Subject"] == "AlaCOP: Your account was disabled after 90 days without use"
    stored = fresh(h, "cs0101")
    secrets = (STRONG, h.totp_secret, *h.recovery_codes, stored.password_hash or "", user.id)
    for message in (warning, disabled):
        _check(message, *secrets)
    body = disabled.get_content()
    assert "Coordinators for Test County Sheriff: Casey Smith (co0101@test.al.gov)." in body
    assert "NotificationFailed" not in h.audit_types()


def _check(message: EmailMessage, *secrets: str) -> None:
    assert message["To"] == "cs0101@test.al.gov"
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_content()
    assert "Hello Casey Smith" in body
    assert "cs0101@alacop.gov" in body
    assert "http" not in body
    seen = "".join(f"{k}: {v}\n" for k, v in message.items()) + body + message.as_string()
    for secret in secrets:
        assert secret and secret not in seen
        assert secret.replace(" ", "").lower() not in seen.replace(" ", "").lower()


def test_clock_is_injected_not_read(app_factory: App) -> None:
    """Everything above moves time with the harness clock; a run reads no other clock."""
    clock = FrozenClock(datetime.fromisoformat("2030-06-01T00:00:00+00:00"))
    h = app_factory(clock=clock, mailer=RecordingMailer())
    h.create_user("cs0101")
    clock.advance(91 * DAY)
    changed(run(h), disabled_inactive=1)
    (event,) = h.events("AccountDisabled")
    assert event.occurred_at.startswith("2030-08-31")
