"""Signing keys: one ES256 (the default) and one RS256 key, kept in the database so every instance agrees.

Private JWKs are sealed with the portal's encryption keys; the kid is the RFC 7638 thumbprint. A rotation
adds new keys at once, but instances go on signing with the old ones for PROPAGATION, long enough for
every instance to reload its copy and publish the new keys first; the old keys stay published for
KEY_OVERLAP after that, longer than any token they signed can live.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from joserfc import jwk
from joserfc.jwk import ECKey, RSAKey

from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.oidc import SigningKey

ALGORITHMS = ("ES256", "RS256")
DEFAULT_ALG = "ES256"
# How long an instance trusts its copy of the key table before reading it again.
CACHE = timedelta(seconds=60)
PROPAGATION = CACHE + timedelta(seconds=5)
# Access tokens live at most 1 h and ID tokens 5 min; a day also covers relying parties' JWKS caches.
KEY_OVERLAP = timedelta(hours=24)

PrivateKey = ECKey | RSAKey


def generate(alg: str, now: datetime) -> tuple[SigningKey, PrivateKey]:
    key: PrivateKey = ECKey.generate_key("P-256") if alg == "ES256" else RSAKey.generate_key(2048)
    kid = key.thumbprint()
    public = key.as_dict(private=False, kid=kid, alg=alg, use="sig")
    return SigningKey(
        kid=kid,
        alg=alg,
        private_sealed="",  # sealed by the caller, who holds the box
        public_jwk=json.dumps(public, sort_keys=True),
        created_at=now,
    ), key


@dataclass(frozen=True, slots=True)
class Signer:
    kid: str
    alg: str
    key: PrivateKey


class KeyRing:
    """One per process: a short-lived copy of the key table and the private keys opened from it."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._keys: tuple[SigningKey, ...] = ()
        self._loaded_at: datetime | None = None
        self._opened: dict[str, PrivateKey] = {}
        self._lock = anyio.Lock()
        self._jwks_bytes: tuple[tuple[str, ...], bytes] | None = None

    async def _current(self, *, force: bool = False) -> tuple[SigningKey, ...]:
        now = self._deps.clock.now()
        if not force and self._loaded_at is not None and now - self._loaded_at < CACHE:
            return self._keys
        async with self._lock:
            async with self._deps.store.read() as tx:
                keys = tuple(await tx.signing_keys.list())
            missing = [alg for alg in ALGORITHMS if not any(k.alg == alg and k.current for k in keys)]
            if missing:
                await self._add(missing, now)
                async with self._deps.store.read() as tx:
                    keys = tuple(await tx.signing_keys.list())
            self._keys, self._loaded_at = keys, now
        return keys

    async def _add(self, algs: Sequence[str], now: datetime) -> None:
        """The first keys (or a missing algorithm's): instances starting together must not each make
        their own, or they would sign with different keys until their caches agreed. Each takes the audit
        chain's head lock first, so creators go one at a time, and each looks again under the lock."""
        # Made before the lock: RSA generation is slow, and the lock holds every instance's audit writes.
        made = {alg: self._sealed(alg, now) for alg in algs}
        async with self._deps.store.transaction() as tx:
            await tx.audit.lock()
            present = await tx.signing_keys.list()
            added = [made[a] for a in algs if not any(k.alg == a and k.current for k in present)]
            for key in added:
                await tx.signing_keys.add(key)
            if added:
                await tx.audit.append(
                    AuditEvent(
                        EventType.SIGNING_KEYS_CREATED,
                        Outcome.SUCCESS,
                        "first_keys",
                        details={"added": [f"{k.alg}:{k.kid}" for k in added]},
                    ),
                    # The portal itself, not a person: the first signature needed a key.
                    RequestContext(source_ip="local", user_agent="alacop-portal", request_id="oidc-first-keys"),
                )

    def _sealed(self, alg: str, now: datetime) -> SigningKey:
        record, key = generate(alg, now)
        sealed = self._deps.box.seal(json.dumps(key.as_dict(private=True)).encode())
        return SigningKey(record.kid, alg, sealed, record.public_jwk, now)

    async def jwks(self) -> dict[str, list[dict[str, object]]]:
        now = self._deps.clock.now()
        keys = await self._current()
        return {"keys": [json.loads(k.public_jwk) for k in keys if k.published(now)]}

    async def jwks_bytes(self) -> bytes:
        """The JWKS as sent, serialised again only when the published keys change."""
        now = self._deps.clock.now()
        kids = tuple(k.kid for k in await self._current() if k.published(now))
        if self._jwks_bytes is None or self._jwks_bytes[0] != kids:
            self._jwks_bytes = (kids, json.dumps(await self.jwks(), separators=(",", ":")).encode())
        return self._jwks_bytes[1]

    async def signer(self, alg: str = DEFAULT_ALG) -> Signer:
        now = self._deps.clock.now()
        usable = [k for k in await self._current() if k.alg == alg and k.published(now)]
        # Current before superseded, then newest first; a key younger than PROPAGATION may not be
        # published by every instance yet, so the one it replaced signs until then.
        usable.sort(key=lambda k: (k.current, k.created_at, k.kid), reverse=True)
        settled = [k for k in usable if k.created_at <= now - PROPAGATION]
        chosen = (settled or usable)[0]
        key = self._opened.get(chosen.kid)
        if key is None:
            data = json.loads(self._deps.box.open(chosen.private_sealed))
            opened = jwk.import_key(data, "EC" if alg == "ES256" else "RSA")
            assert isinstance(opened, ECKey | RSAKey)
            key = self._opened[chosen.kid] = opened
        return Signer(chosen.kid, alg, key)

    async def rotate(self, ctx: RequestContext) -> list[SigningKey]:
        added = await rotate(self._deps, ctx)
        await self._current(force=True)
        return added


async def rotate(deps: Deps, ctx: RequestContext) -> list[SigningKey]:
    """New keys for both algorithms; the old ones stay published until their tokens have expired."""
    now = deps.clock.now()
    retire_after = now + PROPAGATION + KEY_OVERLAP
    ring = KeyRing(deps)
    added = [ring._sealed(alg, now) for alg in ALGORITHMS]
    async with deps.store.transaction() as tx:
        superseded = 0
        for key in added:
            await tx.signing_keys.add(key)
            superseded += await tx.signing_keys.supersede(key.alg, retire_after, keep=key.kid)
        await tx.audit.append(
            AuditEvent(
                EventType.SIGNING_KEYS_ROTATED,
                Outcome.SUCCESS,
                "rotated",
                details={
                    "added": [f"{k.alg}:{k.kid}" for k in added],
                    "superseded": superseded,
                    "retire_after": retire_after.isoformat(),
                },
            ),
            ctx,
        )
    return added
