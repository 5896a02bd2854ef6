"""Agencies and user accounts as plain values."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from alacop.core.errors import InvalidInput

# An ORI is nine characters: a two-letter state code and seven letters or digits (NCIC).
_ORI = re.compile(r"^[A-Z]{2}[A-Z0-9]{7}$")
_USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}$")


class Role(StrEnum):
    USER = "user"
    COORDINATOR = "coordinator"
    ADMIN = "admin"


class UserStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


def validate_ori(value: str) -> str:
    # Check before upper-casing: "ß".upper() is "SS", which would turn junk into a valid-looking ORI.
    raw = value.strip()
    ori = raw.upper()
    if not raw.isascii() or not _ORI.fullmatch(ori):
        raise InvalidInput("an ORI is 9 characters: 2 letters, then 7 letters or digits", code="invalid_ori")
    return ori


def validate_username(value: str) -> str:
    username = value.strip().lower()
    if not _USERNAME.fullmatch(username):
        raise InvalidInput(
            "a username is 2-32 characters: a letter, then letters, digits, '.', '_' or '-'",
            code="invalid_username",
        )
    return username


def validate_domain(value: str) -> str:
    domain = value.strip().lower()
    if not domain.isascii() or not _DOMAIN.fullmatch(domain):
        raise InvalidInput(f"not a valid email domain: {value!r}", code="invalid_domain")
    return domain


def validate_email(value: str) -> str:
    email = value.strip()
    if not _EMAIL.fullmatch(email):
        raise InvalidInput("not a valid email address", code="invalid_email")
    local, _, domain = email.rpartition("@")
    return f"{local}@{validate_domain(domain)}"


@dataclass(frozen=True, slots=True)
class Agency:
    id: str
    ori: str
    name: str
    email_domains: tuple[str, ...] = ()
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    email: str
    name: str
    agency_id: str
    role: Role
    status: UserStatus
    password_hash: str | None
    password_changed_at: datetime | None
    must_change_password: bool
    created_at: datetime
    last_login_at: datetime | None = None
    disabled_at: datetime | None = None
    meta: dict[str, str] = field(default_factory=dict)
    # CJIS 5.2: the date of the user's last security awareness training; lapsing disables the account.
    training_date: date | None = None

    @property
    def active(self) -> bool:
        return self.status is UserStatus.ACTIVE

    @property
    def awaiting_activation(self) -> bool:
        """Approved, but the activation link has not been used to choose a password yet."""
        return self.password_hash is None
