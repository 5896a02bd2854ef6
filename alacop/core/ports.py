"""What the core needs from storage, as Protocols; store/ implements them for SQL and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from alacop.core.accounts import Agency, User
from alacop.core.audit import AuditEvent, AuditRecord
from alacop.core.context import RequestContext
from alacop.core.credentials import AuthMethod, RecoveryCode
from alacop.core.oidc import AuthorizationCode, Client, IssuedToken, SigningKey
from alacop.core.registration import ActivationLink, Registration, RegistrationStatus
from alacop.core.saml import IdpCertificate, PendingRequest, ServiceProvider
from alacop.core.sessions import Session

# The longest address a flow returns to (an application's request, kept in the flow while the user signs
# in); a longer request is refused to the application rather than lost at the end of the sign-in.
MAX_RETURN_TO = 8192


@dataclass(frozen=True, slots=True)
class FlowRecord:
    id: str
    kind: str
    state: str
    issued_at: datetime
    expires_at: datetime
    csrf_token: str
    binding: str
    return_to: str | None
    payload: str


@dataclass(frozen=True, slots=True)
class Throttle:
    """Recent consecutive failures for one normalised identifier, whether or not an account has it."""

    key: str
    failure_times: tuple[datetime, ...]
    locked_at: datetime | None

    @property
    def failures(self) -> int:
        return len(self.failure_times)


@dataclass(frozen=True, slots=True)
class UserQuery:
    """A console search; agency_ids None means every agency (administrators only)."""

    text: str = ""
    agency_ids: tuple[str, ...] | None = None
    status: str | None = None
    role: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """An audit-trail search; agency_ids None means every agency, () none at all."""

    user_id: str | None = None
    agency_ids: tuple[str, ...] | None = None
    type: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 200


class AgencyRepository(Protocol):
    async def add(self, agency: Agency) -> None: ...
    async def get(self, agency_id: str) -> Agency | None: ...
    async def by_ori(self, ori: str) -> Agency | None: ...
    async def list(self) -> Sequence[Agency]: ...
    async def update(self, agency: Agency) -> None: ...
    async def coordinators(self, agency_id: str) -> Sequence[str]:
        """The ids of the users who coordinate this agency."""
        ...

    async def set_coordinators(self, agency_id: str, user_ids: Sequence[str]) -> None: ...
    async def coordinated_by(self, user_id: str) -> Sequence[str]:
        """The ids of the agencies this user coordinates."""
        ...


class UserRepository(Protocol):
    async def add(self, user: User) -> None: ...
    async def get(self, user_id: str, *, for_update: bool = False) -> User | None:
        """With for_update, the row stays locked until the transaction ends (PostgreSQL; SQLite's
        transactions hold the whole database's write lock anyway)."""
        ...

    async def get_with_agency(self, user_id: str) -> tuple[User, Agency | None] | None:
        """The user and their agency in one read (the token endpoint and userinfo need both)."""
        ...

    async def by_username(self, username: str) -> User | None: ...
    async def list(self, agency_id: str | None = None) -> Sequence[User]: ...
    async def update(self, user: User) -> None: ...
    async def record_sign_in(self, user_id: str, at: datetime) -> bool:
        """Set the last sign-in only while the account is active; False if it was disabled meanwhile.

        Column-level, so a sign-in never writes back fields another request changed after it read them.
        """
        ...

    async def set_password(
        self, user_id: str, password_hash: str, changed_at: datetime, *, first: bool = False
    ) -> bool:
        """A new password, only while the account is active (and, with first, has none yet)."""
        ...

    async def rehash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        """Replace the stored hash of the same password, only if it is still the one that was checked."""
        ...

    async def by_email(self, email: str) -> Sequence[User]: ...
    async def search(self, query: UserQuery) -> Sequence[User]: ...
    async def usernames_starting(self, prefix: str) -> set[str]: ...
    async def delete(self, user_id: str, at: datetime) -> None:
        """Remove the account and everything it holds, and retire its username (CJIS IA-4 d)."""
        ...

    async def retired_since(self, prefix: str, since: datetime) -> set[str]:
        """Usernames with this prefix retired at or after `since`: not to be given out again yet."""
        ...


class RegistrationRepository(Protocol):
    async def add(self, registration: Registration) -> None: ...
    async def get(self, registration_id: str) -> Registration | None: ...
    async def by_status_token(self, token_hash: str) -> Registration | None: ...
    async def pending_for_email(self, email: str) -> Registration | None: ...
    async def list(
        self, *, status: RegistrationStatus | None = None, agency_ids: tuple[str, ...] | None = None
    ) -> Sequence[Registration]: ...
    async def stale(self, now: datetime) -> Sequence[Registration]:
        """Pending requests past their expiry."""
        ...

    async def decide(self, registration: Registration) -> bool:
        """Store a decision only if the request is still pending: two deciders cannot both win."""
        ...


class ActivationRepository(Protocol):
    async def replace(self, link: ActivationLink) -> None:
        """Store a new link for the user; any earlier unused link stops working."""
        ...

    async def get(self, token_hash: str) -> ActivationLink | None: ...
    async def spend(self, token_hash: str, at: datetime) -> bool:
        """Mark the link used only if it was unused and unexpired: it works once."""
        ...


class ClientRepository(Protocol):
    async def add(self, client: Client) -> None: ...
    async def get(self, client_id: str) -> Client | None: ...
    async def list(self) -> Sequence[Client]: ...
    async def update(self, client: Client) -> None: ...


class SigningKeyRepository(Protocol):
    async def add(self, key: SigningKey) -> None: ...
    async def list(self) -> Sequence[SigningKey]:
        """Every key, newest first, retired ones included (the caller filters by `published`)."""
        ...

    async def supersede(self, alg: str, retire_after: datetime, keep: str) -> int:
        """Mark every current key of `alg` but `keep` as superseded, published until `retire_after`."""
        ...

    async def reseal(self, kid: str, private_sealed: str) -> None: ...


class ServiceProviderRepository(Protocol):
    async def add(self, sp: ServiceProvider) -> None: ...
    async def get(self, sp_id: str) -> ServiceProvider | None: ...
    async def by_entity_id(self, entity_id: str) -> ServiceProvider | None: ...
    async def list(self) -> Sequence[ServiceProvider]: ...
    async def update(self, sp: ServiceProvider) -> None: ...


class IdpCertificateRepository(Protocol):
    async def add(self, cert: IdpCertificate) -> None: ...
    async def list(self) -> Sequence[IdpCertificate]:
        """Every certificate, newest first, retired ones included (the caller filters by `published`)."""
        ...

    async def supersede(self, retire_after: datetime, keep: str) -> int:
        """End every certificate but `keep` at `retire_after`, or sooner if it already ends sooner."""
        ...

    async def reseal(self, cert_id: str, private_sealed: str) -> None: ...


class PendingRequestRepository(Protocol):
    async def add(self, pending: PendingRequest) -> None: ...
    async def get(self, pending_id: str) -> PendingRequest | None: ...
    async def by_request_id(self, sp_id: str, request_id: str) -> PendingRequest | None: ...
    async def answer(self, pending_id: str, at: datetime) -> bool:
        """Mark the request answered only if it was not: of two answers to one request, one wins."""
        ...

    async def purge_expired(self, before: datetime) -> int: ...


class CodeRepository(Protocol):
    async def add(self, code: AuthorizationCode) -> None: ...
    async def get(self, code_hash: str) -> AuthorizationCode | None: ...
    async def spend(self, code_hash: str, at: datetime) -> bool:
        """Mark the code used only if it was unused: of two redemptions, one wins (RFC 6749 4.1.2)."""
        ...

    async def purge_expired(self, before: datetime) -> int: ...


class TokenRepository(Protocol):
    async def add(self, token: IssuedToken) -> None: ...
    async def add_many(self, tokens: Sequence[IssuedToken]) -> None:
        """Several tokens in one statement (the token endpoint's group commit)."""
        ...

    async def by_access_hash(self, access_hash: str) -> IssuedToken | None: ...
    async def by_refresh_hash(self, refresh_hash: str) -> IssuedToken | None: ...
    async def refresh_grant(self, refresh_hash: str) -> tuple[IssuedToken, User | None, Agency | None] | None:
        """The token with its user and the user's agency, in one read (the refresh grant)."""
        ...

    async def mark_refreshed(self, token_id: str, at: datetime) -> bool:
        """Spend a refresh token only if unspent and unrevoked: rotation, and the reuse check."""
        ...

    async def revoke_family(self, family_id: str, at: datetime) -> int: ...
    async def revoke_for_code(self, code_hash: str, at: datetime) -> int: ...
    async def revoke_for_session(self, session_hash: str, at: datetime) -> Sequence[IssuedToken]:
        """Revoke what a portal session's sign-ins issued; returns the tokens revoked."""
        ...

    async def pending_logouts(self, limit: int) -> Sequence[tuple[str, str, str]]:
        """(client_id, user_id, session_hash) of sessions ended in bulk whose applications are not told yet."""
        ...

    async def claim_logout(self, client_id: str, session_hash: str) -> bool:
        """Take one pending notice: of several senders (instances), exactly one gets True."""
        ...


class SessionRepository(Protocol):
    async def add(self, session: Session) -> None: ...
    async def get(self, id_hash: str, *, for_update: bool = False) -> Session | None:
        """With for_update, the row stays locked until the transaction ends (see UserRepository.get)."""
        ...

    async def touch(self, id_hash: str, at: datetime) -> None: ...
    async def end(self, id_hash: str, at: datetime, reason: str) -> bool: ...
    async def end_all_for_user(self, user_id: str, at: datetime, reason: str) -> int:
        """End every open session of the user, and revoke every token applications hold for them.

        Called when an account is disabled, locked, re-keyed or re-proofed: what single sign-on issued
        must not outlive the sessions (a refresh token would otherwise keep an application signed in).
        """
        ...

    async def active_for_user(self, user_id: str) -> Sequence[Session]: ...
    async def reauthenticated(self, id_hash: str, at: datetime) -> None: ...


class FlowRepository(Protocol):
    async def add(self, flow: FlowRecord) -> None: ...
    async def get(self, flow_id: str) -> FlowRecord | None: ...
    async def save(self, flow: FlowRecord) -> None: ...
    async def delete(self, flow_id: str) -> bool: ...
    async def purge_expired(self, before: datetime) -> int: ...


class ThrottleRepository(Protocol):
    async def get(self, key: str, *, for_update: bool = False) -> Throttle | None:
        """With for_update, the row is created if missing and locked until the transaction ends,
        so parallel failures cannot overwrite each other's count."""
        ...

    async def put(self, throttle: Throttle) -> None: ...
    async def clear(self, key: str) -> None: ...


class MethodRepository(Protocol):
    async def add(self, method: AuthMethod) -> None: ...
    async def for_user(self, user_id: str) -> Sequence[AuthMethod]: ...
    async def get(self, method_id: str) -> AuthMethod | None: ...
    async def by_credential_id(self, credential_id: str) -> AuthMethod | None: ...
    async def rename(self, method_id: str, name: str) -> None: ...
    async def delete(self, method_id: str) -> None: ...
    async def delete_all_for_user(self, user_id: str) -> int: ...
    async def accept_totp_step(self, method_id: str, step: int, at: datetime) -> bool:
        """Record a TOTP step only if it is newer than the last one: a replayed code loses the race."""
        ...

    async def used_webauthn(self, method_id: str, sign_count: int, at: datetime) -> None: ...
    async def reseal(self, method_id: str, totp_secret: str) -> None: ...


class RecoveryCodeRepository(Protocol):
    async def replace_set(self, user_id: str, codes: Sequence[RecoveryCode]) -> int: ...
    async def unused_for_user(self, user_id: str) -> Sequence[RecoveryCode]: ...
    async def spend(self, code_id: str, at: datetime) -> bool:
        """Mark a code used only if it was unused: two requests with one code cannot both win."""
        ...


class AuditRepository(Protocol):
    async def append(self, event: AuditEvent, ctx: RequestContext) -> None:
        """Records the event with the transaction: it is sealed into the chain when the transaction
        ends, and committed with it or not at all."""
        ...

    async def lock(self) -> None:
        """Takes the chain's head lock now, so work checked after it runs one at a time across instances."""
        ...


class Transaction(Protocol):
    """One unit of work: every change and the audit events recording it commit together."""

    agencies: AgencyRepository
    users: UserRepository
    sessions: SessionRepository
    flows: FlowRepository
    throttles: ThrottleRepository
    methods: MethodRepository
    recovery_codes: RecoveryCodeRepository
    registrations: RegistrationRepository
    activations: ActivationRepository
    clients: ClientRepository
    signing_keys: SigningKeyRepository
    codes: CodeRepository
    tokens: TokenRepository
    saml_sps: ServiceProviderRepository
    saml_certs: IdpCertificateRepository
    saml_requests: PendingRequestRepository
    audit: AuditRepository


class AuditReader(Protocol):
    def records(self, since: datetime | None = None, until: datetime | None = None) -> AsyncIterator[AuditRecord]: ...
    async def head(self) -> tuple[int, str]: ...
    async def recent_for_subject(self, subject_id: str, types: Sequence[str], limit: int) -> Sequence[AuditRecord]: ...
    async def search(self, query: AuditQuery) -> Sequence[AuditRecord]:
        """Newest first, at most query.limit records."""
        ...


class Store(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...
    def read(self) -> AbstractAsyncContextManager[Transaction]:
        """Reads without transaction overhead; writes and audit appends belong in transaction()."""
        ...

    @property
    def audit_reader(self) -> AuditReader: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class RateLimiter(Protocol):
    """Counts hits per key in fixed windows; shared across instances when backed by Redis."""

    async def hit(self, key: str, limit: int, window_seconds: int) -> bool: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...
