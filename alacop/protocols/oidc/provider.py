"""The provider as the web layer sees it: one object per process, holding the key ring."""

from __future__ import annotations

from collections.abc import Sequence

from alacop.core.context import RequestContext
from alacop.core.deps import Deps
from alacop.core.session_manager import Current, Ended
from alacop.protocols.oidc import revocation
from alacop.protocols.oidc._util import session_sid
from alacop.protocols.oidc.authorization import AuthorizationEndpoint, Redirect, SignIn
from alacop.protocols.oidc.discovery import metadata
from alacop.protocols.oidc.keys import KeyRing
from alacop.protocols.oidc.logout import BackChannel, EndSession, Hint, LogoutRequest
from alacop.protocols.oidc.tokens import TokenEndpoint, TokenResponse
from alacop.protocols.oidc.userinfo import UserinfoResponse, userinfo


class Provider:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self.issuer = deps.origin.rstrip("/")
        self.keys = KeyRing(deps)
        self._authorization = AuthorizationEndpoint(deps, self.issuer)
        self._token = TokenEndpoint(deps, self.issuer, self.keys)
        self._end_session = EndSession(deps, self.issuer, self.keys)
        self.backchannel = BackChannel(deps, self.issuer, self.keys)

    def metadata(self) -> dict[str, object]:
        return metadata(self.issuer)

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
        return await userinfo(self._deps, authorization, form_token)

    async def revoke(
        self, items: list[tuple[str, str]], authorization: str | None, ctx: RequestContext
    ) -> TokenResponse:
        return await revocation.revoke(self._deps, items, authorization, ctx)

    async def introspect(
        self, items: list[tuple[str, str]], authorization: str | None, ctx: RequestContext
    ) -> TokenResponse:
        return await revocation.introspect(self._deps, items, authorization, ctx, self.issuer)

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
        await self.backchannel.close()
