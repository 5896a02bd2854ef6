"""Second factors as one service: enrol, verify, list, rename, remove, recovery codes.

The sign-in flow and the Security info page both call it, so a method is enrolled, checked and
audited the same way wherever it happens.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from alacop.core import attempts, lockout
from alacop.core.accounts import Role, User
from alacop.core.attempts import Claim
from alacop.core.audit import AuditEvent, EventType, Outcome, own_event
from alacop.core.context import RequestContext
from alacop.core.credentials import ENROLLABLE, AuthMethod, MethodKind, meets_policy, required_methods
from alacop.core.deps import Deps
from alacop.core.errors import AlacopError, Conflict
from alacop.core.notify import notify
from alacop.core.secretbox import SecretUnreadable
from alacop.core.sessions import EndReason
from alacop.methods import recovery_codes, totp, webauthn
from alacop.methods.webauthn import RelyingParty, WebAuthnFailed

MAX_NAME = 64
log = logging.getLogger("alacop")


class FactorRefused(AlacopError):
    """A second-factor step refused; `code` is the message id shown to the user."""


@dataclass(frozen=True, slots=True)
class PendingTotp:
    """An authenticator app being set up: the seed stays sealed until a code proves the app has it."""

    sealed_secret: str
    secret: str
    uri: str
    qr_svg: str


@dataclass(frozen=True, slots=True)
class Verified:
    method: AuthMethod | None
    kind: MethodKind
    amr: str


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    locked: bool = False


def counter_key(identifier: str, purpose: str) -> str:
    return f"recover:{identifier}" if purpose == "recovery" else identifier


async def recovery_failure(
    deps: Deps,
    key: str,
    reason: str,
    ctx: RequestContext,
    *,
    user: User | None,
    kind: str = "",
    claimed: Claim | None = None,
) -> Failed:
    """One failed recovery verification, counted per account whether or not the account exists."""
    now = deps.clock.now()
    async with deps.store.transaction() as tx:
        if claimed is not None:
            updated, _ = await attempts.settle(tx, claimed, deps)
        else:
            updated = lockout.record_failure(await tx.throttles.get(key, for_update=True), key, now, deps.policy)
            await tx.throttles.put(updated)
        subject = key.removeprefix("recover:")
        await tx.audit.append(
            AuditEvent(
                EventType.RECOVERY_VERIFICATION_FAILED,
                Outcome.FAILURE,
                reason,
                subject_id=user.id if user else None,
                subject_name=subject,
                agency_id=user.agency_id if user else None,
                details={"kind": kind, "consecutive_failures": updated.failures},
            ),
            ctx,
        )
        locked = updated.locked_at is not None
        if locked:
            await tx.audit.append(
                AuditEvent(
                    EventType.RECOVERY_LOCKED,
                    Outcome.INFO,
                    "too_many_failures",
                    subject_id=user.id if user else None,
                    subject_name=subject,
                    agency_id=user.agency_id if user else None,
                ),
                ctx,
            )
    return Failed(reason, locked=locked)


def clean_name(name: str, default: str) -> str:
    printable = "".join(ch for ch in name if ch.isprintable()).strip()
    return printable[:MAX_NAME] or default


class Factors:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self.rp = RelyingParty(id=deps.rp_id, name=deps.portal_name, origin=deps.origin)

    # -- what the user has ----------------------------------------------------------------------
    async def methods(self, user: User) -> list[AuthMethod]:
        async with self._deps.store.read() as db:
            return list(await db.methods.for_user(user.id))

    async def snapshot(self, user: User) -> tuple[list[AuthMethod], int]:
        """The user's methods and unused recovery codes, in one read."""
        async with self._deps.store.read() as db:
            return list(await db.methods.for_user(user.id)), len(await db.recovery_codes.unused_for_user(user.id))

    async def recovery_codes_left(self, user: User) -> int:
        async with self._deps.store.read() as db:
            return len(await db.recovery_codes.unused_for_user(user.id))

    def required(self, user: User) -> int:
        p = self._deps.policy
        return required_methods(str(user.role), p.methods_required_user, p.methods_required_privileged)

    def meets_policy(self, user: User, methods: list[AuthMethod]) -> bool:
        return meets_policy(methods, self.required(user), privileged=user.role is not Role.USER)

    def kinds_available(self, methods: list[AuthMethod], codes_left: int) -> list[MethodKind]:
        """The ways this user can prove a second factor, the most recently used first."""
        ordered = sorted(
            (m for m in methods if m.kind in ENROLLABLE),
            key=lambda m: m.last_used_at or m.created_at,
            reverse=True,
        )
        kinds: list[MethodKind] = []
        for method in ordered:
            if method.kind not in kinds:
                kinds.append(method.kind)
        if codes_left:
            kinds.append(MethodKind.RECOVERY_CODE)
        return kinds

    # -- enrolment ------------------------------------------------------------------------------
    def start_totp(self, user: User) -> PendingTotp:
        secret = totp.new_secret()
        uri = totp.provisioning_uri(secret, f"{user.username}@{self._deps.domain}", self._deps.portal_name)
        return PendingTotp(self._deps.box.seal(secret.encode("ascii")), secret, uri, totp.qr_svg(uri))

    def reopen_totp(self, user: User, sealed: str) -> PendingTotp:
        secret = self._deps.box.open(sealed).decode("ascii")
        uri = totp.provisioning_uri(secret, f"{user.username}@{self._deps.domain}", self._deps.portal_name)
        return PendingTotp(sealed, secret, uri, totp.qr_svg(uri))

    async def confirm_totp(self, user: User, sealed: str, code: str, name: str, ctx: RequestContext) -> AuthMethod:
        secret = self._deps.box.open(sealed).decode("ascii")
        now = self._deps.clock.now()
        step = totp.matching_step(secret, code, now, self._deps.policy.totp_skew_steps)
        if step is None:
            await self._enrolment_failed(user, MethodKind.TOTP, "code_wrong", ctx)
            raise FactorRefused("the code does not match", code="totp_enrol_code_wrong")
        method = AuthMethod(
            id=str(uuid.uuid4()),
            user_id=user.id,
            kind=MethodKind.TOTP,
            name=clean_name(name, "Authenticator app"),
            created_at=now,
            last_used_at=now,
            totp_secret=sealed,
            # The confirming code is spent: it cannot be replayed to sign in.
            totp_last_step=step,
        )
        await self._added(user, method, ctx)
        return method

    def start_webauthn(self, user: User, existing: list[AuthMethod]) -> tuple[str, str]:
        challenge = webauthn.new_challenge()
        options = webauthn.registration_options(
            self.rp,
            user_handle=self.user_handle(user),
            username=f"{user.username}@{self._deps.domain}",
            display_name=user.name,
            challenge=challenge,
            existing=existing,
        )
        return challenge, options

    @staticmethod
    def user_handle(user: User) -> str:
        # The WebAuthn user handle must not carry personal data (WebAuthn 14.6.1): the opaque account id.
        return webauthn.handle_for(user.id)

    async def confirm_webauthn(
        self, user: User, challenge: str, credential_json: str, name: str, ctx: RequestContext
    ) -> AuthMethod:
        try:
            new = webauthn.verify_registration(self.rp, credential_json, challenge)
        except WebAuthnFailed as exc:
            await self._enrolment_failed(user, MethodKind.WEBAUTHN, exc.reason, ctx)
            raise FactorRefused(exc.reason, code="webauthn_enrol_failed") from exc
        now = self._deps.clock.now()
        method = AuthMethod(
            id=str(uuid.uuid4()),
            user_id=user.id,
            kind=MethodKind.WEBAUTHN,
            name=clean_name(name, "Security key"),
            created_at=now,
            last_used_at=now,
            credential_id=new.credential_id,
            public_key=new.public_key,
            sign_count=new.sign_count,
            transports=new.transports,
            synced=new.synced,
            discoverable=new.discoverable,
        )
        try:
            await self._added(user, method, ctx)
        except Conflict as exc:
            await self._enrolment_failed(user, MethodKind.WEBAUTHN, "credential_exists", ctx)
            raise FactorRefused("already registered", code="webauthn_already_registered") from exc
        return method

    async def _added(self, user: User, method: AuthMethod, ctx: RequestContext) -> None:
        async with self._deps.store.transaction() as tx:
            await tx.methods.add(method)
            await tx.audit.append(self._event(EventType.METHOD_ADDED, Outcome.SUCCESS, "", user, method=method), ctx)
        await notify(self._deps, user, "method_added", ctx, detail=f"{method.kind.label} “{method.name}”")

    async def _enrolment_failed(self, user: User, kind: MethodKind, reason: str, ctx: RequestContext) -> None:
        async with self._deps.store.transaction() as tx:
            await tx.audit.append(
                self._event(EventType.METHOD_ENROLMENT_FAILED, Outcome.FAILURE, reason, user, kind=str(kind)), ctx
            )

    # -- verification ---------------------------------------------------------------------------
    def webauthn_challenge(self, methods: list[AuthMethod]) -> tuple[str, str]:
        challenge = webauthn.new_challenge()
        keys = [m for m in methods if m.kind is MethodKind.WEBAUTHN]
        return challenge, webauthn.authentication_options(self.rp, challenge=challenge, methods=keys, require_uv=False)

    async def verify(
        self,
        user: User,
        kind: MethodKind,
        *,
        ctx: RequestContext,
        purpose: str,
        code: str = "",
        credential: str = "",
        challenge: str = "",
    ) -> Verified | Failed:
        """Check one second factor. A failure counts toward the account's lockout (CJIS AC-7).

        Recovery (purpose "recovery") counts on a counter of its own, so that a user whose sign-in
        is locked can still prove who they are and unlock it, within the same 5-in-15-minutes limit.
        """
        deps = self._deps
        identifier = counter_key(f"{user.username}@{deps.domain}", purpose)
        async with deps.store.read() as db:
            methods = list(await db.methods.for_user(user.id))
        claimed = await attempts.claim(deps, identifier)
        if claimed is None:
            return Failed("account_locked", locked=True)
        outcome = await self._check(
            user, kind, methods, ctx=ctx, purpose=purpose, code=code, credential=credential, challenge=challenge
        )
        if isinstance(outcome, Verified):
            await attempts.release(deps, claimed)
            return outcome
        return await self._failed(user, claimed, kind, outcome, purpose, ctx)

    async def _check(
        self,
        user: User,
        kind: MethodKind,
        methods: list[AuthMethod],
        *,
        ctx: RequestContext,
        purpose: str,
        code: str,
        credential: str,
        challenge: str,
    ) -> Verified | str:
        """The verified factor, or the reason it failed."""
        deps = self._deps
        now = deps.clock.now()
        reason = "method_unavailable"
        if kind is MethodKind.TOTP:
            reason = "totp_code_wrong"
            for method in (m for m in methods if m.kind is MethodKind.TOTP and m.totp_secret):
                try:
                    secret = deps.box.open(method.totp_secret or "").decode("ascii")
                except SecretUnreadable:
                    # The key that sealed it is gone from configuration; this app cannot be checked.
                    log.error("TOTP secret of method %s cannot be opened with the configured keys", method.id)
                    continue
                step = totp.matching_step(secret, code, now, deps.policy.totp_skew_steps)
                if step is None:
                    continue
                async with deps.store.transaction() as tx:
                    fresh = await tx.methods.accept_totp_step(method.id, step, now)
                if fresh:
                    return Verified(method, kind, totp.AMR)
                reason = "totp_code_replayed"
        elif kind is MethodKind.WEBAUTHN:
            reason = "webauthn_failed"
            outcome = await self._verify_webauthn(user, methods, credential, challenge, ctx, require_uv=False)
            if isinstance(outcome, Verified):
                return outcome
            reason = outcome.reason
        elif kind is MethodKind.RECOVERY_CODE:
            reason = "recovery_code_wrong"
            left = 0
            async with deps.store.transaction() as tx:
                found = recovery_codes.find(await tx.recovery_codes.unused_for_user(user.id), code)
                if found is not None and await tx.recovery_codes.spend(found.id, now):
                    left = len(await tx.recovery_codes.unused_for_user(user.id))
                    await tx.audit.append(
                        self._event(EventType.RECOVERY_CODE_USED, Outcome.SUCCESS, purpose, user, codes_left=left), ctx
                    )
                    spent = True
                else:
                    spent = False
            if spent:
                # NIST 800-63B rev 4: the holder hears of every use of a recovery secret.
                await notify(deps, user, "recovery_code_used", ctx, detail=str(left))
                return Verified(None, kind, recovery_codes.AMR)
        return reason

    async def _verify_webauthn(
        self,
        user: User | None,
        methods: list[AuthMethod],
        credential: str,
        challenge: str,
        ctx: RequestContext,
        *,
        require_uv: bool,
    ) -> Verified | Failed:
        try:
            credential_id = webauthn.credential_id_of(credential)
        except WebAuthnFailed as exc:
            return Failed(exc.reason)
        method = next((m for m in methods if m.credential_id == credential_id), None)
        if method is None or not challenge:
            return Failed("webauthn_unknown_credential")
        try:
            count = webauthn.verify_authentication(self.rp, credential, challenge, method, require_uv=require_uv)
        except WebAuthnFailed as exc:
            if exc.reason == "sign_count_regressed":
                async with self._deps.store.transaction() as tx:
                    await tx.audit.append(
                        AuditEvent(
                            EventType.SIGN_COUNT_REGRESSED,
                            Outcome.FAILURE,
                            "possible_cloned_authenticator",
                            subject_id=method.user_id,
                            subject_name=user.username if user else None,
                            agency_id=user.agency_id if user else None,
                            details={"method_id": method.id, "stored_sign_count": method.sign_count},
                        ),
                        ctx,
                    )
            return Failed(exc.reason)
        async with self._deps.store.transaction() as tx:
            await tx.methods.used_webauthn(method.id, count, self._deps.clock.now())
        return Verified(method, MethodKind.WEBAUTHN, webauthn.amr_for(method))

    async def _failed(
        self, user: User, claimed: Claim, kind: MethodKind, reason: str, purpose: str, ctx: RequestContext
    ) -> Failed:
        if purpose == "recovery":
            return await recovery_failure(
                self._deps, claimed.key, reason, ctx, user=user, kind=str(kind), claimed=claimed
            )
        async with self._deps.store.transaction() as tx:
            updated, locked = await attempts.settle(tx, claimed, self._deps)
            await tx.audit.append(
                self._event(
                    EventType.SECOND_FACTOR_FAILED,
                    Outcome.FAILURE,
                    reason,
                    user,
                    kind=str(kind),
                    purpose=purpose,
                    consecutive_failures=updated.failures,
                ),
                ctx,
            )
            if locked:
                await tx.audit.append(
                    self._event(EventType.ACCOUNT_LOCKED, Outcome.INFO, "too_many_failures", user), ctx
                )
                await tx.sessions.end_all_for_user(user.id, self._deps.clock.now(), EndReason.LOCKED)
        if locked:
            await notify(self._deps, user, "account_locked", ctx)
        return Failed(reason, locked=locked)

    # -- passkey sign-in (no username typed) -----------------------------------------------------
    def passkey_challenge(self) -> tuple[str, str]:
        challenge = webauthn.new_challenge()
        return challenge, webauthn.authentication_options(self.rp, challenge=challenge, methods=[], require_uv=True)

    async def verify_passkey(
        self, credential: str, challenge: str, ctx: RequestContext
    ) -> tuple[User, Verified] | Failed:
        """A discoverable credential with user verification: possession and PIN or biometric, AAL2."""
        try:
            credential_id = webauthn.credential_id_of(credential)
        except WebAuthnFailed as exc:
            return Failed(exc.reason)
        async with self._deps.store.read() as db:
            method = await db.methods.by_credential_id(credential_id)
            user = await db.users.get(method.user_id) if method else None
        if method is None or user is None:
            return Failed("webauthn_unknown_credential")
        outcome = await self._verify_webauthn(user, [method], credential, challenge, ctx, require_uv=True)
        if isinstance(outcome, Failed):
            return outcome
        return user, outcome

    # -- recovery codes -------------------------------------------------------------------------
    async def issue_recovery_codes(self, user: User, ctx: RequestContext) -> list[str]:
        """A new set of ten; the old set stops working in the same transaction."""
        codes = recovery_codes.generate()
        now = self._deps.clock.now()
        async with self._deps.store.transaction() as tx:
            voided = await tx.recovery_codes.replace_set(user.id, recovery_codes.records(user.id, codes, now))
            await tx.audit.append(
                self._event(
                    EventType.RECOVERY_CODES_GENERATED,
                    Outcome.SUCCESS,
                    "regenerated" if voided else "first_set",
                    user,
                    codes=len(codes),
                    voided=voided,
                ),
                ctx,
            )
        if voided:
            await notify(self._deps, user, "recovery_codes_regenerated", ctx)
        return codes

    # -- management -----------------------------------------------------------------------------
    async def rename(self, user: User, method_id: str, name: str, ctx: RequestContext) -> AuthMethod:
        method = await self._own(user, method_id)
        new_name = clean_name(name, method.name)
        async with self._deps.store.transaction() as tx:
            await tx.methods.rename(method.id, new_name)
            await tx.audit.append(
                self._event(
                    EventType.METHOD_RENAMED,
                    Outcome.SUCCESS,
                    "",
                    user,
                    method=method,
                    before={"name": method.name},
                    after={"name": new_name},
                ),
                ctx,
            )
        return method

    async def remove(self, user: User, method_id: str, ctx: RequestContext) -> AuthMethod:
        method = await self._own(user, method_id)
        remaining = [m for m in await self.methods(user) if m.id != method.id]
        if not self.meets_policy(user, remaining):
            raise FactorRefused("the last method the policy needs", code="method_last_required")
        async with self._deps.store.transaction() as tx:
            await tx.methods.delete(method.id)
            await tx.audit.append(self._event(EventType.METHOD_REMOVED, Outcome.SUCCESS, "", user, method=method), ctx)
        await notify(self._deps, user, "method_removed", ctx, detail=f"{method.kind.label} “{method.name}”")
        return method

    async def _own(self, user: User, method_id: str) -> AuthMethod:
        async with self._deps.store.read() as db:
            method = await db.methods.get(method_id[:64])
        if method is None or method.user_id != user.id:
            # Another user's method looks exactly like a missing one.
            raise FactorRefused("no such method", code="method_not_found")
        return method

    def _event(
        self,
        event_type: EventType,
        outcome: Outcome,
        reason: str,
        user: User,
        *,
        method: AuthMethod | None = None,
        **details: object,
    ) -> AuditEvent:
        if method is not None:
            details = {"method_id": method.id, "kind": str(method.kind), "name": method.name, **details}
        return own_event(event_type, outcome, reason, user, self._deps.domain, details)
