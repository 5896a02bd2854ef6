"""The shipped CJIS policy. Every value can be overridden in configuration; each cites its source."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any

from alacop.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Policy:
    # CJIS IA-5(1)(a), NIST 800-63B 3.1.1.2: at least 8, allow 64+, never truncate.
    password_min_length: int = 8
    password_max_length: int = 256
    # CJIS IA-5 f: change at least yearly.
    password_max_age_days: int = 365
    # CJIS AC-7: 5 consecutive invalid attempts within 15 minutes lock the account.
    lockout_threshold: int = 5
    lockout_window_minutes: int = 15
    # CJIS AC-11 and IA-5 j: 30 minutes idle, 12 hours absolute.
    session_idle_minutes: int = 30
    session_absolute_hours: int = 12
    # A sign-in flow is a short-lived object; an abandoned one is replaced with a fresh one.
    flow_lifetime_minutes: int = 15
    # OWASP ASVS 6.3.1: bursts from one address are slowed before they reach the lockout.
    rate_limit_per_minute: int = 30
    # CJIS AC-2(3): accounts unused for 90 days are disabled.
    inactive_disable_days: int = 90
    # CJIS IA-4 d: identifiers are not reused for one year.
    identifier_reuse_days: int = 365
    # CJIS IA-2(1)/(2): every account has a second factor; privileged accounts two different kinds.
    methods_required_user: int = 1
    methods_required_privileged: int = 2
    # CJIS IA-11: changing a credential needs a sign-in (or re-authentication) this recent.
    reauth_minutes: int = 10
    # RFC 6238: one 30-second step either side absorbs clock drift between phone and server.
    totp_skew_steps: int = 1
    # DESIGN.md: passkeys and personal accounts are shown but not supported by default.
    passkey_sign_in: bool = False
    # CJIS: personal (GitHub and similar) accounts are never accepted; not a switch.
    social_sign_in: bool = False

    @property
    def lockout_window(self) -> timedelta:
        return timedelta(minutes=self.lockout_window_minutes)

    @property
    def session_idle(self) -> timedelta:
        return timedelta(minutes=self.session_idle_minutes)

    @property
    def session_absolute(self) -> timedelta:
        return timedelta(hours=self.session_absolute_hours)

    @property
    def flow_lifetime(self) -> timedelta:
        return timedelta(minutes=self.flow_lifetime_minutes)

    @property
    def reauth_window(self) -> timedelta:
        return timedelta(minutes=self.reauth_minutes)

    @property
    def password_max_age(self) -> timedelta:
        return timedelta(days=self.password_max_age_days)

    def describe(self) -> list[tuple[str, object, str]]:
        """The values in force with their sources, for the read-only policy view."""
        return [(f.name, getattr(self, f.name), _SOURCES.get(f.name, "")) for f in fields(self)]


_SOURCES = {
    "password_min_length": "CJIS IA-5(1)(a); NIST SP 800-63B",
    "password_max_length": "NIST SP 800-63B (at least 64 allowed)",
    "password_max_age_days": "CJIS IA-5 f",
    "lockout_threshold": "CJIS AC-7",
    "lockout_window_minutes": "CJIS AC-7",
    "session_idle_minutes": "CJIS AC-11, IA-5 j",
    "session_absolute_hours": "CJIS IA-5 j",
    "flow_lifetime_minutes": "OWASP ASVS 5 (short-lived flows)",
    "rate_limit_per_minute": "OWASP ASVS 5 6.3.1",
    "inactive_disable_days": "CJIS AC-2(3)",
    "identifier_reuse_days": "CJIS IA-4 d",
    "methods_required_user": "CJIS IA-2(1)/(2)",
    "methods_required_privileged": "CJIS IA-2(1); Entra SSPR (2 for administrators)",
    "reauth_minutes": "CJIS IA-11",
    "totp_skew_steps": "RFC 6238 section 6",
    "passkey_sign_in": "NIST SP 800-63B rev 4 (phishing-resistant option)",
    "social_sign_in": "CJIS: personal accounts refused",
}

# Floors and ceilings below which a setting would break CJIS; configuration may only tighten.
_BOUNDS: dict[str, tuple[int, int]] = {
    "password_min_length": (8, 64),
    "password_max_length": (64, 1024),
    "password_max_age_days": (1, 365),
    "lockout_threshold": (1, 5),
    "lockout_window_minutes": (15, 1440),
    "session_idle_minutes": (1, 30),
    "session_absolute_hours": (1, 12),
    "flow_lifetime_minutes": (1, 60),
    "rate_limit_per_minute": (1, 100_000),
    "inactive_disable_days": (1, 90),
    "identifier_reuse_days": (365, 3650),
    "methods_required_user": (1, 3),
    "methods_required_privileged": (2, 3),
    "reauth_minutes": (1, 10),
    "totp_skew_steps": (0, 1),
}


def policy_from_mapping(values: dict[str, Any], *, prefix: str = "policy") -> Policy:
    policy = Policy()
    known = {f.name: f for f in fields(Policy)}
    changes: dict[str, Any] = {}
    for key, raw in values.items():
        name = f"{prefix}.{key}"
        if key not in known:
            raise ConfigError(f"{name}: unknown setting")
        default = getattr(policy, key)
        if isinstance(default, bool):
            changes[key] = _to_bool(raw, name)
            continue
        number = _to_int(raw, name)
        low, high = _BOUNDS[key]
        if not low <= number <= high:
            raise ConfigError(f"{name}: must be between {low} and {high} (CJIS), got {number}")
        changes[key] = number
    if changes.get("social_sign_in"):
        raise ConfigError(f"{prefix}.social_sign_in: personal accounts cannot be enabled under CJIS")
    return replace(policy, **changes)


def _to_int(raw: object, name: str) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"{name}: expected a whole number")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw.strip())
    raise ConfigError(f"{name}: expected a whole number, got {raw!r}")


def _to_bool(raw: object, name: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")
