"""The provider as the web layer sees it: one object per process, holding the key ring."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.session_manager import Current, Ended
from alacop.protocols.oidc import revocation
from alacop.protocols.oidc import userinfo as userinfo_endpoint
from alacop.protocols.oidc._util import session_sid
from alacop.protocols.oidc.authorization import AuthorizationEndpoint, Redirect, SignIn
from alacop.protocols.oidc.discovery import metadata
from alacop.protocols.oidc.keys import KeyRing
from alacop.protocols.oidc.logout import BackChannel, EndSession, Hint, LogoutRequest
from alacop.protocols.oidc.tokens import TokenEndpoint, TokenResponse
from alacop.protocols.oidc.userinfo import UserinfoResponse

log = logging.getLogger("alacop")

# How long an instance trusts its list of browser application origins before reading the registry again.
CORS_CACHE = timedelta(seconds=60)


_DEFAULT_PORTS = {"https": 443, "http": 80}


def _origin(uri: str) -> str:
    """The origin a browser sends for pages at `uri` (RFC 6454): lower-case host, no default port."""
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    suffix = f":{port}" if port is not None and port != _DEFAULT_PORTS.get(parts.scheme) else ""
    return f"{parts.scheme.lower()}://{host}{suffix}"


class Provider:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._cors: tuple[frozenset[str], datetime] | None = None
        self.issuer = deps.origin.rstrip("/")
        self.keys = KeyRing(deps)
        self._token = TokenEndpoint(deps, self.issuer, self.keys)
        self._authorization = AuthorizationEndpoint(deps, self.issuer, self._token.server)
        userinfo_endpoint.register(self._token.server)
        self._end_session = EndSession(deps, self.issuer, self.keys)
        self.backchannel = BackChannel(deps, self.issuer, self.keys)
        # The metadata never changes while the process runs: serialised once.
        self._metadata_bytes = json.dumps(metadata(self.issuer), separators=(",", ":")).encode()
        # What the web layer may answer before routing: path -> (bytes, media type).
        self.documents: dict[str, Callable[[], Awaitable[tuple[bytes, str]]]] = {
            "/.well-known/openid-configuration": self.discovery_document,
            "/oauth/jwks": self.jwks_document,
        }

    async def cors_origin(self, origin: str | None) -> str | None:
        """The Origin to allow on the token, userinfo and revocation endpoints, or None.

        Only public clients run in browsers (a confidential client's secret must never be in one), so only
        the origins of enabled public clients' redirect URIs may call those endpoints from a page; no
        credentials (cookies) are ever allowed cross-origin, only the bearer tokens and codes the calls carry.
        """
        if not origin or len(origin) > 300:
            return None
        now = self._deps.clock.now()
        if self._cors is None or now - self._cors[1] >= CORS_CACHE:
            async with self._deps.store.read() as tx:
                clients = await tx.clients.list()
            allowed = frozenset(_origin(u) for c in clients if c.public and c.active for u in c.redirect_uris)
            self._cors = (allowed, now)
        return origin if origin in self._cors[0] else None

    def metadata(self) -> dict[str, object]:
        return metadata(self.issuer)

    async def discovery_document(self) -> tuple[bytes, str]:
        return self._metadata_bytes, "application/json"

    async def jwks_document(self) -> tuple[bytes, str]:
        return await self.keys.jwks_bytes(), "application/jwk-set+json"

    async def jwks(self) -> dict[str, list[dict[str, object]]]:
        return await self.keys.jwks()

    async def authorize(
        self, items: Sequence[tuple[str, str]], who: Current | None, ctx: RequestContext
    ) -> Redirect | SignIn:
        return await self._authorization.handle(items, who, ctx)

    async def token(
        self, items: list[tuple[str, str]], authorization: str | None, ctx: RequestContext
    ) -> TokenResponse:
        return await self._token.handle(items, authorization, ctx)

    async def userinfo(self, authorization: str | None, form_token: str | None) -> UserinfoResponse:
        return await userinfo_endpoint.userinfo(self._deps, self._token.server, authorization, form_token)

    async def revoke(
        self, items: list[tuple[str, str]], authorization: str | None, ctx: RequestContext
    ) -> TokenResponse:
        return await revocation.revoke(self._deps, self._token.server, items, authorization, ctx)

    async def introspect(
        self, items: list[tuple[str, str]], authorization: str | None, ctx: RequestContext
    ) -> TokenResponse:
        return await revocation.introspect(self._deps, self._token.server, items, authorization, ctx)

    async def check_logout(self, items: Sequence[tuple[str, str]], ctx: RequestContext) -> LogoutRequest:
        return await self._end_session.check(items, ctx)

    async def session_for(self, hint: Hint) -> str | None:
        return await self._end_session.session_for(hint)

    def sid(self, session_hash: str) -> str:
        return session_sid(self._deps.pepper, session_hash)

    async def propagate_logout(self, ended: Ended, ctx: RequestContext) -> int:
        return await self.backchannel.propagate(ended, ctx)

    async def sweep_logouts(self, ctx: RequestContext) -> int:
        return await self.backchannel.sweep(ctx)

    async def close(self) -> None:
        commits = self._token.commits
        if commits.works:
            log.info("token writes: %d in %d transactions", commits.works, commits.batches)
        await self.backchannel.close()
