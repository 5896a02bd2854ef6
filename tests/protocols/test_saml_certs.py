"""The portal's SAML signing certificate on a fresh database, under a clock that moves like the real one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from alacop.core.clock import FrozenClock
from alacop.protocols.saml.certs import Signer, fingerprint
from tests.conftest import Harness


class TickingClock(FrozenClock):
    """Moves a microsecond on every reading, as the system clock does between two calls."""

    def now(self) -> datetime:
        self.advance(timedelta(microseconds=1))
        return super().now()


def test_the_first_signer_on_a_fresh_database_is_the_certificate_it_creates(
    app_factory: Callable[..., Harness],
) -> None:
    # No GET /saml/metadata first: the first sign-in's Response is what creates the certificate.
    h = app_factory(clock=TickingClock())
    signer = h.run(h.portal.saml.certs.signer)
    assert isinstance(signer, Signer)
    assert signer.id == fingerprint(signer.cert_pem)
    assert [c.cert_pem for c in h.run(h.portal.saml.certs.published)] == [signer.cert_pem]


def test_two_instances_starting_together_make_one_certificate(app_factory: Callable[..., Harness]) -> None:
    import asyncio

    from alacop.protocols.saml.certs import CertRing

    h = app_factory()
    deps = h.portal.deps

    async def both() -> tuple[Signer, Signer]:
        # Two processes' rings over one database, each finding no certificate at first.
        first, second = CertRing(deps), CertRing(deps)
        a, b = await asyncio.gather(first.signer(), second.signer())
        return a, b

    a, b = h.run(both)
    assert a.id == b.id
    assert len(h.run(CertRing(deps).published)) == 1
    created = h.events("SamlCertificateCreated")
    assert len(created) == 1 and created[0].reason == "first_certificate"
