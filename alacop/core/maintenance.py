"""Account upkeep (CJIS AC-2, AC-2(3); CJIS 5.2 training): `alacop maintenance`, and hourly in `serve`.

One run:

- expires registration requests nobody decided within 30 days (`Approvals.expire_stale`);
- disables accounts without activity for `inactive_disable_days` (90) days. Activity is the latest of
  the last sign-in, the activation or last password change, the creation, and the last re-enabling
  (`User.meta["enabled_at"]`, set by `Directory.apply_status`). So a just-approved account is not
  disabled, an approved account never activated is disabled 90 days after approval, and an account a
  coordinator re-enabled gets 90 days from that moment. Nobody is exempt: CJIS AC-2(3) names no
  exception, so coordinators and administrators are disabled too (an operator re-enables with
  `alacop users enable`);
- disables accounts whose security awareness training (`User.training_date`) is a year old
  (`registration.training_lapses_on`). Re-enabling such an account without recording a new training
  date only lasts until the next run, within the hour: that is intended. Accounts with no training
  date on record (created with `alacop users create`) are not judged by this rule; the run counts them;
- warns by email `WARNING_DAYS` (14) days before either rule would disable an account, once per rule
  and per date: the date warned of is kept in `User.meta` (`inactivity_warned_for`,
  `training_warned_for`), so a rerun sends nothing, and a sign-in or a new training date, which moves
  the date, allows a new warning later;
- writes one `MaintenanceRun` audit event with the counts.

Idempotent, and safe with several instances running it at once: each account is decided again in its
own transaction, on the row read under a lock (`FOR UPDATE` on PostgreSQL, SQLite's write lock). A
warning is claimed by writing its marker in that transaction, before the mail goes out, so of two
instances only one sends it; a disabled account is skipped by the next. A warning whose mail fails
has its claim withdrawn, so the next run tries again; a disabling stands whether or not its mail goes.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta

from alacop.core.accounts import Agency, User, UserStatus
from alacop.core.approvals import Approvals
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.clock import isoformat, parse_iso
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.directory import ENABLED_AT, Directory
from alacop.core.mail import Mail, letter
from alacop.core.ports import Transaction
from alacop.core.registration import WARNING_DAYS, training_lapses_on
from alacop.policy.cjis import Policy

log = logging.getLogger("alacop.maintenance")

INACTIVE = "inactive_90_days"
TRAINING = "training_lapsed"
# User.meta keys: the disabling date (ISO) the user was last warned of, per rule.
INACTIVITY_WARNED_FOR = "inactivity_warned_for"
TRAINING_WARNED_FOR = "training_warned_for"
_MARKS = {INACTIVE: INACTIVITY_WARNED_FOR, TRAINING: TRAINING_WARNED_FOR}


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    disabled_inactive: int = 0
    disabled_training: int = 0
    warned_inactive: int = 0
    warned_training: int = 0
    requests_expired: int = 0
    # Warnings and disabling notices that could not be sent (each audited NotificationFailed).
    mail_failed: int = 0
    # Active accounts without a training date on record: the training rule cannot judge them.
    no_training_date: int = 0
    # Accounts (or the request expiry) that failed with an error; logged, retried at the next run.
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def maintenance_context(runner: str) -> RequestContext:
    """Who ran it, for the audit trail: `serve` or the command line, on which host (CJIS AU-3)."""
    return RequestContext(
        source_ip="local",
        user_agent=f"alacop-maintenance {runner}@{socket.gethostname()}"[:200],
        request_id=secrets.token_hex(8),
    )


# -- the rules, on one account -----------------------------------------------------------------------
def last_activity(user: User) -> datetime:
    """The latest sign-in, activation or password change, creation, or re-enabling."""
    moments = [user.created_at, user.last_login_at, user.password_changed_at]
    enabled = user.meta.get(ENABLED_AT)
    if enabled:
        try:
            moments.append(parse_iso(enabled))
        except ValueError:
            log.warning("user %s has an unreadable %s", user.id, ENABLED_AT)
    return max(m for m in moments if m is not None)


def inactive_disable_at(user: User, policy: Policy) -> datetime:
    return last_activity(user) + timedelta(days=policy.inactive_disable_days)


@dataclass(frozen=True, slots=True)
class Due:
    """What one run owes an account: a disabling (with its reason), or warnings (rule to date)."""

    disable: str | None = None
    warn: Mapping[str, date] = field(default_factory=dict)

    @property
    def anything(self) -> bool:
        return self.disable is not None or bool(self.warn)


def due(user: User, now: datetime, policy: Policy) -> Due:
    if user.status is not UserStatus.ACTIVE:
        return Due()
    warning = timedelta(days=WARNING_DAYS)
    inactive_at = inactive_disable_at(user, policy)
    if now >= inactive_at:
        return Due(INACTIVE)
    lapses = training_lapses_on(user.training_date) if user.training_date else None
    today = now.date()  # UTC, as every date the portal keeps
    if lapses is not None and today >= lapses:
        return Due(TRAINING)
    warn: dict[str, date] = {}
    if now >= inactive_at - warning and user.meta.get(INACTIVITY_WARNED_FOR) != inactive_at.date().isoformat():
        warn[INACTIVE] = inactive_at.date()
    if lapses is not None and today >= lapses - warning and user.meta.get(TRAINING_WARNED_FOR) != lapses.isoformat():
        warn[TRAINING] = lapses
    return Due(warn=warn)


# -- a run -------------------------------------------------------------------------------------------
@dataclass
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


@dataclass(frozen=True, slots=True)
class _Letter:
    mail: Mail
    kind: str
    # For a warning: the rule whose claim is withdrawn if the mail fails, and the date claimed.
    rule: str | None = None
    claimed: str | None = None


async def run_maintenance(deps: Deps, ctx: RequestContext) -> MaintenanceReport:
    tally = _Tally()
    try:
        tally.add("requests_expired", await Approvals(deps).expire_stale(ctx))
    except Exception:  # one part failing must not stop the others; the next run retries
        log.exception("expiring stale registration requests failed")
        tally.add("errors")
    now = deps.clock.now()
    async with deps.store.read() as db:
        users = list(await db.users.list())
        agencies = {a.id: a for a in await db.agencies.list()}
    tally.add("no_training_date", sum(1 for u in users if u.active and u.training_date is None))
    for user in users:
        # A cheap first look at the snapshot; the account is decided again under its lock.
        if not due(user, now, deps.policy).anything:
            continue
        try:
            await _upkeep(deps, user.id, now, agencies, ctx, tally)
        except Exception:
            log.exception("maintenance of user %s failed", user.id)
            tally.add("errors")
    report = MaintenanceReport(**tally.counts)
    async with deps.store.transaction() as tx:
        await tx.audit.append(
            AuditEvent(
                EventType.MAINTENANCE_RUN,
                Outcome.FAILURE if report.errors else Outcome.SUCCESS,
                "errors" if report.errors else "",
                details=report.as_dict(),
            ),
            ctx,
        )
    return report


async def _upkeep(
    deps: Deps, user_id: str, now: datetime, agencies: Mapping[str, Agency], ctx: RequestContext, tally: _Tally
) -> None:
    letters: list[_Letter] = []
    async with deps.store.transaction() as tx:
        user = await tx.users.get(user_id, for_update=True)
        if user is None:
            return
        # Decided again on the locked row: a sign-in, an enable, a new training date or another
        # instance's run since the snapshot all count.
        owed = due(user, now, deps.policy)
        agency = agencies.get(user.agency_id)
        if owed.disable is not None:
            details = _disable_details(user, owed.disable, deps.policy)
            user = await Directory(deps).apply_status(
                tx, user, UserStatus.DISABLED, ctx, reason=owed.disable, details=details
            )
            tally.add("disabled_inactive" if owed.disable == INACTIVE else "disabled_training")
            contacts = await _coordinators(tx, user.agency_id)
            letters.append(_Letter(_disabled_mail(deps, user, owed.disable, agency, contacts), owed.disable))
        elif owed.warn:
            meta = dict(user.meta)
            for rule, when in owed.warn.items():
                meta[_MARKS[rule]] = when.isoformat()
                await tx.audit.append(_warning_event(deps, user, rule, when), ctx)
                letters.append(
                    _Letter(_warning_mail(deps, user, rule, when), f"{rule}_warning", rule, when.isoformat())
                )
            await tx.users.update(replace(user, meta=meta))
    for item in letters:
        await _send(deps, user, item, ctx, tally)


def _disable_details(user: User, reason: str, policy: Policy) -> dict[str, object]:
    if reason == INACTIVE:
        return {
            "last_activity": isoformat(last_activity(user)),
            "last_login_at": isoformat(user.last_login_at) if user.last_login_at else None,
            "inactive_disable_days": policy.inactive_disable_days,
        }
    assert user.training_date is not None
    return {
        "training_date": user.training_date.isoformat(),
        "training_lapsed_on": training_lapses_on(user.training_date).isoformat(),
    }


def _warning_event(deps: Deps, user: User, rule: str, when: date) -> AuditEvent:
    details: dict[str, object] = {"disable_on": when.isoformat()}
    if rule == INACTIVE:
        details["last_activity"] = isoformat(last_activity(user))
    elif user.training_date is not None:
        details["training_date"] = user.training_date.isoformat()
    return AuditEvent(
        EventType.DISABLE_WARNING_SENT,
        Outcome.SUCCESS,
        rule,
        subject_id=user.id,
        subject_name=f"{user.username}@{deps.domain}",
        agency_id=user.agency_id,
        details=details,
    )


async def _coordinators(tx: Transaction, agency_id: str) -> list[User]:
    found = [await tx.users.get(uid) for uid in await tx.agencies.coordinators(agency_id)]
    return [u for u in found if u is not None and u.active]


async def _send(deps: Deps, user: User, item: _Letter, ctx: RequestContext, tally: _Tally) -> None:
    """After the commit; a failure is logged and audited, never stops the run, and frees a warning's claim."""
    try:
        await deps.mailer.send(item.mail)
    except Exception as exc:  # SMTP, DNS and disk errors all mean the same: not sent
        log.warning("maintenance mail %s to user %s not sent: %s", item.kind, user.id, exc.__class__.__name__)
        tally.add("mail_failed")
        async with deps.store.transaction() as tx:
            if item.rule is not None:
                current = await tx.users.get(user.id, for_update=True)
                mark = _MARKS[item.rule]
                if current is not None and current.meta.get(mark) == item.claimed:
                    meta = {k: v for k, v in current.meta.items() if k != mark}
                    await tx.users.update(replace(current, meta=meta))
            await tx.audit.append(
                AuditEvent(
                    EventType.NOTIFICATION_FAILED,
                    Outcome.FAILURE,
                    item.kind,
                    subject_id=user.id,
                    subject_name=f"{user.username}@{deps.domain}",
                    agency_id=user.agency_id,
                    details={"error": exc.__class__.__name__, "retried_next_run": item.rule is not None},
                ),
                ctx,
            )
        return
    if item.rule is not None:
        tally.add("warned_inactive" if item.rule == INACTIVE else "warned_training")


# -- the messages (no link and no secret: a real warning and a phishing lure must not look alike) ----
def _day(when: date) -> str:
    return f"{when:%B} {when.day}, {when.year}"


def _warning_mail(deps: Deps, user: User, rule: str, when: date) -> Mail:
    account = f"{user.username}@{deps.domain}"
    days = deps.policy.inactive_disable_days
    if rule == INACTIVE and user.awaiting_activation:
        subject = "Activate your account or it will be disabled"
        paragraphs = [
            f"Your {deps.portal_name} account {account} was approved but has not been activated. Accounts not "
            f"used for {days} days are disabled (CJIS Security Policy), so it will be disabled on {_day(when)}.",
            "To keep it, ask your agency's coordinator for a new activation link and use it before then.",
        ]
    elif rule == INACTIVE:
        subject = "Sign in or your account will be disabled"
        paragraphs = [
            f"Your {deps.portal_name} account {account} has not been used for some time. Accounts not used for "
            f"{days} days are disabled (CJIS Security Policy), so it will be disabled on {_day(when)}.",
            f"To keep it, sign in to {deps.portal_name} the way you usually do before then. Nothing else is needed.",
        ]
    else:
        trained = _day(user.training_date) if user.training_date else "unknown"
        subject = "Renew your security awareness training or your account will be disabled"
        paragraphs = [
            f"Your CJIS security awareness training on record is dated {trained}. It must be renewed every "
            f"year, so your {deps.portal_name} account {account} will be disabled on {_day(when)}.",
            "Complete the training and ask your agency's coordinator to record the new date before then.",
        ]
    paragraphs.append(
        "This message contains no link. If you did not expect it, contact your agency's coordinator or the "
        f"{deps.support_name}."
    )
    return letter(subject, to=user.email, name=user.name, portal=deps.portal_name, paragraphs=paragraphs)


def _disabled_mail(deps: Deps, user: User, reason: str, agency: Agency | None, contacts: Sequence[User]) -> Mail:
    account = f"{user.username}@{deps.domain}"
    if reason == INACTIVE:
        subject = f"Your account was disabled after {deps.policy.inactive_disable_days} days without use"
        why = (
            f"Your {deps.portal_name} account {account} was disabled because it was not used for "
            f"{deps.policy.inactive_disable_days} days (CJIS Security Policy)."
        )
        fix = "To use it again, ask your agency's coordinator to enable it."
    else:
        subject = "Your account was disabled: security awareness training lapsed"
        why = (
            f"Your {deps.portal_name} account {account} was disabled because your CJIS security awareness "
            "training is more than a year old."
        )
        fix = "Complete the training, then ask your agency's coordinator to record the new date and enable it."
    agency_name = agency.name if agency else "your agency"
    if contacts:
        who = "; ".join(f"{c.name} ({c.email})" for c in contacts)
        reach = f"Coordinators for {agency_name}: {who}."
    else:
        reach = f"If you do not know your coordinator at {agency_name}, contact the {deps.support_name}."
    return letter(subject, to=user.email, name=user.name, portal=deps.portal_name, paragraphs=[why, fix, reach])
