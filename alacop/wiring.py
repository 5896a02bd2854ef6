"""Builds the core's collaborators from settings, for the web app and the command line alike."""

from __future__ import annotations

from pathlib import Path

from alacop.config import Settings, ensure_secret
from alacop.core.audit import AuditChain
from alacop.core.captcha import Captcha
from alacop.core.clock import Clock, SystemClock
from alacop.core.deps import Deps
from alacop.core.mail import Mailer
from alacop.core.passwords import BannedList, PasswordHasher
from alacop.core.ports import RateLimiter
from alacop.core.secretbox import SecretBox
from alacop.mailers import build_mailer
from alacop.store.ratelimit import MemoryRateLimiter, RedisRateLimiter
from alacop.store.sql import SqlStore


def banned_override(settings: Settings) -> Path:
    return settings.data_dir / "banned_passwords.txt"


def build_deps(
    settings: Settings,
    *,
    clock: Clock | None = None,
    limiter: RateLimiter | None = None,
    hasher: PasswordHasher | None = None,
    mailer: Mailer | None = None,
) -> Deps:
    settings = ensure_secret(settings)
    the_clock = clock or SystemClock()
    store = SqlStore.open(settings.database_url, AuditChain(settings.audit_key), the_clock)
    return Deps(
        store=store,
        clock=the_clock,
        policy=settings.policy,
        hasher=hasher or PasswordHasher(),
        banned=BannedList.load(banned_override(settings)),
        limiter=limiter or (RedisRateLimiter(settings.redis_url) if settings.redis_url else MemoryRateLimiter()),
        domain=settings.branding.domain,
        banner_sha256=settings.branding.warning_sha256,
        box=SecretBox(settings.encryption_keys),
        mailer=mailer or build_mailer(settings),
        captcha=Captcha(settings.captcha_key),
        pepper=settings.pepper,
        portal_name=settings.branding.portal_name,
        support_name=settings.branding.support_name,
        origin=settings.origin,
        rp_id=settings.rp_id,
    )
