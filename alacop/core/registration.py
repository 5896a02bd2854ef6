"""New-user registration requests and activation links, as plain values with their checks (CJIS AC-2)."""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from alacop.core.accounts import Agency, validate_email
from alacop.core.errors import InvalidInput

# CJIS 5.2: security awareness training is repeated every year.
TRAINING_VALID_DAYS = 365
# Issue 5: a request the agency has not decided within 30 days lapses; links live 72 hours.
REQUEST_LIFETIME = timedelta(days=30)
ACTIVATION_LIFETIME = timedelta(hours=72)
# The email code: 8 characters from 32 (40 bits), 15 minutes, 5 tries.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
CODE_LIFETIME = timedelta(minutes=15)
CODE_TRIES = 5
# How far ahead of a disabling the user is warned by email.
WARNING_DAYS = 14

_PHONE = re.compile(r"^\+?[0-9 ().-]{7,25}$")
# Names are letters (any script), combining marks, spaces and . ' ’ -; titles may add digits and , & / ( ).
# Nothing else: a name is echoed in mail, and "Visit https://…" must not fit in one.
_NAME_CHARS = frozenset(" .'’-")
_TITLE_CHARS = frozenset(" .'’-,&/()")


class RegistrationStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Application:
    """What the applicant typed, checked; it becomes a Registration once the work email is confirmed."""

    first_name: str
    last_name: str
    agency_id: str
    title: str
    email: str
    phone: str
    supervisor: str
    reason: str
    training_date: date
    rules_sha256: str

    def as_dict(self) -> dict[str, str]:
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "agency_id": self.agency_id,
            "title": self.title,
            "email": self.email,
            "phone": self.phone,
            "supervisor": self.supervisor,
            "reason": self.reason,
            "training_date": self.training_date.isoformat(),
            "rules_sha256": self.rules_sha256,
        }

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Application:
        return cls(**{**data, "training_date": date.fromisoformat(data["training_date"])})  # type: ignore[arg-type]

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass(frozen=True, slots=True)
class Registration:
    id: str
    application: Application
    status: RegistrationStatus
    created_at: datetime
    expires_at: datetime
    # The applicant's status link, stored hashed: it shows where the request stands, nothing more.
    status_token_hash: str
    decided_at: datetime | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    user_id: str | None = None

    @property
    def agency_id(self) -> str:
        return self.application.agency_id


@dataclass(frozen=True, slots=True)
class ActivationLink:
    token_hash: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        return self.used_at is None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class FieldProblem:
    field: str
    message: str


def _allowed(ch: str, extra: frozenset[str], digits: bool) -> bool:
    kind = unicodedata.category(ch)
    return kind[0] in "LM" or ch in extra or (digits and kind == "Nd")


def _text(value: str, field: str, label: str, limit: int, problems: list[FieldProblem], *, title: bool = False) -> str:
    clean = unicodedata.normalize("NFC", " ".join(value.split()))
    extra = _TITLE_CHARS if title else _NAME_CHARS
    if not clean:
        problems.append(FieldProblem(field, f"Enter your {label}."))
    elif len(clean) > limit:
        problems.append(FieldProblem(field, f"Enter your {label} in at most {limit} characters."))
    elif not all(_allowed(c, extra, title) for c in clean) or not any(c.isalpha() for c in clean):
        allowed = "letters, digits, spaces and . , ' - & / ( )" if title else "letters, spaces, and . ' -"
        problems.append(FieldProblem(field, f"Enter your {label} using {allowed} only."))
    return clean


def check_application(
    form: dict[str, str],
    *,
    agency: Agency | None,
    today: date,
    rules_sha256: str,
) -> tuple[Application | None, list[FieldProblem]]:
    """Every field checked, with one plain message per problem; an Application only when all pass."""
    problems: list[FieldProblem] = []
    # Control characters (NUL among them, which PostgreSQL refuses in text) belong in no field.
    for name, value in form.items():
        if any((ord(c) < 32 and c not in "\t\r\n") or ord(c) == 127 for c in value):
            problems.append(FieldProblem(name, "Remove the characters that cannot be typed from this field."))
    if problems:
        return None, problems
    first = _text(form.get("first_name", ""), "first_name", "first name", 100, problems)
    last = _text(form.get("last_name", ""), "last_name", "last name", 100, problems)
    title = _text(form.get("title", ""), "title", "job title", 100, problems, title=True)
    supervisor = _text(form.get("supervisor", ""), "supervisor", "supervisor's name", 100, problems)
    reason = " ".join(form.get("reason", "").split())
    if not reason:
        problems.append(FieldProblem("reason", "Say why you need access to AlaCOP."))
    elif len(reason) > 1000:
        problems.append(FieldProblem("reason", "Say why you need access in at most 1,000 characters."))
    if agency is None:
        problems.append(FieldProblem("agency", "Choose your agency from the list, by name or ORI."))
    email = ""
    try:
        email = validate_email(form.get("email", "")).lower()
    except InvalidInput:
        problems.append(FieldProblem("email", "Enter your work email address, for example jane.doe@mpd.example.gov."))
    if email and agency is not None and email.rpartition("@")[2] not in agency.email_domains:
        # The agency's own domains vouch for the address being a work one (CJIS AC-2: known users).
        domains = ", ".join(agency.email_domains) or "none yet; ask your coordinator"
        problems.append(FieldProblem("email", f"Use your work email at your agency's domain ({domains})."))
    phone = " ".join(form.get("phone", "").split())
    if not _PHONE.fullmatch(phone) or sum(c.isdigit() for c in phone) < 7:
        problems.append(FieldProblem("phone", "Enter your work phone number, for example (334) 555-0100."))
    trained: date | None = None
    try:
        trained = date.fromisoformat(form.get("training_date", "").strip())
    except ValueError:
        problems.append(FieldProblem("training_date", "Enter the date of your CJIS security awareness training."))
    if trained is not None:
        if trained > today:
            problems.append(FieldProblem("training_date", "The training date cannot be in the future."))
        elif trained <= today - timedelta(days=TRAINING_VALID_DAYS):
            problems.append(
                FieldProblem(
                    "training_date",
                    "Your security awareness training must be within the last year. Complete it, then apply.",
                )
            )
    if form.get("accept_rules", "") != "yes":
        problems.append(FieldProblem("accept_rules", "Read and accept the rules of behavior to continue."))
    if problems or agency is None or trained is None:
        return None, problems
    application = Application(
        first_name=first,
        last_name=last,
        agency_id=agency.id,
        title=title,
        email=email,
        phone=phone,
        supervisor=supervisor,
        reason=reason,
        training_date=trained,
        rules_sha256=rules_sha256,
    )
    return application, []


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(typed: str) -> str:
    return "".join(typed.split()).replace("-", "").upper()[:32]


def initials(first_name: str, last_name: str) -> str:
    """Two ASCII letters for a username, from names in any script ("Zoë Ó Briain" gives "zo")."""

    def letter(name: str) -> str:
        for ch in unicodedata.normalize("NFKD", name):
            if ch.isascii() and ch.isalpha():
                return ch.lower()
        return "x"

    return letter(first_name) + letter(last_name)


def username_candidates(prefix: str) -> list[str]:
    """Initials then four digits, from 0101 up, as the seed's example cs0101."""
    return [f"{prefix}{n:04d}" for n in range(101, 10_000)]


def training_lapses_on(trained: date) -> date:
    return trained + timedelta(days=TRAINING_VALID_DAYS)
