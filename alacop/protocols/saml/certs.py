"""The portal's SAML signing certificates: RSA-2048 keys with self-signed X.509 certificates.

Kept in the database so every instance signs with the same one; private keys are sealed with the
portal's encryption keys. `alacop saml cert rotate` adds a certificate that is published in the metadata
at once but signs only after an overlap (a week by default), so applications can add it first; the
certificates it replaces stay published for a day after the switch, then drop out of the metadata.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from alacop.core.audit import AuditEvent, EventType, Outcome
from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.saml import IdpCertificate

# How long an instance trusts its copy of the certificate table before reading it again.
CACHE = timedelta(seconds=60)
PROPAGATION = CACHE + timedelta(seconds=5)
DEFAULT_OVERLAP = timedelta(days=7)
# After a newer certificate starts signing, the old one stays published this long (cached metadata,
# assertions in flight), then is retired.
RETIRE_AFTER_SWITCH = timedelta(days=1)
VALIDITY = timedelta(days=3650)


def generate(now: datetime, common_name: str | None = None) -> tuple[str, rsa.RSAPrivateKey]:
    """A new RSA-2048 key and its self-signed certificate (PEM). SAML trusts the certificate as pinned in
    the other side's configuration, so no CA is involved; the validity is long and rotation is ours.
    The demo application makes its own pair with it too, as any service provider would."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = common_name or f"AlaCOP SAML signing {now:%Y-%m-%d}"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (the portal seals it before storing it)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def fingerprint(cert_pem: str) -> str:
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def certificate_body(cert_pem: str) -> str:
    """The base64 DER of a PEM certificate, as ds:X509Certificate carries it."""
    lines = [line for line in cert_pem.strip().splitlines() if not line.startswith("-----")]
    return "".join(lines)


class _AlreadyMade(Exception):
    """Another instance made the first certificate while this one waited for the lock."""


@dataclass(frozen=True, slots=True)
class Signer:
    id: str
    cert_pem: str
    key: rsa.RSAPrivateKey


def _new(deps: Deps, now: datetime, active_from: datetime) -> IdpCertificate:
    cert_pem, key = generate(now)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return IdpCertificate(
        id=fingerprint(cert_pem),
        cert_pem=cert_pem,
        private_sealed=deps.box.seal(pem),
        created_at=now,
        active_from=active_from,
    )


class CertRing:
    """One per process: a short-lived copy of the certificate table and the keys opened from it."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._certs: tuple[IdpCertificate, ...] = ()
        self._loaded_at: datetime | None = None
        self._opened: dict[str, rsa.RSAPrivateKey] = {}
        self._lock = anyio.Lock()

    async def _current(self, *, force: bool = False) -> tuple[IdpCertificate, ...]:
        now = self._deps.clock.now()
        if not force and self._loaded_at is not None and now - self._loaded_at < CACHE:
            return self._certs
        async with self._lock:
            async with self._deps.store.read() as tx:
                certs = tuple(await tx.saml_certs.list())
            if not any(c.signs(now) for c in certs):
                await self._create_first(now)
                async with self._deps.store.read() as tx:
                    certs = tuple(await tx.saml_certs.list())
            self._certs, self._loaded_at = certs, now
        return certs

    async def _create_first(self, now: datetime) -> None:
        """The first start (or every certificate retired): one certificate that signs at once.

        Instances starting together must not each make their own: each takes the audit chain's head
        lock first, so creators go one at a time, and each looks again under that lock; one that finds a
        certificate already there rolls back, its audit event with it.
        """
        created = _new(self._deps, now, now)
        try:
            async with self._deps.store.transaction() as tx:
                await tx.audit.lock()
                await tx.audit.append(
                    AuditEvent(
                        EventType.SAML_CERT_CREATED, Outcome.SUCCESS, "first_certificate", details={"added": created.id}
                    ),
                    # The portal itself, not a person: the first signature needed a key.
                    RequestContext(source_ip="local", user_agent="alacop-portal", request_id="saml-first-certificate"),
                )
                if any(c.signs(now) for c in await tx.saml_certs.list()):
                    raise _AlreadyMade
                await tx.saml_certs.add(created)
        except _AlreadyMade:
            pass

    async def published(self) -> list[IdpCertificate]:
        now = self._deps.clock.now()
        return [c for c in await self._current() if c.published(now)]

    async def signer(self) -> Signer:
        # The time is read after loading: a certificate made by the load signs from the load's own now.
        certs = await self._current()
        usable = [c for c in certs if c.signs(self._deps.clock.now())]
        if not usable:
            certs = await self._current(force=True)
            usable = [c for c in certs if c.signs(self._deps.clock.now())]
        # The most recently activated one: after an overlap the new certificate takes over everywhere.
        chosen = max(usable, key=lambda c: (c.active_from, c.created_at, c.id))
        key = self._opened.get(chosen.id)
        if key is None:
            loaded = serialization.load_pem_private_key(self._deps.box.open(chosen.private_sealed), password=None)
            assert isinstance(loaded, rsa.RSAPrivateKey)
            key = self._opened[chosen.id] = loaded
        return Signer(chosen.id, chosen.cert_pem, key)

    async def refresh(self) -> None:
        await self._current(force=True)


async def rotate(
    deps: Deps, ctx: RequestContext, overlap: timedelta = DEFAULT_OVERLAP, *, retire_now: bool = False
) -> IdpCertificate:
    """A new certificate, published now and signing after `overlap`; the others retire a day after that,
    or, with `retire_now` (a key that may have leaked), the moment the new one starts signing."""
    now = deps.clock.now()
    # Never sooner than every instance can have reloaded its copy (an emergency rotation uses 0).
    active_from = now + max(overlap, PROPAGATION)
    added = _new(deps, now, active_from)
    retire_after = active_from if retire_now else active_from + RETIRE_AFTER_SWITCH
    async with deps.store.transaction() as tx:
        await tx.saml_certs.add(added)
        superseded = await tx.saml_certs.supersede(retire_after, keep=added.id)
        await tx.audit.append(
            AuditEvent(
                EventType.SAML_CERT_ROTATED,
                Outcome.SUCCESS,
                "rotated",
                details={
                    "added": added.id,
                    "signs_from": active_from.isoformat(),
                    "superseded": superseded,
                    "retire_after": retire_after.isoformat(),
                },
            ),
            ctx,
        )
    return added
