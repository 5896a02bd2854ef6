"""Client authentication at the token, revocation and introspection endpoints (RFC 6749 2.3, 3.2.1).

client_secret_basic, client_secret_post, or none for a public client (which then proves itself with
PKCE). One method per request; a confidential client always needs its secret.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from urllib.parse import unquote_plus

from alacop.core.deps import Deps
from alacop.core.oidc import CLIENT_ID_FORMAT, Client, client_secret_matches
from alacop.protocols.oidc._util import INVALID_CLIENT, INVALID_REQUEST, OAuthError

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")


def _basic(authorization: str | None) -> tuple[str, str] | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _refused("malformed Basic credentials", basic=True) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _refused("malformed Basic credentials", basic=True)
    # Both halves are form-encoded before being joined (RFC 6749 2.3.1).
    return unquote_plus(client_id), unquote_plus(secret)


def _refused(description: str, *, basic: bool) -> OAuthError:
    headers = [("WWW-Authenticate", 'Basic realm="oauth"')] if basic else []
    return OAuthError(INVALID_CLIENT, description, status=401, headers=headers)


async def authenticate(
    deps: Deps, form: Mapping[str, str], authorization: str | None, *, allow_public: bool = True
) -> Client:
    basic = _basic(authorization)
    posted_secret = form.get("client_secret")
    if basic is not None and posted_secret is not None:
        raise OAuthError(INVALID_REQUEST, "use one client authentication method")
    secret: str | None
    if basic is not None:
        client_id, secret = basic
        if form.get("client_id") not in (None, client_id):
            raise OAuthError(INVALID_REQUEST, "client_id does not match the credentials")
    else:
        client_id, secret = form.get("client_id", ""), posted_secret
    if not CLIENT_ID_FORMAT.fullmatch(client_id or ""):
        raise _refused("client authentication failed", basic=basic is not None)
    async with deps.store.read() as tx:
        client = await tx.clients.get(client_id)
    if client is None or not client.active:
        raise _refused("client authentication failed", basic=basic is not None)
    if client.public:
        if secret or not allow_public:
            raise _refused("client authentication failed", basic=basic is not None)
        return client
    if not secret or not client_secret_matches(client, deps.pepper, secret):
        raise _refused("client authentication failed", basic=basic is not None)
    return client
