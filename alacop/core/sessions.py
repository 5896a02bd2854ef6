"""Server-side sessions (CJIS AC-11, AC-12, IA-5 o)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from alacop.policy.cjis import Policy

# Writing last-seen on every request would turn reads into writes; a minute of slack
# against a 30-minute idle limit costs nothing in safety.
TOUCH_INTERVAL = timedelta(seconds=60)


class EndReason(StrEnum):
    SIGNED_OUT = "signed_out"
    IDLE = "idle_timeout"
    ABSOLUTE = "absolute_timeout"
    ADMIN = "ended_by_admin"
    PASSWORD_CHANGED = "password_changed"
    ACCOUNT_DISABLED = "account_disabled"
    ROTATED = "rotated"
    LOCKED = "account_locked"


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: str
    user_id: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    auth_time: datetime
    aal: str
    amr: tuple[str, ...]
    source_ip: str
    user_agent: str
    ended_at: datetime | None = None
    end_reason: str | None = None
    # Which second factor the sign-in used; a recovery code may not then change other methods.
    second_factor: str | None = None

    def recent(self, now: datetime, policy: Policy) -> bool:
        """Signed in or re-authenticated recently enough to change credentials (CJIS IA-11)."""
        return now - self.auth_time < policy.reauth_window

    def expiry_reason(self, now: datetime, policy: Policy) -> EndReason | None:
        # The policy in force now counts too, so tightening it shortens sessions already open.
        if now >= self.expires_at or now >= self.auth_time + policy.session_absolute:
            return EndReason.ABSOLUTE
        if now - self.last_seen_at >= policy.session_idle:
            return EndReason.IDLE
        return None

    def needs_touch(self, now: datetime) -> bool:
        return now - self.last_seen_at >= TOUCH_INTERVAL
