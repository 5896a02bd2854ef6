"""The tamper-evident audit trail: a closed vocabulary of events, chained by SHA-256 or HMAC."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from alacop.core.clock import isoformat
from alacop.core.context import RequestContext

if TYPE_CHECKING:
    from alacop.core.accounts import User


class EventType(StrEnum):
    BANNER_ACKNOWLEDGED = "BannerAcknowledged"
    LOGIN_SUCCEEDED = "LoginSucceeded"
    LOGIN_FAILED = "LoginFailed"
    ACCOUNT_LOCKED = "AccountLocked"
    ACCOUNT_UNLOCKED = "AccountUnlocked"
    ACCOUNT_CREATED = "AccountCreated"
    ACCOUNT_DISABLED = "AccountDisabled"
    ACCOUNT_ENABLED = "AccountEnabled"
    AGENCY_CREATED = "AgencyCreated"
    PASSWORD_CHANGED = "PasswordChanged"
    PASSWORD_CHANGE_FAILED = "PasswordChangeFailed"
    PASSWORD_REHASHED = "PasswordRehashed"
    BANNED_LIST_UPDATED = "BannedListUpdated"
    SESSION_STARTED = "SessionStarted"
    SESSION_ENDED = "SessionEnded"
    SESSION_EXPIRED = "SessionExpired"
    FLOW_EXPIRED = "FlowExpired"
    REQUEST_REFUSED = "RequestRefused"
    RATE_LIMITED = "RateLimited"
    AUDIT_EXPORTED = "AuditExported"
    AUDIT_VERIFIED = "AuditVerified"
    ACCOUNTS_LISTED = "AccountsListed"
    METHOD_ADDED = "MethodAdded"
    METHOD_REMOVED = "MethodRemoved"
    METHOD_RENAMED = "MethodRenamed"
    METHOD_ENROLMENT_FAILED = "MethodEnrolmentFailed"
    SECOND_FACTOR_FAILED = "SecondFactorFailed"
    RECOVERY_CODE_USED = "RecoveryCodeUsed"
    RECOVERY_CODES_GENERATED = "RecoveryCodesGenerated"
    SIGN_COUNT_REGRESSED = "SignCountRegressed"
    REAUTHENTICATED = "Reauthenticated"
    REAUTHENTICATION_FAILED = "ReauthenticationFailed"
    OTHER_SESSIONS_ENDED = "OtherSessionsEnded"
    NOTIFICATION_FAILED = "NotificationFailed"
    SECRETS_RESEALED = "SecretsResealed"
    METHODS_RESET = "MethodsReset"
    RECOVERY_STARTED = "RecoveryStarted"
    RECOVERY_VERIFIED = "RecoveryVerified"
    RECOVERY_VERIFICATION_FAILED = "RecoveryVerificationFailed"
    RECOVERY_LOCKED = "RecoveryLocked"
    CAPTCHA_FAILED = "CaptchaFailed"
    PASSWORD_RESET = "PasswordReset"
    AGENCIES_LISTED = "AgenciesListed"
    AGENCY_UPDATED = "AgencyUpdated"
    COORDINATORS_CHANGED = "CoordinatorsChanged"
    ROLE_CHANGED = "RoleChanged"
    TRAINING_UPDATED = "TrainingUpdated"
    SESSIONS_ENDED = "SessionsEnded"
    ACCOUNT_DELETED = "AccountDeleted"
    REGISTRATION_CODE_SENT = "RegistrationCodeSent"
    REGISTRATION_CODE_FAILED = "RegistrationCodeFailed"
    REGISTRATION_REFUSED = "RegistrationRefused"
    REGISTRATION_SUBMITTED = "RegistrationSubmitted"
    REGISTRATION_APPROVED = "RegistrationApproved"
    REGISTRATION_DENIED = "RegistrationDenied"
    REGISTRATION_EXPIRED = "RegistrationExpired"
    ACTIVATION_LINK_ISSUED = "ActivationLinkIssued"
    ACCOUNT_ACTIVATED = "AccountActivated"
    ACTIVATION_FAILED = "ActivationFailed"
    CONSOLE_REFUSED = "ConsoleRefused"
    AUDIT_SEARCHED = "AuditSearched"
    MAINTENANCE_RUN = "MaintenanceRun"
    DISABLE_WARNING_SENT = "DisableWarningSent"
    CLIENT_CREATED = "ClientCreated"
    CLIENT_DISABLED = "ClientDisabled"
    CLIENT_SECRET_ROTATED = "ClientSecretRotated"
    AUTHORIZATION_GRANTED = "AuthorizationGranted"
    TOKEN_ISSUED = "TokenIssued"
    TOKEN_REFRESHED = "TokenRefreshed"
    REFRESH_TOKEN_REUSE_DETECTED = "RefreshTokenReuseDetected"
    TOKEN_REVOKED = "TokenRevoked"
    LOGOUT_PROPAGATED = "LogoutPropagated"
    AUTHORIZATION_REFUSED = "AuthorizationRefused"
    SIGNING_KEYS_ROTATED = "SigningKeysRotated"
    SIGNING_KEYS_CREATED = "SigningKeysCreated"
    SAML_REQUEST_RECEIVED = "SamlRequestReceived"
    SAML_REQUEST_REFUSED = "SamlRequestRefused"
    SAML_ASSERTION_ISSUED = "SamlAssertionIssued"
    SAML_SP_ADDED = "SamlServiceProviderAdded"
    SAML_SP_DISABLED = "SamlServiceProviderDisabled"
    SAML_CERT_ROTATED = "SamlCertificateRotated"
    SAML_CERT_CREATED = "SamlCertificateCreated"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    INFO = "info"


# Keys whose values must never be written, whatever a caller passes (secrets never reach the trail).
_SECRET_KEYS = frozenset(
    {"password", "new_password", "current_password", "secret", "token", "code", "csrf_token", "session"}
)

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEvent:
    type: EventType
    outcome: Outcome
    reason: str = ""
    actor_id: str | None = None
    subject_id: str | None = None
    subject_name: str | None = None
    agency_id: str | None = None
    details: Mapping[str, object] = field(default_factory=dict)


def own_event(
    event_type: EventType, outcome: Outcome, reason: str, user: User, domain: str, details: Mapping[str, object]
) -> AuditEvent:
    """An event a signed-in user caused on their own account: they are both actor and subject."""
    return AuditEvent(
        event_type,
        outcome,
        reason,
        actor_id=user.id,
        subject_id=user.id,
        subject_name=f"{user.username}@{domain}",
        agency_id=user.agency_id,
        details=details,
    )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An event as stored: numbered, timed, placed, and chained to the one before."""

    seq: int
    occurred_at: str
    type: str
    outcome: str
    reason: str
    actor_id: str | None
    subject_id: str | None
    subject_name: str | None
    agency_id: str | None
    source_ip: str
    user_agent: str
    request_id: str
    details: str
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "occurred_at": self.occurred_at,
            "type": self.type,
            "outcome": self.outcome,
            "reason": self.reason,
            "actor_id": self.actor_id,
            "subject_id": self.subject_id,
            "subject_name": self.subject_name,
            "agency_id": self.agency_id,
            "source_ip": self.source_ip,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "details": json.loads(self.details),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def scrub(details: Mapping[str, object]) -> dict[str, object]:
    """Redact secret-named keys at any depth and bound every string, so no caller can leak one."""
    return {key: _scrub_value(key, value) for key, value in details.items()}


def _scrub_value(key: str, value: object) -> object:
    if key.lower() in _SECRET_KEYS:
        return "[redacted]"
    if isinstance(value, str):
        return value[:512]
    if isinstance(value, Mapping):
        return {str(k): _scrub_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value("", v) for v in value]
    return value


class AuditChain:
    """Computes record hashes. With a key, the chain is an HMAC chain an intruder cannot re-forge."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key

    def seal(self, event: AuditEvent, *, seq: int, at: datetime, ctx: RequestContext, prev_hash: str) -> AuditRecord:
        details = json.dumps(scrub(event.details), sort_keys=True, separators=(",", ":"), default=str)
        unsealed = AuditRecord(
            seq=seq,
            occurred_at=isoformat(at),
            type=str(event.type),
            outcome=str(event.outcome),
            reason=event.reason[:128],
            actor_id=event.actor_id,
            subject_id=event.subject_id,
            subject_name=(event.subject_name or None) and event.subject_name[:254],
            agency_id=event.agency_id,
            source_ip=ctx.source_ip[:64],
            user_agent=ctx.user_agent[:512],
            request_id=ctx.request_id[:64],
            details=details,
            prev_hash=prev_hash,
            hash="",
        )
        return _with_hash(unsealed, self.digest(unsealed))

    def digest(self, record: AuditRecord) -> str:
        body = json.dumps(
            [
                record.seq,
                record.occurred_at,
                record.type,
                record.outcome,
                record.reason,
                record.actor_id,
                record.subject_id,
                record.subject_name,
                record.agency_id,
                record.source_ip,
                record.user_agent,
                record.request_id,
                record.details,
                record.prev_hash,
            ],
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")
        if self._key is not None:
            return hmac.new(self._key, body, hashlib.sha256).hexdigest()
        return hashlib.sha256(body).hexdigest()


def _with_hash(record: AuditRecord, digest: str) -> AuditRecord:
    return replace(record, hash=digest)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str = ""


def verify_chain(
    records: Iterable[AuditRecord], chain: AuditChain, head: tuple[int, str] | None = None
) -> VerifyResult:
    """Walk the records in seq order; an edit, a deletion or a reordering breaks a link.

    The head (last seq and hash, kept apart from the records) catches records cut from the end.
    """
    expected_prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    for record in records:
        if record.seq != expected_seq:
            return VerifyResult(False, checked, record.seq, f"expected record {expected_seq}, found {record.seq}")
        if record.prev_hash != expected_prev:
            return VerifyResult(False, checked, record.seq, "link to the previous record is broken")
        if not hmac.compare_digest(chain.digest(record), record.hash):
            return VerifyResult(False, checked, record.seq, "record content does not match its hash")
        expected_prev = record.hash
        expected_seq += 1
        checked += 1
    if head is not None and (head[0] != checked or (checked and head[1] != expected_prev)):
        return VerifyResult(False, checked, checked + 1, f"records after {checked} are missing")
    return VerifyResult(True, checked)
