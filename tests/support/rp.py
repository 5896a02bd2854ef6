"""A relying party built on pyoidc (the `oic` package, OpenID-certified as an RP), talking to the app in-process.

pyoidc speaks HTTP through `requests`; here a `requests` session forwards every call to the app through the
Starlette TestClient's transport, with its own cookie jar (the RP's back channel is not the user's browser).
The library's clock is the harness's frozen clock, so it checks exp and iat at the portal's time.
"""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import pytest
import requests
from oic.oic import Client
from oic.oic.message import RegistrationResponse
from oic.utils.authn.client import CLIENT_AUTHN_METHOD
from oic.utils.settings import OicClientSettings
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from tests.conftest import Harness
from tests.protocols.conftest import ISSUER, REDIRECT, RP


class AppAdapter(BaseAdapter):
    """A `requests` transport adapter that hands each request to the app instead of the network."""

    def __init__(self, h: Harness) -> None:
        super().__init__()
        # The TestClient's transport runs the app on its event loop; a separate httpx client keeps the
        # RP's requests free of the browser's cookies.
        self._http = httpx.Client(transport=h.client._transport, base_url=ISSUER)
        self.sent: list[tuple[str, str]] = []
        self.bodies: dict[str, bytes] = {}  # the last response body from each address

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        assert request.method and request.url
        self.sent.append((request.method, request.url))
        body = request.body.encode() if isinstance(request.body, str) else request.body
        answer = self._http.request(
            request.method, request.url, content=body, headers=dict(request.headers), follow_redirects=False
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = CaseInsensitiveDict(answer.headers)
        response._content = answer.content
        response.encoding = answer.encoding
        response.url = request.url
        response.request = request
        self.bodies[request.url.partition("?")[0]] = answer.content
        return response

    def close(self) -> None:
        self._http.close()


def pyoidc_client(h: Harness, rp: RP, monkeypatch: pytest.MonkeyPatch) -> tuple[Client, AppAdapter]:
    """A pyoidc Client that has discovered the portal and holds rp's registration (set by hand: no dynamic one)."""
    import oic.oauth2
    import oic.oauth2.grant
    import oic.utils.keyio
    import oic.utils.time_util

    def now() -> int:
        return int(h.clock.now().timestamp())

    for module in (oic.utils.time_util, oic.oauth2, oic.oauth2.grant):
        monkeypatch.setattr(module, "utc_time_sans_frac", now)
    adapter = AppAdapter(h)
    session = requests.Session()
    session.mount(ISSUER + "/", adapter)
    # KeyBundle fetches the jwks_uri with a module-level requests.get: send that through the app too.
    monkeypatch.setattr(oic.utils.keyio, "requests", session)
    client = Client(client_authn_method=CLIENT_AUTHN_METHOD, settings=OicClientSettings(requests_session=session))
    client.provider_config(ISSUER)
    registration = {"client_id": rp.client_id, "redirect_uris": [REDIRECT]}
    if rp.secret:
        registration["client_secret"] = rp.secret
    client.store_registration_info(RegistrationResponse(**registration))
    client.redirect_uris = [REDIRECT]
    return client, adapter
