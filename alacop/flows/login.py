"""Username-first sign-in as an explicit state machine: identifier, password, then a second factor.

```mermaid
stateDiagram-v2
    [*] --> identifier
    identifier --> password: Next (AlaCOP email accepted)
    identifier --> complete: passkey with user verification (only when passkey_sign_in is on)
    password --> identifier: change identifier
    password --> password: wrong password / locked
    password --> change_password: correct, but temporary or older than 365 days
    password --> second_factor: correct, and the account has a second factor
    password --> enroll: correct, and the account has no second factor yet (first sign-in)
    change_password --> change_password: refused by policy / wrong current password
    change_password --> identifier: the 5th wrong current password locks the account
    change_password --> second_factor: new password set
    change_password --> enroll: new password set, no second factor yet
    second_factor --> second_factor: wrong or replayed code, failed key, another method chosen
    second_factor --> identifier: the 5th failure locks the account
    second_factor --> enroll: verified, but the policy needs more methods (not with a recovery code)
    second_factor --> recovery_codes: verified, and the account holds no recovery codes
    second_factor --> complete: verified (a recovery code completes even when more methods are due)
    enroll --> enroll: a method added, more needed / enrolment refused
    enroll --> recovery_codes: the policy is met and recovery codes were issued
    enroll --> complete: the policy is met (recovery codes already held)
    recovery_codes --> complete: "I have saved my codes"
    enroll --> identifier: the account was locked meanwhile (likewise from every step that completes)
    complete --> [*]
```

A password alone never completes: every session this flow opens is AAL2 (CJIS IA-2(1)/(2)).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from alacop.core import attempts, lockout
from alacop.core.accounts import Role, User
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.clock import isoformat
from alacop.core.context import RequestContext
from alacop.core.credentials import ENROLLABLE, MethodKind
from alacop.core.deps import Deps
from alacop.core.errors import FlowInvalid, InvalidInput
from alacop.core.identifiers import WrongDomain, normalise_identifier
from alacop.core.notify import notify
from alacop.core.ports import FlowRecord
from alacop.core.session_manager import open_session
from alacop.flows.base import (
    FlowKind,
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
from alacop.methods.factors import FactorRefused, Factors, Failed
from alacop.methods.password import MAX_PASSWORD_INPUT, PasswordMethod
from alacop.methods.webauthn import amr_for as webauthn_amr
from alacop.methods.webauthn import authentication_options, new_challenge, registration_options


class LoginState(StrEnum):
    IDENTIFIER = "identifier"
    PASSWORD = "password"
    CHANGE_PASSWORD = "change_password"
    SECOND_FACTOR = "second_factor"
    ENROLL = "enroll"
    RECOVERY_CODES = "recovery_codes"
    COMPLETE = "complete"


_S = LoginState
TRANSITIONS: dict[LoginState, frozenset[LoginState]] = {
    # identifier -> complete only through passkey sign-in, which is both factors at once.
    _S.IDENTIFIER: frozenset({_S.PASSWORD, _S.COMPLETE}),
    _S.PASSWORD: frozenset({_S.IDENTIFIER, _S.PASSWORD, _S.CHANGE_PASSWORD, _S.SECOND_FACTOR, _S.ENROLL}),
    _S.CHANGE_PASSWORD: frozenset({_S.IDENTIFIER, _S.CHANGE_PASSWORD, _S.SECOND_FACTOR, _S.ENROLL}),
    _S.SECOND_FACTOR: frozenset({_S.IDENTIFIER, _S.SECOND_FACTOR, _S.ENROLL, _S.RECOVERY_CODES, _S.COMPLETE}),
    _S.ENROLL: frozenset({_S.IDENTIFIER, _S.ENROLL, _S.RECOVERY_CODES, _S.COMPLETE}),
    _S.RECOVERY_CODES: frozenset({_S.IDENTIFIER, _S.COMPLETE}),
    _S.COMPLETE: frozenset(),
}


def _msg(id: str, text: str, level: str = "error") -> Message:
    return Message(id, text, level)


@dataclass(frozen=True, slots=True)
class LoginFlow:
    id: str
    state: LoginState
    issued_at: datetime
    expires_at: datetime
    csrf_token: str
    binding: str
    return_to: str | None = None
    identifier: str | None = None
    user_id: str | None = None
    change_reason: str | None = None
    # What the user typed at step 1, shown back to them when it was refused so they can correct it.
    typed: str | None = None
    # The second factor: the kind on offer, the one verified, and what the session's amr will say.
    method_kind: str | None = None
    factor: str | None = None
    # The account that proved `factor`, and the password version the password step saw.
    factor_user: str | None = None
    credential_version: str | None = None
    amr: tuple[str, ...] = ()
    # One-use WebAuthn challenge; a TOTP seed and recovery codes in transit, sealed with the portal's key.
    challenge: str | None = None
    pending_totp: str | None = None
    codes_sealed: str | None = None
    messages: tuple[Message, ...] = field(default_factory=tuple)

    def move(self, to: LoginState, *messages: Message, **changes: object) -> LoginFlow:
        if to not in TRANSITIONS[self.state]:
            raise FlowInvalid(f"login flow cannot go from {self.state} to {to}")
        return replace(self, state=to, messages=tuple(messages), **changes)  # type: ignore[arg-type]

    def back_to_start(self, *messages: Message, typed: str | None = None) -> LoginFlow:
        """Back to the identifier step with nothing of the previous account left in the flow.

        Everything proven for one account (a second factor, its amr, pending secrets) goes, so a
        factor proven by one account can never complete the sign-in of another.
        """
        return self.move(
            LoginState.IDENTIFIER,
            *messages,
            identifier=None,
            user_id=None,
            change_reason=None,
            typed=typed,
            method_kind=None,
            factor=None,
            factor_user=None,
            amr=(),
            challenge=None,
            pending_totp=None,
            codes_sealed=None,
            credential_version=None,
        )

    def to_record(self) -> FlowRecord:
        return to_record(
            self,
            FlowKind.LOGIN,
            {
                "identifier": self.identifier,
                "user_id": self.user_id,
                "change_reason": self.change_reason,
                "typed": self.typed,
                "method_kind": self.method_kind,
                "factor": self.factor,
                "factor_user": self.factor_user,
                "credential_version": self.credential_version,
                "amr": list(self.amr),
                "challenge": self.challenge,
                "pending_totp": self.pending_totp,
                "codes_sealed": self.codes_sealed,
            },
        )

    @classmethod
    def from_record(cls, record: FlowRecord) -> LoginFlow:
        shared, data = envelope(record, LoginState)
        return cls(
            **shared,
            identifier=data.get("identifier"),
            user_id=data.get("user_id"),
            change_reason=data.get("change_reason"),
            typed=data.get("typed"),
            method_kind=data.get("method_kind"),
            factor=data.get("factor"),
            factor_user=data.get("factor_user"),
            credential_version=data.get("credential_version"),
            amr=tuple(data.get("amr", ())),
            challenge=data.get("challenge"),
            pending_totp=data.get("pending_totp"),
            codes_sealed=data.get("codes_sealed"),
        )


@dataclass(frozen=True, slots=True)
class LoginResult:
    flow: LoginFlow
    session_token: str | None = None
    user: User | None = None


_FACTOR_MESSAGES = {
    "totp_code_wrong": Message(
        "totp_code_wrong", "That code didn't work. Check that the time on your phone is right, then try again."
    ),
    "totp_code_replayed": Message(
        "totp_code_replayed", "That code has already been used. Wait for the next code, then enter it."
    ),
    "recovery_code_wrong": Message(
        "recovery_code_wrong", "That recovery code didn't work. Each code works once; check it and try again."
    ),
    "sign_count_regressed": Message(
        "webauthn_failed",
        "Your security key could not be verified. Try again, or sign in another way.",
    ),
    "totp_enrol_code_wrong": Message(
        "totp_enrol_code_wrong", "That code didn't match. Enter the code your app shows now for AlaCOP."
    ),
    "webauthn_enrol_failed": Message(
        "webauthn_enrol_failed", "The security key could not be registered. Try again, or choose another method."
    ),
    "webauthn_already_registered": Message(
        "webauthn_already_registered", "That security key is already registered to an account."
    ),
    "default": Message(
        "webauthn_failed", "Your security key could not be verified. Try again, or sign in another way."
    ),
}


SECOND_FACTOR_AMR = frozenset({"otp", "hwk", "swk"})


def credential_version(user: User) -> str:
    """Changes whenever the password does, so a sign-in begun with the old one cannot finish."""
    return isoformat(user.password_changed_at) if user.password_changed_at else "-"


class AccountLockedDuringFlow(Exception):
    """The account was locked after this flow passed its checks; the sign-in must not complete."""


class LoginService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._password = PasswordMethod(deps)
        self.factors = Factors(deps)

    # -- messages -----------------------------------------------------------------------------
    def _wrong_domain(self) -> Message:
        d = self._deps.domain
        return _msg(
            "identifier_wrong_domain",
            f"Enter your AlaCOP email, which is your AlaCOP username followed by “@{d}” (example: cs0101@{d}).",
        )

    _invalid_credentials = _msg("credentials_invalid", "Your account or password is incorrect.")
    _locked = _msg(
        "account_locked",
        "Your account is locked after too many failed sign-in attempts. Unlock it with “Can't access your "
        "account?”, or contact the Support Center.",
    )
    _disabled = _msg(
        "account_disabled",
        "Your account is disabled. Contact your agency coordinator or the Support Center.",
    )

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(
        self, browser_secret: str, *, return_to: str | None = None, messages: tuple[Message, ...] = ()
    ) -> LoginFlow:
        now = self._deps.clock.now()
        flow = LoginFlow(
            id=new_flow_id(),
            state=LoginState.IDENTIFIER,
            issued_at=now,
            expires_at=now + self._deps.policy.flow_lifetime,
            csrf_token=new_csrf(),
            binding=browser_binding(browser_secret),
            return_to=return_to,
            messages=messages,
        )
        async with self._deps.store.transaction() as tx:
            await tx.flows.add(flow.to_record())
        return flow

    async def load(self, flow_id: str, browser_secret: str) -> LoginFlow:
        return LoginFlow.from_record(await load_record(self._deps, flow_id, browser_secret, FlowKind.LOGIN))

    async def expired(self, flow_id: str, ctx: RequestContext, browser_secret: str | None = None) -> str | None:
        """Record and drop an expired flow; returns its way back, if it was this browser's."""
        return await discard_expired(self._deps, flow_id, FlowKind.LOGIN, ctx, browser_secret)

    # -- step 1: identifier -------------------------------------------------------------------
    async def submit_identifier(self, flow: LoginFlow, raw: str, csrf: str, ctx: RequestContext) -> LoginFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not LoginState.IDENTIFIER:
            raise FlowInvalid("identifier submitted out of turn")
        try:
            ident = normalise_identifier(raw[:1024], self._deps.domain)
        except WrongDomain:
            return await self._stay(flow, raw, self._wrong_domain(), ctx, "identifier_wrong_domain")
        except InvalidInput as exc:
            message = (
                _msg("identifier_missing", "Enter your AlaCOP email.")
                if exc.code == "identifier_missing"
                else _msg(
                    "identifier_invalid",
                    f"Enter a valid AlaCOP email, for example cs0101@{self._deps.domain}.",
                )
            )
            return await self._stay(flow, raw, message, ctx, exc.code)
        moved = flow.move(LoginState.PASSWORD, identifier=ident.email)
        async with self._deps.store.transaction() as tx:
            await tx.flows.save(moved.to_record())
            # Continuing past the warning is the user's act of consent (CJIS AC-8).
            await tx.audit.append(
                AuditEvent(
                    EventType.BANNER_ACKNOWLEDGED,
                    Outcome.INFO,
                    subject_name=ident.email,
                    details={"banner_sha256": self._deps.banner_sha256},
                ),
                ctx,
            )
        return moved

    async def _stay(self, flow: LoginFlow, raw: str, message: Message, ctx: RequestContext, reason: str) -> LoginFlow:
        stayed = replace(flow, messages=(message,), typed=raw.strip()[:254])
        async with self._deps.store.transaction() as tx:
            await tx.flows.save(stayed.to_record())
            await tx.audit.append(
                AuditEvent(
                    EventType.LOGIN_FAILED,
                    Outcome.FAILURE,
                    reason,
                    details={"step": flow.state, "banner_sha256": self._deps.banner_sha256},
                ),
                ctx,
            )
        return stayed

    async def change_identifier(self, flow: LoginFlow, csrf: str) -> LoginFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not LoginState.PASSWORD:
            raise FlowInvalid("the account can be changed only at the password step")
        moved = flow.back_to_start(typed=flow.identifier)
        async with self._deps.store.transaction() as tx:
            await tx.flows.save(moved.to_record())
        return moved

    # -- step 2: password ---------------------------------------------------------------------
    async def submit_password(self, flow: LoginFlow, password: str, csrf: str, ctx: RequestContext) -> LoginResult:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not LoginState.PASSWORD or flow.identifier is None:
            raise FlowInvalid("password submitted out of turn")
        identifier = flow.identifier
        username = identifier.partition("@")[0]
        password = password[:MAX_PASSWORD_INPUT]
        deps = self._deps
        async with deps.store.read() as db:
            user = await db.users.by_username(username)
        base: dict[str, object] = {"banner_sha256": deps.banner_sha256}

        claimed = await attempts.claim(deps, identifier)
        if claimed is None:
            # Spend the same time as a real check so a locked identifier cannot be told apart.
            await self._password.verify(None, password)
            return await self._refuse(flow, None, identifier, ctx, self._locked, "account_locked", base)

        ok = await self._password.verify(user, password)
        now = deps.clock.now()
        if not ok or user is None:
            async with deps.store.transaction() as tx:
                updated, just_locked = await attempts.settle(tx, claimed, deps)
                subject = user.id if user else None
                agency = user.agency_id if user else None
                await tx.audit.append(
                    AuditEvent(
                        EventType.LOGIN_FAILED,
                        Outcome.FAILURE,
                        "invalid_credentials",
                        subject_id=subject,
                        subject_name=identifier,
                        agency_id=agency,
                        details={**base, "consecutive_failures": updated.failures},
                    ),
                    ctx,
                )
                if just_locked:
                    await tx.audit.append(
                        AuditEvent(
                            EventType.ACCOUNT_LOCKED,
                            Outcome.INFO,
                            "too_many_failures",
                            subject_id=subject,
                            subject_name=identifier,
                            agency_id=agency,
                            details={"failures": updated.failures},
                        ),
                        ctx,
                    )
                message = self._locked if just_locked else self._invalid_credentials
                stayed = flow.move(LoginState.PASSWORD, message)
                await tx.flows.save(stayed.to_record())
            if just_locked and user is not None:
                await notify(deps, user, "account_locked", ctx)
            return LoginResult(stayed)

        await attempts.release(deps, claimed)
        if not user.active:
            return await self._refuse(flow, user, identifier, ctx, self._disabled, "account_disabled", base)

        if self._password.needs_rehash(user) and user.password_hash:
            old_hash = user.password_hash
            user = await self._password.rehashed(user, password)
            async with deps.store.transaction() as tx:
                await tx.users.rehash(user.id, old_hash, user.password_hash or "")
                await tx.audit.append(
                    AuditEvent(
                        EventType.PASSWORD_REHASHED,
                        Outcome.SUCCESS,
                        subject_id=user.id,
                        subject_name=identifier,
                        agency_id=user.agency_id,
                    ),
                    ctx,
                )
        # The failure count is not cleared here: only a complete sign-in does, or a known password
        # would let someone try second factors four at a time without end.
        reason = self._password.must_change(user, now)
        if reason is not None:
            notice = (
                _msg("password_temporary", "You signed in with a temporary password. Choose a new one.", "info")
                if reason == "temporary"
                else _msg("password_expired", "Your password is more than a year old. Choose a new one.", "info")
            )
            moved = flow.move(
                LoginState.CHANGE_PASSWORD,
                notice,
                user_id=user.id,
                change_reason=reason,
                amr=("pwd",),
                credential_version=credential_version(user),
            )
            async with deps.store.transaction() as tx:
                await tx.flows.save(moved.to_record())
            return LoginResult(moved)
        return await self._advance(
            replace(flow, user_id=user.id, amr=("pwd",), credential_version=credential_version(user)), user, ctx
        )

    async def _refuse(
        self,
        flow: LoginFlow,
        user: User | None,
        identifier: str,
        ctx: RequestContext,
        message: Message,
        reason: str,
        base: dict[str, object],
    ) -> LoginResult:
        stayed = flow.move(LoginState.PASSWORD, message)
        async with self._deps.store.transaction() as tx:
            await tx.flows.save(stayed.to_record())
            await tx.audit.append(
                AuditEvent(
                    EventType.LOGIN_FAILED,
                    Outcome.FAILURE,
                    reason,
                    subject_id=user.id if user else None,
                    subject_name=identifier,
                    agency_id=user.agency_id if user else None,
                    details=base,
                ),
                ctx,
            )
        return LoginResult(stayed)

    async def _complete(self, flow: LoginFlow, user: User, ctx: RequestContext) -> LoginResult:
        if flow.factor is None or flow.identifier is None or flow.factor_user != user.id:
            raise FlowInvalid("a sign-in completes only after this account's second factor")
        if not SECOND_FACTOR_AMR & set(flow.amr):
            raise FlowInvalid("no second factor in the authentication methods")
        if flow.factor != "passkey" and flow.credential_version != credential_version(user):
            # The password changed (a reset, a methods reset) after this flow checked it.
            raise FlowInvalid("the account's credentials changed during sign-in")
        now = self._deps.clock.now()
        done = flow.move(LoginState.COMPLETE)
        user = replace(user, last_login_at=now)
        amr = flow.amr or ("pwd",)
        async with self._deps.store.transaction() as tx:
            # A lock placed while this flow was under way (by failures elsewhere) stands: no session.
            if lockout.is_locked(await tx.throttles.get(flow.identifier, for_update=True)):
                raise AccountLockedDuringFlow(flow.id)
            # The flow is spent first: of two requests racing to finish it, only one gets a session.
            if not await tx.flows.delete(flow.id):
                raise FlowInvalid("flow already finished")
            await tx.throttles.clear(flow.identifier)
            # Only the sign-in time is written, and only while the account is still active: a disable
            # (by a coordinator or maintenance) since this flow read the account stands.
            if not await tx.users.record_sign_in(user.id, now):
                raise FlowInvalid("account disabled during sign-in")
            await tx.audit.append(
                AuditEvent(
                    EventType.LOGIN_SUCCEEDED,
                    Outcome.SUCCESS,
                    actor_id=user.id,
                    subject_id=user.id,
                    subject_name=flow.identifier,
                    agency_id=user.agency_id,
                    details={
                        "banner_sha256": self._deps.banner_sha256,
                        "amr": list(amr),
                        "aal": "aal2",
                        "second_factor": flow.factor,
                    },
                ),
                ctx,
            )
            token = await open_session(
                tx, user, ctx, now, self._deps.policy, aal="aal2", amr=amr, second_factor=flow.factor
            )
        return LoginResult(done, session_token=token, user=user)

    async def complete(self, flow: LoginFlow, user: User, ctx: RequestContext) -> LoginResult:
        try:
            return await self._complete(flow, user, ctx)
        except AccountLockedDuringFlow:
            return await self._save(flow.back_to_start(self._locked))

    # -- after the password: second factor, enrolment, recovery codes -----------------------------
    async def _user(self, flow: LoginFlow) -> User:
        if flow.user_id is None:
            raise FlowInvalid("no account in this flow")
        async with self._deps.store.read() as db:
            user = await db.users.get(flow.user_id)
        if user is None or not user.active:
            raise FlowInvalid("account changed during sign-in")
        return user

    async def _save(self, flow: LoginFlow) -> LoginResult:
        async with self._deps.store.transaction() as tx:
            await tx.flows.save(flow.to_record())
        return LoginResult(flow)

    async def _advance(self, flow: LoginFlow, user: User, ctx: RequestContext, *messages: Message) -> LoginResult:
        """Take the flow to its next step, given what the account has and what was proven so far."""
        if flow.factor is not None and flow.factor_user != user.id:
            raise FlowInvalid("a factor proven for another account")
        methods, codes_left = await self.factors.snapshot(user)
        if flow.factor is None:
            kinds = self.factors.kinds_available(methods, codes_left)
            if kinds:
                # Anyone holding only the password must prove a factor before adding another.
                kind = MethodKind(flow.method_kind) if flow.method_kind in kinds else kinds[0]
                return await self._save(
                    flow.move(
                        LoginState.SECOND_FACTOR, *messages, method_kind=str(kind), challenge=self._challenge(kind)
                    )
                )
            # No factor at all: the first sign-in (or after a reset). Enrolling proves the first one.
            return await self._save(flow.move(LoginState.ENROLL, *messages, method_kind=None, challenge=None))
        if not self.factors.meets_policy(user, methods):
            if flow.factor == MethodKind.RECOVERY_CODE:
                # A recovery code gets you in; it may not add methods (only a real authenticator may).
                return await self.complete(flow, user, ctx)
            return await self._save(flow.move(LoginState.ENROLL, *messages, method_kind=None, challenge=None))
        # New codes when the account has none, but never because a recovery code was just spent:
        # a stolen last code must not turn into ten.
        if flow.codes_sealed is None and codes_left == 0 and flow.factor != MethodKind.RECOVERY_CODE:
            codes = await self.factors.issue_recovery_codes(user, ctx)
            sealed = self._deps.box.seal(json.dumps(codes).encode("utf-8"))
            return await self._save(flow.move(LoginState.RECOVERY_CODES, *messages, codes_sealed=sealed))
        return await self.complete(flow, user, ctx)

    def _challenge(self, kind: MethodKind) -> str | None:
        return new_challenge() if kind is MethodKind.WEBAUTHN else None

    async def choose_method(self, flow: LoginFlow, kind: str, csrf: str) -> LoginFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not LoginState.SECOND_FACTOR:
            raise FlowInvalid("method chosen out of turn")
        user = await self._user(flow)
        methods = await self.factors.methods(user)
        kinds = self.factors.kinds_available(methods, await self.factors.recovery_codes_left(user))
        chosen = next((k for k in kinds if str(k) == kind), None)
        if chosen is None:
            raise FlowInvalid("that method is not available")
        return (
            await self._save(
                flow.move(LoginState.SECOND_FACTOR, method_kind=str(chosen), challenge=self._challenge(chosen))
            )
        ).flow

    async def submit_second_factor(
        self, flow: LoginFlow, *, code: str, credential: str, csrf: str, ctx: RequestContext
    ) -> LoginResult:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not LoginState.SECOND_FACTOR or flow.method_kind is None:
            raise FlowInvalid("second factor submitted out of turn")
        user = await self._user(flow)
        kind = MethodKind(flow.method_kind)
        outcome = await self.factors.verify(
            user,
            kind,
            ctx=ctx,
            purpose="sign_in",
            code=code[:64],
            credential=credential,
            challenge=flow.challenge or "",
        )
        if isinstance(outcome, Failed):
            if outcome.locked:
                return await self._save(flow.back_to_start(self._locked))
            message = _FACTOR_MESSAGES.get(outcome.reason, _FACTOR_MESSAGES["default"])
            # A WebAuthn challenge is single-use, whatever the outcome.
            return await self._save(flow.move(LoginState.SECOND_FACTOR, message, challenge=self._challenge(kind)))
        verified = replace(flow, factor=str(kind), factor_user=user.id, amr=("pwd", outcome.amr), challenge=None)
        return await self._advance(verified, user, ctx)

    async def enroll_choose(self, flow: LoginFlow, kind: str, csrf: str) -> LoginFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not LoginState.ENROLL:
            raise FlowInvalid("enrolment out of turn")
        user = await self._user(flow)
        if kind == MethodKind.TOTP:
            pending = self.factors.start_totp(user)
            moved = flow.move(LoginState.ENROLL, method_kind=kind, pending_totp=pending.sealed_secret, challenge=None)
        elif kind == MethodKind.WEBAUTHN:
            moved = flow.move(LoginState.ENROLL, method_kind=kind, pending_totp=None, challenge=new_challenge())
        else:
            raise FlowInvalid("that method cannot be enrolled")
        return (await self._save(moved)).flow

    async def enroll_submit(
        self, flow: LoginFlow, *, code: str, credential: str, name: str, csrf: str, ctx: RequestContext
    ) -> LoginResult:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not LoginState.ENROLL or flow.method_kind is None:
            raise FlowInvalid("enrolment out of turn")
        user = await self._user(flow)
        try:
            if flow.method_kind == MethodKind.TOTP and flow.pending_totp:
                method = await self.factors.confirm_totp(user, flow.pending_totp, code[:64], name, ctx)
                amr = "otp"
            elif flow.method_kind == MethodKind.WEBAUTHN and flow.challenge:
                method = await self.factors.confirm_webauthn(user, flow.challenge, credential, name, ctx)
                amr = webauthn_amr(method)
            else:
                raise FlowInvalid("nothing is being enrolled")
        except FactorRefused as exc:
            refreshed = new_challenge() if flow.method_kind == MethodKind.WEBAUTHN else None
            message = _FACTOR_MESSAGES.get(exc.code, _FACTOR_MESSAGES["default"])
            return await self._save(flow.move(LoginState.ENROLL, message, challenge=refreshed))
        added = _msg("method_added", f"{method.kind.label} “{method.name}” was added.", "success")
        progressed = replace(flow, method_kind=None, pending_totp=None, challenge=None)
        if progressed.factor is None:
            # Completing enrolment proved possession of the new factor: that is this sign-in's second factor.
            progressed = replace(progressed, factor=str(method.kind), factor_user=user.id, amr=("pwd", amr))
        return await self._advance(progressed, user, ctx, added)

    # -- passkey sign-in (policy passkey_sign_in) --------------------------------------------------
    async def start_passkey(self, browser_secret: str) -> LoginFlow:
        flow = await self.start(browser_secret)
        challenge, _ = self.factors.passkey_challenge()
        return (await self._save(replace(flow, method_kind=str(MethodKind.WEBAUTHN), challenge=challenge))).flow

    async def submit_passkey(self, flow: LoginFlow, credential: str, csrf: str, ctx: RequestContext) -> LoginResult:
        """Passwordless: a discoverable credential with user verification is both factors (AAL2)."""
        check_csrf(flow.to_record(), csrf)
        if not self._deps.policy.passkey_sign_in:
            raise FlowInvalid("passkey sign-in is off")
        if flow.state is not LoginState.IDENTIFIER or not flow.challenge:
            raise FlowInvalid("passkey submitted out of turn")
        outcome = await self.factors.verify_passkey(credential, flow.challenge, ctx)
        retry = replace(flow, challenge=self.factors.passkey_challenge()[0])
        if isinstance(outcome, Failed):
            async with self._deps.store.transaction() as tx:
                await tx.flows.save(replace(retry, messages=(_FACTOR_MESSAGES["default"],)).to_record())
                await tx.audit.append(
                    AuditEvent(EventType.LOGIN_FAILED, Outcome.FAILURE, outcome.reason, details={"step": "passkey"}),
                    ctx,
                )
            return LoginResult(replace(retry, messages=(_FACTOR_MESSAGES["default"],)))
        user, verified = outcome
        identifier = f"{user.username}@{self._deps.domain}"
        async with self._deps.store.read() as db:
            throttle = await db.throttles.get(identifier)
        refusal = None
        if lockout.is_locked(throttle):
            refusal = self._locked
        elif not user.active:
            refusal = self._disabled
        elif self._password.must_change(user, self._deps.clock.now()) is not None:
            refusal = _msg("password_first", "Sign in with your password first: it needs to be changed.")
        if refusal is not None:
            async with self._deps.store.transaction() as tx:
                await tx.flows.save(replace(retry, messages=(refusal,)).to_record())
                await tx.audit.append(
                    AuditEvent(
                        EventType.LOGIN_FAILED,
                        Outcome.FAILURE,
                        refusal.id,
                        subject_id=user.id,
                        subject_name=identifier,
                        agency_id=user.agency_id,
                        details={"step": "passkey"},
                    ),
                    ctx,
                )
            return LoginResult(replace(retry, messages=(refusal,)))
        signed = replace(
            flow,
            identifier=identifier,
            user_id=user.id,
            factor="passkey",
            factor_user=user.id,
            amr=(verified.amr, "user"),
            challenge=None,
        )
        return await self.complete(signed, user, ctx)

    def recovery_codes(self, flow: LoginFlow) -> list[str]:
        if flow.state is not LoginState.RECOVERY_CODES or not flow.codes_sealed:
            return []
        codes: list[str] = json.loads(self._deps.box.open(flow.codes_sealed))
        return codes

    async def acknowledge_codes(self, flow: LoginFlow, csrf: str, ctx: RequestContext) -> LoginResult:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not LoginState.RECOVERY_CODES:
            raise FlowInvalid("codes acknowledged out of turn")
        return await self.complete(replace(flow, codes_sealed=None), await self._user(flow), ctx)

    # -- forced password change ---------------------------------------------------------------
    async def submit_new_password(
        self,
        flow: LoginFlow,
        *,
        current: str,
        new: str,
        confirm: str,
        csrf: str,
        ctx: RequestContext,
    ) -> LoginResult:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not LoginState.CHANGE_PASSWORD or flow.user_id is None or flow.identifier is None:
            raise FlowInvalid("new password submitted out of turn")
        deps = self._deps
        async with deps.store.read() as db:
            user = await db.users.get(flow.user_id)
        if user is None or not user.active:
            raise FlowInvalid("account changed during sign-in")
        outcome = await self._password.change(
            user, current=current, new=new, confirm=confirm, ctx=ctx, reason=flow.change_reason or ""
        )
        if outcome.user is None:
            assert outcome.problem is not None
            message = _msg(outcome.problem.code, outcome.problem.message)
            if outcome.locked:
                stayed = flow.back_to_start(self._locked)
            else:
                stayed = flow.move(LoginState.CHANGE_PASSWORD, message)
            async with deps.store.transaction() as tx:
                await tx.flows.save(stayed.to_record())
            return LoginResult(stayed)
        changed = replace(flow, credential_version=credential_version(outcome.user))
        return await self._advance(changed, outcome.user, ctx)

    async def after_activation(self, browser_secret: str, user: User, ctx: RequestContext) -> LoginFlow:
        """A sign-in that begins past the password: the activation link and the password just chosen
        with it stand for the identifier and password steps. The second factor is still to come
        (first-sign-in enrolment), so nothing here opens a session."""
        if not user.active or user.password_hash is None:
            raise FlowInvalid("only a just-activated account continues to enrolment")
        now = self._deps.clock.now()
        flow = LoginFlow(
            id=new_flow_id(),
            state=LoginState.PASSWORD,
            issued_at=now,
            expires_at=now + self._deps.policy.flow_lifetime,
            csrf_token=new_csrf(),
            binding=browser_binding(browser_secret),
            identifier=f"{user.username}@{self._deps.domain}",
            user_id=user.id,
            amr=("pwd",),
            credential_version=credential_version(user),
        )
        async with self._deps.store.transaction() as tx:
            await tx.flows.add(flow.to_record())
        return (await self._advance(flow, user, ctx)).flow


@dataclass(frozen=True, slots=True)
class FactorChoice:
    kind: str
    label: str


async def login_view(service: LoginService, flow: LoginFlow) -> dict[str, object]:
    """What the page for the flow's current step needs beyond the flow itself."""
    view: dict[str, object] = {}
    if flow.state not in {LoginState.SECOND_FACTOR, LoginState.ENROLL, LoginState.RECOVERY_CODES}:
        return view
    factors = service.factors
    user = await service._user(flow)
    methods, codes_left = await factors.snapshot(user)
    if flow.state is LoginState.SECOND_FACTOR:
        kinds = factors.kinds_available(methods, codes_left)
        view["choices"] = [FactorChoice(str(k), k.label) for k in kinds]
        if flow.method_kind == MethodKind.WEBAUTHN and flow.challenge:
            keys = [m for m in methods if m.kind is MethodKind.WEBAUTHN]
            view["webauthn_options"] = authentication_options(
                factors.rp, challenge=flow.challenge, methods=keys, require_uv=False
            )
    elif flow.state is LoginState.ENROLL:
        view["methods"] = [m for m in methods if m.kind in ENROLLABLE]
        view["required"] = factors.required(user)
        view["privileged"] = user.role is not Role.USER
        if flow.method_kind == MethodKind.TOTP and flow.pending_totp:
            pending = factors.reopen_totp(user, flow.pending_totp)
            view["totp_qr"] = pending.qr_svg
            view["totp_secret"] = " ".join(pending.secret[i : i + 4] for i in range(0, len(pending.secret), 4))
        if flow.method_kind == MethodKind.WEBAUTHN and flow.challenge:
            view["webauthn_options"] = registration_options(
                factors.rp,
                user_handle=factors.user_handle(user),
                username=f"{user.username}@{service._deps.domain}",
                display_name=user.name,
                challenge=flow.challenge,
                existing=[m for m in methods if m.kind is MethodKind.WEBAUTHN],
            )
    else:
        view["codes"] = service.recovery_codes(flow)
    return view
