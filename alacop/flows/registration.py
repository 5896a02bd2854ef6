"""New User Registration: the request form, its CAPTCHA, and confirming the work email (CJIS AC-2).

```mermaid
stateDiagram-v2
    [*] --> form
    form --> form: CAPTCHA wrong or a field refused (what was typed is kept), new challenge
    form --> verify: every field accepted: a code is emailed (a duplicate email takes the same step, no code)
    verify --> verify: wrong code (5 tries) / code expired / "send a new code" (3 times)
    verify --> form: "change my details", or no tries and no new codes left
    verify --> submitted: the right code within 15 minutes; the request joins the agency's queue
    submitted --> [*]
```

A request only reaches the agency once its work email is confirmed. An email that already belongs
to an account or a pending request takes the same pages and the same "we sent a code" step; no
code goes out, and the owner of the address is told instead. Nothing on any page says which.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from alacop.core import attempts
from alacop.core.accounts import Agency, validate_ori
from alacop.core.approvals import Approvals
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.captcha import Challenge
from alacop.core.clock import isoformat, parse_iso
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.errors import FlowInvalid, InvalidInput
from alacop.core.mail import letter
from alacop.core.ports import FlowRecord
from alacop.core.registration import (
    CODE_LIFETIME,
    CODE_TRIES,
    Application,
    FieldProblem,
    check_application,
    new_code,
    normalise_code,
)
from alacop.flows.base import (
    Message,
    browser_binding,
    check_csrf,
    discard_expired,
    envelope,
    load_record,
    new_csrf,
    new_flow_id,
    to_record,
)

KIND = "registration"
# A long form: an hour to fill it in and confirm the email, longer than a sign-in's 15 minutes.
LIFETIME = timedelta(minutes=60)
RESENDS = 3
FIELDS = (
    "first_name",
    "last_name",
    "agency",
    "title",
    "email",
    "phone",
    "supervisor",
    "reason",
    "training_date",
    "accept_rules",
)
RULES_FILE = Path(__file__).resolve().parent.parent / "core" / "data" / "rules_of_behavior.md"


def rules_of_behavior() -> tuple[str, str]:
    """The rules of behavior shown in full, and their SHA-256, recorded with each acceptance."""
    text = RULES_FILE.read_text(encoding="utf-8")
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()


class RegistrationState(StrEnum):
    FORM = "form"
    VERIFY = "verify"
    SUBMITTED = "submitted"


_R = RegistrationState
TRANSITIONS: dict[RegistrationState, frozenset[RegistrationState]] = {
    _R.FORM: frozenset({_R.FORM, _R.VERIFY}),
    _R.VERIFY: frozenset({_R.VERIFY, _R.FORM, _R.SUBMITTED}),
    _R.SUBMITTED: frozenset(),
}

CODE_WRONG = Message("code_wrong", "That code is not right. Check the email we sent and try again.")
CODE_EXPIRED = Message("code_expired", "That code has expired. Select “Send a new code”.")
TRIES_USED = Message("code_tries_used", "Too many wrong codes for that code. Select “Send a new code”.")
NO_TRIES = Message(
    "code_tries_exhausted",
    "Too many wrong codes. Check your details, including your work email, and submit the form again.",
)


@dataclass(frozen=True, slots=True)
class RegistrationFlow:
    id: str
    state: RegistrationState
    issued_at: datetime
    expires_at: datetime
    csrf_token: str
    binding: str
    return_to: str | None = None
    # What was typed, kept so that a refused field never costs the applicant the rest of the form.
    draft: dict[str, str] = field(default_factory=dict)
    problems: tuple[FieldProblem, ...] = ()
    captcha: Challenge | None = None
    application: dict[str, str] | None = None
    code_hash: str | None = None
    code_sent_at: datetime | None = None
    tries_left: int = CODE_TRIES
    resends_left: int = RESENDS
    # The applicant's status link, sealed: shown once on the last page.
    status_sealed: str | None = None
    messages: tuple[Message, ...] = field(default_factory=tuple)

    def move(self, to: RegistrationState, *messages: Message, **changes: object) -> RegistrationFlow:
        if to not in TRANSITIONS[self.state]:
            raise FlowInvalid(f"registration flow cannot go from {self.state} to {to}")
        return replace(self, state=to, messages=tuple(messages), **changes)  # type: ignore[arg-type]

    @property
    def email(self) -> str:
        return (self.application or {}).get("email", "")

    def to_record(self) -> FlowRecord:
        return to_record(
            self,
            KIND,
            {
                "draft": self.draft,
                "problems": [[p.field, p.message] for p in self.problems],
                "captcha": [self.captcha.nonce, isoformat(self.captcha.issued_at)] if self.captcha else None,
                "application": self.application,
                "code_hash": self.code_hash,
                "code_sent_at": isoformat(self.code_sent_at) if self.code_sent_at else None,
                "tries_left": self.tries_left,
                "resends_left": self.resends_left,
                "status_sealed": self.status_sealed,
            },
        )

    @classmethod
    def from_record(cls, record: FlowRecord) -> RegistrationFlow:
        shared, data = envelope(record, RegistrationState)
        captcha = data.get("captcha")
        sent = data.get("code_sent_at")
        return cls(
            **shared,
            draft={str(k): str(v) for k, v in (data.get("draft") or {}).items()},
            problems=tuple(FieldProblem(f, m) for f, m in data.get("problems", [])),
            captcha=Challenge(captcha[0], parse_iso(captcha[1])) if captcha else None,
            application=data.get("application"),
            code_hash=data.get("code_hash"),
            code_sent_at=parse_iso(sent) if sent else None,
            tries_left=int(data.get("tries_left", 0)),
            resends_left=int(data.get("resends_left", 0)),
            status_sealed=data.get("status_sealed"),
        )


def resolve_agency(typed: str, agencies: list[Agency]) -> Agency | None:
    """The agency meant by an ORI, an exact name, or the list's "Name (ORI)" form."""
    text = " ".join(typed.split())
    if not text:
        return None
    candidates = [text]
    if text.endswith(")") and "(" in text:
        candidates.insert(0, text[text.rindex("(") + 1 : -1])
    for candidate in candidates:
        try:
            ori = validate_ori(candidate)
        except InvalidInput:
            continue
        found = next((a for a in agencies if a.ori == ori), None)
        if found:
            return found
    folded = text.casefold()
    return next((a for a in agencies if a.name.casefold() == folded), None)


class RegistrationService:
    def __init__(self, deps: Deps, approvals: Approvals) -> None:
        self._deps = deps
        self._approvals = approvals

    def _tries(self) -> int:
        # The claim counter stops at the lockout threshold, so a stricter policy means fewer tries.
        return min(CODE_TRIES, self._deps.policy.lockout_threshold)

    def _code_hash(self, flow_id: str, code: str) -> str:
        # Keyed, so a copy of the flows table does not give the codes away by brute force.
        return hmac.new(self._deps.pepper, f"{flow_id}:{code}".encode(), hashlib.sha256).hexdigest()

    async def _save(self, flow: RegistrationFlow) -> RegistrationFlow:
        async with self._deps.store.transaction() as tx:
            await tx.flows.save(flow.to_record())
        return flow

    async def _audit(self, event: AuditEvent, ctx: RequestContext) -> None:
        async with self._deps.store.transaction() as tx:
            await tx.audit.append(event, ctx)

    async def agencies(self) -> list[Agency]:
        async with self._deps.store.read() as db:
            return list(await db.agencies.list())

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, browser_secret: str) -> RegistrationFlow:
        now = self._deps.clock.now()
        flow = RegistrationFlow(
            id=new_flow_id(),
            state=RegistrationState.FORM,
            issued_at=now,
            expires_at=now + LIFETIME,
            csrf_token=new_csrf(),
            binding=browser_binding(browser_secret),
            captcha=self._deps.captcha.new(now),
        )
        async with self._deps.store.transaction() as tx:
            await tx.flows.add(flow.to_record())
        return flow

    async def load(self, flow_id: str, browser_secret: str) -> RegistrationFlow:
        return RegistrationFlow.from_record(await load_record(self._deps, flow_id, browser_secret, KIND))

    async def expired(self, flow_id: str, ctx: RequestContext, browser_secret: str | None = None) -> str | None:
        """Record and drop an expired flow; returns its way back, if it was this browser's."""
        return await discard_expired(self._deps, flow_id, KIND, ctx, browser_secret)

    async def new_captcha(self, flow: RegistrationFlow, form: dict[str, str], csrf: str) -> RegistrationFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not RegistrationState.FORM:
            raise FlowInvalid("captcha requested out of turn")
        draft = {k: form.get(k, "") for k in FIELDS} if any(form.get(k) for k in FIELDS) else flow.draft
        return await self._save(
            flow.move(RegistrationState.FORM, captcha=self._deps.captcha.new(self._deps.clock.now()), draft=draft)
        )

    # -- 1. the form ----------------------------------------------------------------------------
    async def submit_form(
        self, flow: RegistrationFlow, form: dict[str, str], answer: str, csrf: str, ctx: RequestContext
    ) -> RegistrationFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not RegistrationState.FORM:
            raise FlowInvalid("form submitted out of turn")
        deps = self._deps
        now = deps.clock.now()
        draft = {k: form.get(k, "") for k in FIELDS}
        fresh = deps.captcha.new(now)
        if not deps.captcha.check(flow.captcha, answer, now):
            await self._audit(
                AuditEvent(EventType.CAPTCHA_FAILED, Outcome.FAILURE, "captcha_wrong", details={"flow": KIND}), ctx
            )
            message = Message("captcha_wrong", "The characters didn't match. Try the new picture or audio.")
            return await self._save(flow.move(RegistrationState.FORM, message, captcha=fresh, draft=draft, problems=()))
        _, rules_sha = rules_of_behavior()
        agency = resolve_agency(draft["agency"], await self.agencies())
        application, problems = check_application(draft, agency=agency, today=now.date(), rules_sha256=rules_sha)
        if application is None:
            await self._audit(
                AuditEvent(
                    EventType.REGISTRATION_REFUSED,
                    Outcome.FAILURE,
                    "fields_refused",
                    agency_id=agency.id if agency else None,
                    details={"flow": KIND, "fields": sorted({p.field for p in problems})},
                ),
                ctx,
            )
            message = Message("fields_refused", "Check the fields marked below.")
            return await self._save(
                flow.move(RegistrationState.FORM, message, captcha=fresh, draft=draft, problems=tuple(problems))
            )
        return await self._send_code(flow, application, draft, ctx, first=True)

    async def _is_duplicate(self, email: str) -> bool:
        async with self._deps.store.read() as db:
            return bool(await db.users.by_email(email) or await db.registrations.pending_for_email(email))

    async def _send_code(
        self,
        flow: RegistrationFlow,
        application: Application,
        draft: dict[str, str],
        ctx: RequestContext,
        *,
        first: bool,
    ) -> RegistrationFlow:
        deps = self._deps
        now = deps.clock.now()
        code = new_code()
        duplicate = await self._is_duplicate(application.email)
        if duplicate:
            # The same step and an email to the same address, but to its owner and without a code:
            # the page cannot tell the applicant that the address is known, and no request is made.
            mail = letter(
                "Someone tried to register your email address",
                to=application.email,
                name=None,  # not confirmed yet: nothing the applicant typed goes into this mail
                portal=deps.portal_name,
                paragraphs=[
                    "Someone asked for a new AlaCOP account with this email address. It already has an account "
                    "or a registration request waiting for approval, so no new request was made.",
                    "If this was you and you cannot sign in, use “Can't access your account?” on the sign-in "
                    f"page, or contact your agency coordinator or the {deps.support_name}. If it was not you, "
                    "you need do nothing.",
                ],
            )
        else:
            minutes = int(CODE_LIFETIME.total_seconds() // 60)
            mail = letter(
                "Confirm your email address",
                to=application.email,
                name=None,  # not confirmed yet: nothing the applicant typed goes into this mail
                portal=deps.portal_name,
                paragraphs=[
                    f"Your code to confirm your email address for AlaCOP registration is: {code}",
                    f"It works for {minutes} minutes. Type it on the registration page.",
                    "If you did not ask to register for AlaCOP, you need do nothing: no request is made "
                    "without this code.",
                ],
            )
        sent = True
        try:
            await deps.mailer.send(mail)
        except Exception as exc:  # any delivery failure reads the same to the applicant
            sent = False
            await self._audit(
                AuditEvent(
                    EventType.NOTIFICATION_FAILED,
                    Outcome.FAILURE,
                    "registration_code",
                    agency_id=application.agency_id,
                    details={"error": exc.__class__.__name__},
                ),
                ctx,
            )
        await self._audit(
            AuditEvent(
                EventType.REGISTRATION_CODE_SENT if not duplicate else EventType.REGISTRATION_REFUSED,
                Outcome.INFO if not duplicate else Outcome.FAILURE,
                ("first" if first else "resent") if not duplicate else "duplicate_email",
                subject_name=application.email,
                agency_id=application.agency_id,
                details={"flow": KIND, "delivered": sent},
            ),
            ctx,
        )
        # A duplicate stores the hash of a code nobody was sent: no answer can ever match it.
        notice = Message("code_sent", f"We sent a code to {application.email}. It may take a minute to arrive.", "info")
        changes: dict[str, object] = {
            "draft": draft,
            "problems": (),
            "captcha": None,
            "application": application.as_dict(),
            "code_hash": self._code_hash(flow.id, code),
            "code_sent_at": now,
            "tries_left": self._tries(),
        }
        if first:
            changes["resends_left"] = RESENDS
        return await self._save(flow.move(RegistrationState.VERIFY, notice, **changes))

    # -- 2. the emailed code --------------------------------------------------------------------
    async def resend(self, flow: RegistrationFlow, csrf: str, ctx: RequestContext) -> RegistrationFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not RegistrationState.VERIFY or flow.application is None:
            raise FlowInvalid("resend out of turn")
        if flow.resends_left <= 0:
            return await self._back_to_form(flow, NO_TRIES)
        application = Application.from_dict(flow.application)
        flow = replace(flow, resends_left=flow.resends_left - 1)
        return await self._send_code(flow, application, flow.draft, ctx, first=False)

    async def edit(self, flow: RegistrationFlow, csrf: str) -> RegistrationFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not RegistrationState.VERIFY:
            raise FlowInvalid("edit out of turn")
        return await self._back_to_form(flow)

    async def _back_to_form(self, flow: RegistrationFlow, *messages: Message) -> RegistrationFlow:
        # Back through the CAPTCHA: every new code costs a solved challenge.
        return await self._save(
            flow.move(
                RegistrationState.FORM,
                *messages,
                captcha=self._deps.captcha.new(self._deps.clock.now()),
                application=None,
                code_hash=None,
                code_sent_at=None,
            )
        )

    async def verify(self, flow: RegistrationFlow, typed: str, csrf: str, ctx: RequestContext) -> RegistrationFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not RegistrationState.VERIFY or flow.application is None or flow.code_hash is None:
            raise FlowInvalid("code submitted out of turn")
        now = self._deps.clock.now()
        application = Application.from_dict(flow.application)
        if flow.code_sent_at is None or now >= flow.code_sent_at + CODE_LIFETIME:
            await self._code_failed(application, "code_expired", ctx)
            return await self._save(flow.move(RegistrationState.VERIFY, CODE_EXPIRED, tries_left=0))
        # Each try is claimed under a row lock before it is checked (core/attempts.py), per code: parallel
        # guesses cannot get more than the allowed tries, whatever the flow row says meanwhile.
        claimed = await attempts.claim(self._deps, f"register-code:{flow.code_hash[:32]}") if flow.tries_left else None
        if claimed is None:
            return await self._save(flow.move(RegistrationState.VERIFY, TRIES_USED, tries_left=0))
        if not hmac.compare_digest(self._code_hash(flow.id, normalise_code(typed)), flow.code_hash):
            async with self._deps.store.transaction() as tx:
                counted, _ = await attempts.settle(tx, claimed, self._deps)
            left = max(0, min(flow.tries_left - 1, self._tries() - counted.failures))
            await self._code_failed(application, "code_wrong", ctx, tries_left=left)
            if left <= 0 and flow.resends_left <= 0:
                return await self._back_to_form(flow, NO_TRIES)
            message = CODE_WRONG if left > 0 else TRIES_USED
            return await self._save(flow.move(RegistrationState.VERIFY, message, tries_left=left))
        submitted = await self._approvals.submit(application, ctx)
        sealed = self._deps.box.seal(submitted[1].encode()) if submitted else None
        done = flow.move(
            RegistrationState.SUBMITTED,
            Message("request_sent", "Your request was sent to your agency for approval.", "success"),
            draft={},
            code_hash=None,
            status_sealed=sealed,
        )
        return await self._save(done)

    async def _code_failed(self, application: Application, reason: str, ctx: RequestContext, **details: object) -> None:
        await self._audit(
            AuditEvent(
                EventType.REGISTRATION_CODE_FAILED,
                Outcome.FAILURE,
                reason,
                subject_name=application.email,
                agency_id=application.agency_id,
                details={"flow": KIND, **details},
            ),
            ctx,
        )

    def status_token(self, flow: RegistrationFlow) -> str | None:
        if flow.state is not RegistrationState.SUBMITTED or not flow.status_sealed:
            return None
        return self._deps.box.open(flow.status_sealed).decode()
