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
