"""Registration requests from confirmed email to account: queue, decision, activation (CJIS AC-2, IA-4).

```mermaid
stateDiagram-v2
    [*] --> pending: work email confirmed (the registration flow)
    pending --> approved: a coordinator of the agency, or an administrator, approves
    pending --> denied: ... denies, with a reason
    pending --> expired: 30 days without a decision (maintenance)
    approved --> [*]: account created, activation link emailed (72 hours, single use)
    denied --> [*]
    expired --> [*]
```

An approved account has no password until its activation link is used; the link leads to choosing a
password and then the first-sign-in setup of the second factor.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import datetime, timedelta

from alacop.core.accounts import Agency, Role, User, UserStatus
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.authz import Actor
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.errors import Conflict, InvalidInput, NotFound
from alacop.core.mail import Mail, letter
from alacop.core.passwords import PasswordProblem, check_password
from alacop.core.registration import (
    ACTIVATION_LIFETIME,
    REQUEST_LIFETIME,
    ActivationLink,
    Application,
    Registration,
    RegistrationStatus,
    initials,
    training_lapses_on,
    username_candidates,
)
from alacop.core.tokens import new_token, token_hash

log = logging.getLogger("alacop.mail")
MAX_REASON = 500


class ActivationRefused(Exception):
    """The link is unknown, used, expired, superseded, or its account cannot be activated."""


class Approvals:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    def _identifier(self, username: str) -> str:
        return f"{username}@{self._deps.domain}"

    async def _send(self, mail: Mail, kind: str, ctx: RequestContext, subject_id: str | None, agency_id: str) -> None:
        """Mail after the change committed; a failure is audited and never undoes the decision."""
        try:
            await self._deps.mailer.send(mail)
        except Exception as exc:  # SMTP, DNS and disk errors all mean the same: not sent
            log.warning("registration mail %s not sent: %s", kind, exc.__class__.__name__)
            async with self._deps.store.transaction() as tx:
                await tx.audit.append(
                    AuditEvent(
                        EventType.NOTIFICATION_FAILED,
                        Outcome.FAILURE,
                        kind,
                        subject_id=subject_id,
                        agency_id=agency_id,
                        details={"error": exc.__class__.__name__},
                    ),
                    ctx,
                )

    def _letter(self, to: str, name: str, subject: str, *paragraphs: str) -> Mail:
        return letter(subject, to=to, name=name, portal=self._deps.portal_name, paragraphs=list(paragraphs))

    # -- the applicant's side -------------------------------------------------------------------
    async def submit(self, application: Application, ctx: RequestContext) -> tuple[Registration, str] | None:
        """Queue a request whose email was just confirmed; returns it with its status token.

        None when the address became an account or a pending request meanwhile: the applicant is not told.
        """
        now = self._deps.clock.now()
        status_token = new_token(24)
        registration = Registration(
            id=str(uuid.uuid4()),
            application=application,
            status=RegistrationStatus.PENDING,
            created_at=now,
            expires_at=now + REQUEST_LIFETIME,
            status_token_hash=token_hash(status_token),
        )
        refused = ""
        agency: Agency | None = None
        try:
            async with self._deps.store.transaction() as tx:
                agency = await tx.agencies.get(application.agency_id)
                duplicate = await tx.users.by_email(application.email) or await tx.registrations.pending_for_email(
                    application.email
                )
                if agency is None or duplicate:
                    refused = "duplicate" if duplicate else "agency_gone"
                else:
                    await tx.registrations.add(registration)
                    await tx.audit.append(
                        AuditEvent(
                            EventType.REGISTRATION_SUBMITTED,
                            Outcome.SUCCESS,
                            subject_name=application.email,
                            agency_id=agency.id,
                            details={"registration": registration.id, "after": _public(application, agency)},
                        ),
                        ctx,
                    )
        except Conflict:
            # Another request for this email was queued at the same moment: the unique index decided.
            refused = "duplicate"
        if refused or agency is None:
            async with self._deps.store.transaction() as tx:
                await tx.audit.append(
                    AuditEvent(
                        EventType.REGISTRATION_REFUSED,
                        Outcome.FAILURE,
                        refused or "agency_gone",
                        agency_id=application.agency_id,
                    ),
                    ctx,
                )
            return None
        await self._send(
            self._letter(
                application.email,
                application.full_name,
                "Your registration request was received",
                f"Your request for an AlaCOP account was sent to {agency.name} for approval. You will get an "
                "email when they decide.",
                f"See where your request stands at any time: {self._deps.origin}/register/status?t={status_token}",
                "Keep this link to yourself; it shows your request to whoever has it.",
            ),
            "registration_received",
            ctx,
            None,
            agency.id,
        )
        return registration, status_token

    async def status(self, status_token: str) -> tuple[Registration, Agency | None] | None:
        if not status_token or len(status_token) > 64:
            return None
        async with self._deps.store.read() as db:
            registration = await db.registrations.by_status_token(token_hash(status_token))
            agency = await db.agencies.get(registration.agency_id) if registration else None
        return (registration, agency) if registration else None

    # -- the agency's side ----------------------------------------------------------------------
    async def queue(
        self, actor: Actor, status: RegistrationStatus | None = RegistrationStatus.PENDING
    ) -> list[Registration]:
        actor.require_console()
        async with self._deps.store.read() as db:
            return list(await db.registrations.list(status=status, agency_ids=actor.scope))

    async def get(self, actor: Actor, registration_id: str) -> Registration:
        async with self._deps.store.read() as db:
            registration = await db.registrations.get(registration_id[:36])
        if registration is None:
            raise NotFound("no such registration", code="registration_not_found")
        actor.require_agency(registration.agency_id, change=False)
        return registration

    async def _pending(self, actor: Actor, registration_id: str) -> Registration:
        registration = await self.get(actor, registration_id)
        actor.require_agency(registration.agency_id, change=True)
        if registration.status is not RegistrationStatus.PENDING:
            raise Conflict(f"the request was already {registration.status}", code="registration_decided")
        if self._deps.clock.now() >= registration.expires_at:
            raise Conflict("the request has expired", code="registration_expired")
        return registration

    async def approve(self, actor: Actor, registration_id: str, ctx: RequestContext) -> User:
        registration = await self._pending(actor, registration_id)
        app = registration.application
        now = self._deps.clock.now()
        token = new_token(32)
        prefix = initials(app.first_name, app.last_name)
        async with self._deps.store.transaction() as tx:
            agency = await tx.agencies.get(app.agency_id)
            if agency is None:
                raise NotFound("the agency no longer exists", code="agency_not_found")
            if await tx.users.by_email(app.email):
                raise Conflict("an account with this email exists", code="email_taken")
            # What held when the request was made must still hold when it is decided.
            if training_lapses_on(app.training_date) <= now.date():
                raise Conflict(
                    "the applicant's security awareness training is more than a year old; deny the request "
                    "and ask them to apply again after training",
                    code="training_lapsed",
                )
            if app.email.rpartition("@")[2] not in agency.email_domains:
                raise Conflict("the agency no longer accepts this email domain", code="email_domain_refused")
            # CJIS IA-4 d: neither a live username nor one retired within the reuse period.
            taken = await tx.users.usernames_starting(prefix) | await tx.users.retired_since(
                prefix, now - timedelta(days=self._deps.policy.identifier_reuse_days)
            )
            username = next((c for c in username_candidates(prefix) if c not in taken), None)
            if username is None:
                raise Conflict(f"no free username for {prefix}", code="usernames_exhausted")
            user = User(
                id=str(uuid.uuid4()),
                username=username,
                email=app.email,
                name=app.full_name,
                agency_id=agency.id,
                role=Role.USER,
                status=UserStatus.ACTIVE,
                password_hash=None,
                password_changed_at=None,
                must_change_password=False,
                created_at=now,
                training_date=app.training_date,
                meta={
                    "title": app.title,
                    "phone": app.phone,
                    "supervisor": app.supervisor,
                    "registration": registration.id,
                },
            )
            decided = replace(
                registration, status=RegistrationStatus.APPROVED, decided_at=now, decided_by=actor.id, user_id=user.id
            )
            # The conditional update is the lock: of two approvers, one wins and the other meets Conflict.
            if not await tx.registrations.decide(decided):
                raise Conflict("the request was decided meanwhile", code="registration_decided")
            await tx.users.add(user)
            await tx.activations.replace(ActivationLink(token_hash(token), user.id, now, now + ACTIVATION_LIFETIME))
            await tx.audit.append(
                AuditEvent(
                    EventType.REGISTRATION_APPROVED,
                    Outcome.SUCCESS,
                    actor_id=actor.id,
                    subject_id=user.id,
                    subject_name=self._identifier(username),
                    agency_id=agency.id,
                    details={
                        "registration": registration.id,
                        "before": {"status": str(RegistrationStatus.PENDING)},
                        "after": {"status": str(RegistrationStatus.APPROVED), "username": username},
                    },
                ),
                ctx,
            )
            await tx.audit.append(
                AuditEvent(
                    EventType.ACCOUNT_CREATED,
                    Outcome.SUCCESS,
                    "registration_approved",
                    actor_id=actor.id,
                    subject_id=user.id,
                    subject_name=self._identifier(username),
                    agency_id=agency.id,
                    details={"after": {**_public(app, agency), "username": username, "role": str(Role.USER)}},
                ),
                ctx,
            )
            await tx.audit.append(self._link_event(actor, user, now, "registration_approved"), ctx)
        await self._send(self._approved_mail(user, agency, token), "registration_approved", ctx, user.id, agency.id)
        return user

    def _link_event(self, actor: Actor, user: User, now: datetime, reason: str) -> AuditEvent:
        expires = (now + ACTIVATION_LIFETIME).isoformat()
        # AU-3: what changed. On approval there was no link; a reissue replaces the unused one.
        before = None if reason == "registration_approved" else {"activation_link": "unused link, now void"}
        return AuditEvent(
            EventType.ACTIVATION_LINK_ISSUED,
            Outcome.SUCCESS,
            reason,
            actor_id=actor.id,
            subject_id=user.id,
            subject_name=self._identifier(user.username),
            agency_id=user.agency_id,
            details={"expires_at": expires, "before": before, "after": {"activation_link": f"until {expires}"}},
        )

    def _approved_mail(self, user: User, agency: Agency, token: str) -> Mail:
        hours = int(ACTIVATION_LIFETIME.total_seconds() // 3600)
        return self._letter(
            user.email,
            user.name,
            "Your account is approved: activate it",
            f"{agency.name} approved your AlaCOP account.",
            f"Your username is {user.username} (sign in as {self._identifier(user.username)}).",
            f"Activate your account within {hours} hours: {self._deps.origin}/activate?token={token}",
            "The link works once. It leads to choosing your password and then setting up a second way to "
            "sign in, such as an authenticator app or a security key.",
        )

    async def deny(self, actor: Actor, registration_id: str, reason: str, ctx: RequestContext) -> Registration:
        why = " ".join(reason.split())
        if not why or len(why) > MAX_REASON or any(ord(c) < 32 or ord(c) == 127 for c in why):
            raise InvalidInput(f"give the reason for denying (1-{MAX_REASON} characters)", code="reason_required")
        registration = await self._pending(actor, registration_id)
        now = self._deps.clock.now()
        decided = replace(
            registration, status=RegistrationStatus.DENIED, decided_at=now, decided_by=actor.id, decision_reason=why
        )
        async with self._deps.store.transaction() as tx:
            agency = await tx.agencies.get(registration.agency_id)
            if not await tx.registrations.decide(decided):
                raise Conflict("the request was decided meanwhile", code="registration_decided")
            await tx.audit.append(
                AuditEvent(
                    EventType.REGISTRATION_DENIED,
                    Outcome.SUCCESS,
                    actor_id=actor.id,
                    subject_name=registration.application.email,
                    agency_id=registration.agency_id,
                    details={
                        "registration": registration.id,
                        "before": {"status": str(RegistrationStatus.PENDING)},
                        "after": {"status": str(RegistrationStatus.DENIED), "reason": why},
                    },
                ),
                ctx,
            )
        app = registration.application
        await self._send(
            self._letter(
                app.email,
                app.full_name,
                "Your registration request was not approved",
                f"{agency.name if agency else 'Your agency'} did not approve your request for an AlaCOP account.",
                f"The reason given: {why}",
                "If you think this is a mistake, contact your agency's AlaCOP coordinator.",
            ),
            "registration_denied",
            ctx,
            None,
            registration.agency_id,
        )
        return decided

    async def expire_stale(self, ctx: RequestContext) -> int:
        """Close requests nobody decided within 30 days; safe to run again (the decide() guard)."""
        now = self._deps.clock.now()
        async with self._deps.store.read() as db:
            stale = list(await db.registrations.stale(now))
        expired = 0
        for registration in stale:
            decided = replace(
                registration,
                status=RegistrationStatus.EXPIRED,
                decided_at=now,
                decision_reason="not decided within 30 days",
            )
            async with self._deps.store.transaction() as tx:
                if not await tx.registrations.decide(decided):
                    continue
                await tx.audit.append(
                    AuditEvent(
                        EventType.REGISTRATION_EXPIRED,
                        Outcome.INFO,
                        "not_decided",
                        subject_name=registration.application.email,
                        agency_id=registration.agency_id,
                        details={
                            "registration": registration.id,
                            "before": {"status": str(RegistrationStatus.PENDING)},
                            "after": {"status": str(RegistrationStatus.EXPIRED)},
                        },
                    ),
                    ctx,
                )
            expired += 1
            app = registration.application
            await self._send(
                self._letter(
                    app.email,
                    app.full_name,
                    "Your registration request expired",
                    "Your request for an AlaCOP account was not decided within 30 days and has expired.",
                    f"You may apply again at {self._deps.origin}/register, or contact your agency's coordinator.",
                ),
                "registration_expired",
                ctx,
                None,
                registration.agency_id,
            )
        return expired

    # -- activation -----------------------------------------------------------------------------
    async def issue_link(self, actor: Actor, user_id: str, ctx: RequestContext) -> None:
        """A new activation link for an approved account not yet activated; the earlier one stops working."""
        async with self._deps.store.read() as db:
            user = await db.users.get(user_id[:36])
            agency = await db.agencies.get(user.agency_id) if user else None
        if user is None or agency is None:
            raise NotFound("no such user", code="user_not_found")
        actor.require_user(user, change=True)
        if not user.awaiting_activation:
            raise Conflict("the account is already activated", code="already_activated")
        if not user.active:
            raise Conflict("the account is disabled; enable it first", code="account_disabled")
        now = self._deps.clock.now()
        token = new_token(32)
        async with self._deps.store.transaction() as tx:
            await tx.activations.replace(ActivationLink(token_hash(token), user.id, now, now + ACTIVATION_LIFETIME))
            await tx.audit.append(self._link_event(actor, user, now, "reissued"), ctx)
        await self._send(self._approved_mail(user, agency, token), "activation_link", ctx, user.id, agency.id)

    async def activation_user(self, token: str) -> User:
        """The account a link would activate now, or ActivationRefused (never saying which check failed)."""
        if not token or len(token) > 128:
            raise ActivationRefused("no token")
        async with self._deps.store.read() as db:
            link = await db.activations.get(token_hash(token))
            user = await db.users.get(link.user_id) if link else None
        if link is None or user is None or not link.usable(self._deps.clock.now()):
            raise ActivationRefused("link unusable")
        if not user.active or not user.awaiting_activation:
            raise ActivationRefused("account not awaiting activation")
        return user

    async def refused(self, reason: str, ctx: RequestContext) -> None:
        async with self._deps.store.transaction() as tx:
            await tx.audit.append(AuditEvent(EventType.ACTIVATION_FAILED, Outcome.FAILURE, reason), ctx)

    def password_problem(self, user: User, new: str, confirm: str) -> PasswordProblem | None:
        if new != confirm:
            return PasswordProblem("password_mismatch", "The passwords do not match.")
        return check_password(new, policy=self._deps.policy, banned=self._deps.banned, username=user.username)

    async def activate(self, token: str, new: str, ctx: RequestContext) -> User:
        """Set the first password and spend the link, together; the caller checked password_problem."""
        user = await self.activation_user(token)
        password_hash = await self._deps.hasher.hash_async(new)
        now = self._deps.clock.now()
        activated = replace(user, password_hash=password_hash, password_changed_at=now, must_change_password=False)
        async with self._deps.store.transaction() as tx:
            # Spent and set in one transaction: a second use of the link (or a race) finds it spent.
            if not await tx.activations.spend(token_hash(token), now):
                raise ActivationRefused("link spent meanwhile")
            if not await tx.users.set_password(user.id, password_hash, now, first=True):
                raise ActivationRefused("account disabled or activated meanwhile")
            await tx.audit.append(
                AuditEvent(
                    EventType.ACCOUNT_ACTIVATED,
                    Outcome.SUCCESS,
                    actor_id=user.id,
                    subject_id=user.id,
                    subject_name=self._identifier(user.username),
                    agency_id=user.agency_id,
                    details={"before": {"activated": False}, "after": {"activated": True}},
                ),
                ctx,
            )
        return activated


def _public(app: Application, agency: Agency) -> dict[str, str]:
    """What a request says, for the audit trail (nothing secret is in a request)."""
    return {
        "name": app.full_name,
        "email": app.email,
        "agency": agency.ori,
        "title": app.title,
        "phone": app.phone,
        "supervisor": app.supervisor,
        "training_date": app.training_date.isoformat(),
        "rules_sha256": app.rules_sha256,
    }
