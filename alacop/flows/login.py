"""Username-first sign-in as an explicit state machine.

```mermaid
stateDiagram-v2
    [*] --> identifier
    identifier --> password: Next (AlaCOP email accepted)
    password --> identifier: change identifier
    password --> password: wrong password / locked
    password --> change_password: correct, but temporary or older than 365 days
    password --> complete: correct
    change_password --> change_password: refused by policy / wrong current password
    change_password --> identifier: the 5th wrong current password locks the account
    change_password --> complete: new password set (other sessions end)
    complete --> [*]
```
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from alacop.core import lockout
from alacop.core.accounts import User
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.errors import FlowInvalid, InvalidInput
from alacop.core.identifiers import WrongDomain, normalise_identifier
from alacop.core.ports import FlowRecord
from alacop.core.session_manager import open_session
from alacop.flows.base import (
    FlowKind,
    Message,
    browser_binding,
    check_csrf,
    check_flow,
    dump,
    load,
    new_csrf,
    new_flow_id,
)
from alacop.methods.password import MAX_PASSWORD_INPUT, PasswordMethod


class LoginState(StrEnum):
    IDENTIFIER = "identifier"
    PASSWORD = "password"
    CHANGE_PASSWORD = "change_password"
    COMPLETE = "complete"


TRANSITIONS: dict[LoginState, frozenset[LoginState]] = {
    LoginState.IDENTIFIER: frozenset({LoginState.PASSWORD}),
    LoginState.PASSWORD: frozenset(
        {LoginState.IDENTIFIER, LoginState.PASSWORD, LoginState.CHANGE_PASSWORD, LoginState.COMPLETE}
    ),
    LoginState.CHANGE_PASSWORD: frozenset(
        {LoginState.IDENTIFIER, LoginState.CHANGE_PASSWORD, LoginState.COMPLETE}
    ),
    LoginState.COMPLETE: frozenset(),
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
    messages: tuple[Message, ...] = field(default_factory=tuple)

    def move(self, to: LoginState, *messages: Message, **changes: object) -> LoginFlow:
        if to not in TRANSITIONS[self.state]:
            raise FlowInvalid(f"login flow cannot go from {self.state} to {to}")
        return replace(self, state=to, messages=tuple(messages), **changes)  # type: ignore[arg-type]

    def to_record(self) -> FlowRecord:
        payload = {
            "identifier": self.identifier,
            "user_id": self.user_id,
            "change_reason": self.change_reason,
            "typed": self.typed,
            "messages": [m.as_dict() for m in self.messages],
        }
        return FlowRecord(
            id=self.id,
            kind=FlowKind.LOGIN,
            state=self.state,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
            csrf_token=self.csrf_token,
            binding=self.binding,
            return_to=self.return_to,
            payload=dump(payload),
        )

    @classmethod
    def from_record(cls, record: FlowRecord) -> LoginFlow:
        data = load(record.payload)
        try:
            state = LoginState(record.state)
        except ValueError as exc:
            raise FlowInvalid("unknown state") from exc
        return cls(
            id=record.id,
            state=state,
            issued_at=record.issued_at,
            expires_at=record.expires_at,
            csrf_token=record.csrf_token,
            binding=record.binding,
            return_to=record.return_to,
            identifier=data.get("identifier"),
            user_id=data.get("user_id"),
            change_reason=data.get("change_reason"),
            typed=data.get("typed"),
            messages=tuple(Message(**m) for m in data.get("messages", [])),
        )


@dataclass(frozen=True, slots=True)
class LoginResult:
    flow: LoginFlow
    session_token: str | None = None
    user: User | None = None


class LoginService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._password = PasswordMethod(deps)

    # -- messages -----------------------------------------------------------------------------
    def _wrong_domain(self) -> Message:
        d = self._deps.domain
        return _msg(
            "identifier_wrong_domain",
            f"Enter your AlaCOP email, which is your AlaCOP username followed by “@{d}” "
            f"(example: cs0101@{d}).",
        )

    _invalid_credentials = _msg("credentials_invalid", "Your account or password is incorrect.")
    _locked = _msg(
        "account_locked",
        "Your account is locked after too many failed sign-in attempts. "
        "Contact your agency coordinator or the Support Center to unlock it.",
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
        async with self._deps.store.read() as db:
            record = await db.flows.get(flow_id[:64])
        checked = check_flow(
            record, binding=browser_binding(browser_secret), now=self._deps.clock.now(), kind=FlowKind.LOGIN
        )
        return LoginFlow.from_record(checked)

    async def expired(self, flow_id: str, ctx: RequestContext) -> None:
        async with self._deps.store.transaction() as tx:
            await tx.flows.delete(flow_id[:64])
            await tx.audit.append(
                AuditEvent(EventType.FLOW_EXPIRED, Outcome.INFO, "flow_expired", details={"flow": "login"}),
                ctx,
            )

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

    async def _stay(
        self, flow: LoginFlow, raw: str, message: Message, ctx: RequestContext, reason: str
    ) -> LoginFlow:
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
        moved = flow.move(
            LoginState.IDENTIFIER, identifier=None, user_id=None, change_reason=None, typed=flow.identifier
        )
        async with self._deps.store.transaction() as tx:
            await tx.flows.save(moved.to_record())
        return moved

    # -- step 2: password ---------------------------------------------------------------------
    async def submit_password(
        self, flow: LoginFlow, password: str, csrf: str, ctx: RequestContext
    ) -> LoginResult:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not LoginState.PASSWORD or flow.identifier is None:
            raise FlowInvalid("password submitted out of turn")
        identifier = flow.identifier
        username = identifier.partition("@")[0]
        password = password[:MAX_PASSWORD_INPUT]
        deps = self._deps
        async with deps.store.read() as db:
            user = await db.users.by_username(username)
            throttle = await db.throttles.get(identifier)
        base: dict[str, object] = {"banner_sha256": deps.banner_sha256}

        if lockout.is_locked(throttle):
            # Spend the same time as a real check so a locked identifier cannot be told apart.
            await self._password.verify(None, password)
            return await self._refuse(flow, None, identifier, ctx, self._locked, "account_locked", base)

        ok = await self._password.verify(user, password)
        now = deps.clock.now()
        if not ok or user is None:
            async with deps.store.transaction() as tx:
                throttle = await tx.throttles.get(identifier, for_update=True)
                updated = lockout.record_failure(throttle, identifier, now, deps.policy)
                await tx.throttles.put(updated)
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
                just_locked = updated.locked_at is not None and not lockout.is_locked(throttle)
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
            return LoginResult(stayed)

        if not user.active:
            return await self._refuse(flow, user, identifier, ctx, self._disabled, "account_disabled", base)

        reason = self._password.must_change(user, now)
        if reason is not None:
            notice = (
                _msg(
                    "password_temporary", "You signed in with a temporary password. Choose a new one.", "info"
                )
                if reason == "temporary"
                else _msg(
                    "password_expired", "Your password is more than a year old. Choose a new one.", "info"
                )
            )
            moved = flow.move(LoginState.CHANGE_PASSWORD, notice, user_id=user.id, change_reason=reason)
            async with deps.store.transaction() as tx:
                await tx.throttles.clear(identifier)
                await tx.flows.save(moved.to_record())
            return LoginResult(moved)

        if self._password.needs_rehash(user):
            user = await self._password.rehashed(user, password)
            rehashed = True
        else:
            rehashed = False
        return await self._complete(
            flow, user, identifier, ctx, base, rehashed=rehashed, had_throttle=throttle is not None
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

    async def _complete(
        self,
        flow: LoginFlow,
        user: User,
        identifier: str,
        ctx: RequestContext,
        base: dict[str, object],
        *,
        rehashed: bool = False,
        had_throttle: bool = True,
    ) -> LoginResult:
        now = self._deps.clock.now()
        done = flow.move(LoginState.COMPLETE)
        user = replace(user, last_login_at=now)
        async with self._deps.store.transaction() as tx:
            if had_throttle:
                await tx.throttles.clear(identifier)
            await tx.users.update(user)
            if rehashed:
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
            await tx.audit.append(
                AuditEvent(
                    EventType.LOGIN_SUCCEEDED,
                    Outcome.SUCCESS,
                    actor_id=user.id,
                    subject_id=user.id,
                    subject_name=identifier,
                    agency_id=user.agency_id,
                    details={**base, "amr": ["pwd"]},
                ),
                ctx,
            )
            token = await open_session(tx, user, ctx, now, self._deps.policy, aal="aal1", amr=("pwd",))
            # A finished flow is spent: replaying its id starts over rather than signing in again.
            await tx.flows.delete(flow.id)
        return LoginResult(done, session_token=token, user=user)

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
                stayed = flow.move(LoginState.IDENTIFIER, self._locked, identifier=None, user_id=None)
            else:
                stayed = flow.move(LoginState.CHANGE_PASSWORD, message)
            async with deps.store.transaction() as tx:
                await tx.flows.save(stayed.to_record())
            return LoginResult(stayed)
        return await self._complete(
            flow,
            outcome.user,
            flow.identifier,
            ctx,
            {"banner_sha256": deps.banner_sha256},
            had_throttle=False,
        )
