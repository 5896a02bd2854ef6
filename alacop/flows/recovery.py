"""“Can't access your account?”: self-service recovery that never bypasses multi-factor.

```mermaid
stateDiagram-v2
    [*] --> account_type
    account_type --> personal: Personal account (not supported)
    personal --> account_type: back
    account_type --> identify: Work or school account
    identify --> identify: CAPTCHA wrong or spent, identifier refused, new challenge
    identify --> verify: identifier and CAPTCHA accepted (whether or not the account exists)
    verify --> verify: verification failed / another method chosen / a second method needed
    verify --> choose: enough methods verified (1; 2 of different kinds for coordinators and admins)
    choose --> new_password: "I forgot my password"
    choose --> unlock: "I know my password, but still can't sign in"
    new_password --> new_password: refused by policy
    new_password --> done: password reset, every session ended, lockout cleared, user emailed
    unlock --> unlock: wrong password
    unlock --> done: account unlocked, user emailed
    done --> [*]
```

Unknown accounts, accounts still on a temporary password and accounts without methods go through
the same steps and meet the same generic failure at `verify`: nothing on any page says which.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from alacop.core import attempts, lockout
from alacop.core.accounts import Role, User
from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.captcha import Challenge
from alacop.core.clock import isoformat, parse_iso
from alacop.core.context import RequestContext
from alacop.core.credentials import ENROLLABLE, AuthMethod, MethodKind, RecoveryCode
from alacop.core.deps import Deps
from alacop.core.errors import FlowInvalid, InvalidInput
from alacop.core.identifiers import WrongDomain, normalise_identifier
from alacop.core.notify import notify
from alacop.core.ports import FlowRecord
from alacop.core.sessions import EndReason
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
from alacop.methods import recovery_codes, totp
from alacop.methods.factors import Factors, Failed, counter_key, recovery_failure
from alacop.methods.password import MAX_PASSWORD_INPUT, PasswordMethod
from alacop.methods.webauthn import new_challenge

KIND = "recovery"


class RecoveryState(StrEnum):
    ACCOUNT_TYPE = "account_type"
    PERSONAL = "personal"
    IDENTIFY = "identify"
    VERIFY = "verify"
    CHOOSE = "choose"
    NEW_PASSWORD = "new_password"
    UNLOCK = "unlock"
    DONE = "done"


_R = RecoveryState
TRANSITIONS: dict[RecoveryState, frozenset[RecoveryState]] = {
    _R.ACCOUNT_TYPE: frozenset({_R.PERSONAL, _R.IDENTIFY}),
    _R.PERSONAL: frozenset({_R.ACCOUNT_TYPE}),
    _R.IDENTIFY: frozenset({_R.IDENTIFY, _R.VERIFY}),
    _R.VERIFY: frozenset({_R.VERIFY, _R.CHOOSE}),
    _R.CHOOSE: frozenset({_R.NEW_PASSWORD, _R.UNLOCK}),
    _R.NEW_PASSWORD: frozenset({_R.NEW_PASSWORD, _R.DONE}),
    _R.UNLOCK: frozenset({_R.UNLOCK, _R.DONE}),
    _R.DONE: frozenset(),
}

# Every account is offered the same three ways: what an account really has must not show.
OFFERED = (MethodKind.TOTP, MethodKind.WEBAUTHN, MethodKind.RECOVERY_CODE)

GENERIC_FAILURE = Message(
    "recovery_not_verified",
    "We couldn't verify your identity with that. Try again, or use another method. Recovery works only "
    "after you have signed in with your new password and set up your authentication methods; if you "
    "have not, contact your agency coordinator or the Support Center.",
)
TOO_MANY = Message(
    "recovery_locked",
    "Too many attempts. Contact your agency coordinator or the Support Center.",
)


@dataclass(frozen=True, slots=True)
class RecoveryFlow:
    id: str
    state: RecoveryState
    issued_at: datetime
    expires_at: datetime
    csrf_token: str
    binding: str
    return_to: str | None = None
    identifier: str | None = None
    typed: str | None = None
    user_id: str | None = None
    captcha: Challenge | None = None
    method_kind: str | None = None
    challenge: str | None = None
    verified: tuple[str, ...] = ()
    needed: int = 1
    messages: tuple[Message, ...] = field(default_factory=tuple)

    def move(self, to: RecoveryState, *messages: Message, **changes: object) -> RecoveryFlow:
        if to not in TRANSITIONS[self.state]:
            raise FlowInvalid(f"recovery flow cannot go from {self.state} to {to}")
        return replace(self, state=to, messages=tuple(messages), **changes)  # type: ignore[arg-type]

    def to_record(self) -> FlowRecord:
        return to_record(
            self,
            KIND,
            {
                "identifier": self.identifier,
                "typed": self.typed,
                "user_id": self.user_id,
                "captcha": [self.captcha.nonce, isoformat(self.captcha.issued_at)] if self.captcha else None,
                "method_kind": self.method_kind,
                "challenge": self.challenge,
                "verified": list(self.verified),
                "needed": self.needed,
            },
        )

    @classmethod
    def from_record(cls, record: FlowRecord) -> RecoveryFlow:
        shared, data = envelope(record, RecoveryState)
        captcha = data.get("captcha")
        return cls(
            **shared,
            identifier=data.get("identifier"),
            typed=data.get("typed"),
            user_id=data.get("user_id"),
            captcha=Challenge(captcha[0], parse_iso(captcha[1])) if captcha else None,
            method_kind=data.get("method_kind"),
            challenge=data.get("challenge"),
            verified=tuple(data.get("verified", ())),
            needed=int(data.get("needed", 1)),
        )


class RecoveryService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self.factors = Factors(deps)
        self._password = PasswordMethod(deps)

    def _event(
        self, kind: EventType, outcome: Outcome, reason: str, flow: RecoveryFlow, user: User | None, **details: object
    ) -> AuditEvent:
        return AuditEvent(
            kind,
            outcome,
            reason,
            actor_id=user.id if user else None,
            subject_id=user.id if user else None,
            subject_name=flow.identifier,
            agency_id=user.agency_id if user else None,
            details={"flow": "recovery", **details},
        )

    async def _save(self, flow: RecoveryFlow) -> RecoveryFlow:
        async with self._deps.store.transaction() as tx:
            await tx.flows.save(flow.to_record())
        return flow

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, browser_secret: str, *, return_to: str | None = None) -> RecoveryFlow:
        now = self._deps.clock.now()
        flow = RecoveryFlow(
            id=new_flow_id(),
            state=RecoveryState.ACCOUNT_TYPE,
            issued_at=now,
            expires_at=now + self._deps.policy.flow_lifetime,
            csrf_token=new_csrf(),
            binding=browser_binding(browser_secret),
            return_to=return_to,
        )
        async with self._deps.store.transaction() as tx:
            await tx.flows.add(flow.to_record())
        return flow

    async def load(self, flow_id: str, browser_secret: str) -> RecoveryFlow:
        return RecoveryFlow.from_record(await load_record(self._deps, flow_id, browser_secret, KIND))

    async def expired(self, flow_id: str, ctx: RequestContext, browser_secret: str | None = None) -> str | None:
        """Record and drop an expired flow; returns its way back, if it was this browser's."""
        return await discard_expired(self._deps, flow_id, KIND, ctx, browser_secret)

    # -- 1. which type of account -----------------------------------------------------------------
    async def choose_type(self, flow: RecoveryFlow, account_type: str, csrf: str) -> RecoveryFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is RecoveryState.PERSONAL and account_type == "back":
            return await self._save(flow.move(RecoveryState.ACCOUNT_TYPE))
        if flow.state is not RecoveryState.ACCOUNT_TYPE:
            raise FlowInvalid("account type chosen out of turn")
        if account_type == "personal":
            return await self._save(flow.move(RecoveryState.PERSONAL))
        if account_type != "work":
            raise FlowInvalid("unknown account type")
        return await self._save(
            flow.move(RecoveryState.IDENTIFY, captcha=self._deps.captcha.new(self._deps.clock.now()))
        )

    # -- 2. identifier and CAPTCHA -------------------------------------------------------------------
    async def new_captcha(self, flow: RecoveryFlow, csrf: str) -> RecoveryFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not RecoveryState.IDENTIFY:
            raise FlowInvalid("captcha requested out of turn")
        return await self._save(
            flow.move(RecoveryState.IDENTIFY, captcha=self._deps.captcha.new(self._deps.clock.now()))
        )

    async def identify(self, flow: RecoveryFlow, raw: str, answer: str, csrf: str, ctx: RequestContext) -> RecoveryFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not RecoveryState.IDENTIFY:
            raise FlowInvalid("identifier submitted out of turn")
        deps = self._deps
        now = deps.clock.now()
        typed = raw.strip()[:254]
        # The challenge is spent by this submission, right or wrong; the next one is new.
        fresh = deps.captcha.new(now)
        if not deps.captcha.check(flow.captcha, answer, now):
            async with deps.store.transaction() as tx:
                await tx.audit.append(
                    self._event(EventType.CAPTCHA_FAILED, Outcome.FAILURE, "captcha_wrong", flow, None), ctx
                )
            message = Message("captcha_wrong", "The characters didn't match. Try the new picture or audio.")
            return await self._save(flow.move(RecoveryState.IDENTIFY, message, captcha=fresh, typed=typed))
        try:
            ident = normalise_identifier(raw[:1024], deps.domain)
        except WrongDomain:
            message = Message(
                "identifier_wrong_domain",
                f"Enter your AlaCOP email, which is your AlaCOP username followed by “@{deps.domain}”.",
            )
            return await self._save(flow.move(RecoveryState.IDENTIFY, message, captcha=fresh, typed=typed))
        except InvalidInput:
            message = Message("identifier_invalid", "Enter your AlaCOP email or username, for example cs0101.")
            return await self._save(flow.move(RecoveryState.IDENTIFY, message, captcha=fresh, typed=typed))
        async with deps.store.read() as db:
            user = await db.users.by_username(ident.username)
            methods = list(await db.methods.for_user(user.id)) if user else []
            codes = len(await db.recovery_codes.unused_for_user(user.id)) if user else 0
        usable = self._usable(user, methods, codes, now)
        needed = 2 if usable is not None and usable.role is not Role.USER else 1
        moved = flow.move(
            RecoveryState.VERIFY,
            identifier=ident.email,
            typed=None,
            captcha=None,
            user_id=usable.id if usable else None,
            needed=needed,
            method_kind=str(MethodKind.TOTP),
            challenge=None,
        )
        async with deps.store.transaction() as tx:
            await tx.flows.save(moved.to_record())
            await tx.audit.append(self._event(EventType.RECOVERY_STARTED, Outcome.INFO, "", moved, user), ctx)
        return moved

    def _usable(self, user: User | None, methods: list[AuthMethod], codes: int, now: datetime) -> User | None:
        """The account, if recovery may work for it; otherwise None, treated like an unknown account."""
        if user is None or not user.active or self._password.must_change(user, now) == "temporary":
            return None
        if not [m for m in methods if m.kind in ENROLLABLE] and not codes:
            return None
        return user

    # -- 3. verify with registered methods -------------------------------------------------------------
    def offered(self, flow: RecoveryFlow) -> list[MethodKind]:
        return [k for k in OFFERED if str(k) not in flow.verified]

    async def choose_method(self, flow: RecoveryFlow, kind: str, csrf: str) -> RecoveryFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not RecoveryState.VERIFY:
            raise FlowInvalid("method chosen out of turn")
        chosen = next((k for k in self.offered(flow) if str(k) == kind), None)
        if chosen is None:
            raise FlowInvalid("that method is not offered")
        challenge = new_challenge() if chosen is MethodKind.WEBAUTHN else None
        return await self._save(flow.move(RecoveryState.VERIFY, method_kind=str(chosen), challenge=challenge))

    def _stand_in_check(self, kind: MethodKind, identifier: str, code: str) -> None:
        seed = hmac.new(self._deps.pepper, b"stand-in:" + identifier.encode(), hashlib.sha256).digest()
        if kind is MethodKind.TOTP:
            totp.matching_step(base64.b32encode(seed[:20]).decode(), code, self._deps.clock.now(), 1)
        elif kind is MethodKind.RECOVERY_CODE:
            recovery_codes.find(
                [RecoveryCode("-", "-", seed.hex(), seed.hex()[:32], self._deps.clock.now())] * 10, code
            )

    def fake_credential_id(self, identifier: str) -> str:
        """What a security-key prompt lists for an account without keys: shaped like a real id, fixed per name."""
        from webauthn.helpers import bytes_to_base64url

        digest = hmac.new(self._deps.pepper, b"fake-credential:" + identifier.encode(), hashlib.sha256).digest()
        return bytes_to_base64url(digest + hashlib.sha256(digest).digest())

    async def verify(
        self, flow: RecoveryFlow, *, code: str, credential: str, csrf: str, ctx: RequestContext
    ) -> RecoveryFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not RecoveryState.VERIFY or flow.identifier is None or flow.method_kind is None:
            raise FlowInvalid("verification out of turn")
        deps = self._deps
        kind = MethodKind(flow.method_kind)
        key = counter_key(flow.identifier, "recovery")
        async with deps.store.read() as db:
            throttle = await db.throttles.get(key)
            user = await db.users.get(flow.user_id) if flow.user_id else None
        refreshed = new_challenge() if kind is MethodKind.WEBAUTHN else None
        if lockout.is_locked(throttle):
            return await self._save(flow.move(RecoveryState.VERIFY, TOO_MANY, challenge=refreshed))
        if user is None:
            # Unknown or unusable account: the same failure, the same counter, and about the same work
            # as a real check of that kind (a TOTP or recovery-code comparison, not an argon2 hash).
            self._stand_in_check(kind, flow.identifier, code)
            failed: Failed = await recovery_failure(deps, key, "not_verifiable", ctx, user=None, kind=str(kind))
            return await self._save(
                flow.move(RecoveryState.VERIFY, TOO_MANY if failed.locked else GENERIC_FAILURE, challenge=refreshed)
            )
        outcome = await self.factors.verify(
            user,
            kind,
            ctx=ctx,
            purpose="recovery",
            code=code[:64],
            credential=credential,
            challenge=flow.challenge or "",
        )
        if isinstance(outcome, Failed):
            return await self._save(
                flow.move(RecoveryState.VERIFY, TOO_MANY if outcome.locked else GENERIC_FAILURE, challenge=refreshed)
            )
        verified = (*flow.verified, str(kind))
        async with deps.store.transaction() as tx:
            await tx.audit.append(
                self._event(
                    EventType.RECOVERY_VERIFIED,
                    Outcome.SUCCESS,
                    str(kind),
                    flow,
                    user,
                    verified=list(verified),
                    needed=flow.needed,
                ),
                ctx,
            )
        if len(verified) < flow.needed:
            remaining = [k for k in OFFERED if str(k) not in verified]
            more = Message(
                "recovery_second_method",
                "Verified. Coordinators and administrators verify a second, different method.",
                "info",
            )
            following = remaining[0]
            challenge = new_challenge() if following is MethodKind.WEBAUTHN else None
            return await self._save(
                flow.move(
                    RecoveryState.VERIFY, more, verified=verified, method_kind=str(following), challenge=challenge
                )
            )
        return await self._save(flow.move(RecoveryState.CHOOSE, verified=verified, method_kind=None, challenge=None))

    # -- 4. what to do ------------------------------------------------------------------------------
    async def choose_action(self, flow: RecoveryFlow, action: str, csrf: str) -> RecoveryFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not RecoveryState.CHOOSE:
            raise FlowInvalid("action chosen out of turn")
        if action == "reset":
            return await self._save(flow.move(RecoveryState.NEW_PASSWORD))
        if action == "unlock":
            return await self._save(flow.move(RecoveryState.UNLOCK))
        raise FlowInvalid("unknown action")

    async def _verified_user(self, flow: RecoveryFlow) -> User:
        if flow.user_id is None or len(flow.verified) < flow.needed:
            raise FlowInvalid("identity not verified")
        async with self._deps.store.read() as db:
            user = await db.users.get(flow.user_id)
        if user is None or not user.active:
            raise FlowInvalid("account changed during recovery")
        return user

    async def reset_password(
        self, flow: RecoveryFlow, *, new: str, confirm: str, csrf: str, ctx: RequestContext
    ) -> RecoveryFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not RecoveryState.NEW_PASSWORD or flow.identifier is None:
            raise FlowInvalid("new password out of turn")
        user = await self._verified_user(flow)
        new, confirm = new[:MAX_PASSWORD_INPUT], confirm[:MAX_PASSWORD_INPUT]
        problem = self._password.problem(user, new, confirm)
        if problem is None and await self._password.verify(user, new):
            problem_id, problem_text = "password_reused", "Choose a password different from your current one."
        elif problem is not None:
            problem_id, problem_text = problem.code, problem.message
        else:
            problem_id = problem_text = ""
        if problem_id:
            async with self._deps.store.transaction() as tx:
                await tx.audit.append(
                    self._event(EventType.PASSWORD_CHANGE_FAILED, Outcome.FAILURE, problem_id, flow, user), ctx
                )
            return await self._save(flow.move(RecoveryState.NEW_PASSWORD, Message(problem_id, problem_text)))
        now = self._deps.clock.now()
        changed = await self._password.with_new_password(user, new, now)
        done = flow.move(RecoveryState.DONE, Message("password_reset", "Your password has been reset.", "success"))
        async with self._deps.store.transaction() as tx:
            if not await tx.users.set_password(user.id, changed.password_hash or "", now):
                raise FlowInvalid("account disabled during recovery")
            # Whoever had a session with the old password loses it; the lock goes with the old password.
            ended = await tx.sessions.end_all_for_user(user.id, now, EndReason.PASSWORD_CHANGED)
            await tx.throttles.clear(flow.identifier)
            await tx.throttles.clear(counter_key(flow.identifier, "recovery"))
            await tx.audit.append(
                self._event(
                    EventType.PASSWORD_RESET,
                    Outcome.SUCCESS,
                    "self_service_recovery",
                    flow,
                    user,
                    sessions_ended=ended,
                    methods_verified=list(flow.verified),
                ),
                ctx,
            )
            await tx.flows.save(done.to_record())
        await notify(self._deps, changed, "password_reset", ctx)
        return done

    async def unlock(self, flow: RecoveryFlow, *, password: str, csrf: str, ctx: RequestContext) -> RecoveryFlow:
        check_csrf(flow.to_record(), csrf)
        if flow.state is not RecoveryState.UNLOCK or flow.identifier is None:
            raise FlowInvalid("unlock out of turn")
        user = await self._verified_user(flow)
        key = counter_key(flow.identifier, "recovery")
        claimed = await attempts.claim(self._deps, key)
        if claimed is None:
            # Past the verify step the password is still a secret to guess: the same limit holds.
            await self._password.verify(None, password[:MAX_PASSWORD_INPUT])
            return await self._save(flow.move(RecoveryState.UNLOCK, TOO_MANY))
        if not await self._password.verify(user, password[:MAX_PASSWORD_INPUT]):
            failed = await recovery_failure(
                self._deps, key, "current_password_wrong", ctx, user=user, kind="password", claimed=claimed
            )
            message = (
                TOO_MANY
                if failed.locked
                else Message(
                    "current_password_wrong",
                    "That password is incorrect. If you have forgotten it, start again and "
                    "choose “I forgot my password”.",
                )
            )
            return await self._save(flow.move(RecoveryState.UNLOCK, message))
        async with self._deps.store.read() as db:
            was_locked = lockout.is_locked(await db.throttles.get(flow.identifier))
        done = flow.move(RecoveryState.DONE, Message("account_unlocked", "Your account is unlocked.", "success"))
        async with self._deps.store.transaction() as tx:
            await tx.throttles.clear(flow.identifier)
            await tx.throttles.clear(counter_key(flow.identifier, "recovery"))
            await tx.audit.append(
                self._event(
                    EventType.ACCOUNT_UNLOCKED,
                    Outcome.SUCCESS,
                    "self_service_recovery",
                    flow,
                    user,
                    before={"locked": was_locked},
                    after={"locked": False},
                ),
                ctx,
            )
            await tx.flows.save(done.to_record())
        await notify(self._deps, user, "account_unlocked", ctx)
        return done
