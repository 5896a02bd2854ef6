"""SAML 2.0 routes: the IdP metadata, SP-initiated SSO by HTTP-Redirect, the return from the sign-in,
and IdP-initiated starts from My applications. The provider's work is in alacop/protocols/saml.

The Response leaves by HTTP-POST: a page with a form to the application's consumer address (one it
registered in its metadata) that submits itself. Its one inline script is allowed by its hash in this
page's own Content-Security-Policy (no 'unsafe-inline'); a Continue button does the same for browsers
without JavaScript.
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from alacop.protocols.saml.provider import SignIn
from alacop.protocols.saml.response import Answer
from alacop.web import http
from alacop.web.render import template
from alacop.web.routes._common import rate_limit
from alacop.web.routes.account import current
from alacop.web.routes.login import sign_in_to
from alacop.web.routes.oidc import OAUTH_RATE_FACTOR

AUTOSUBMIT = "document.getElementById('saml-post').submit();"
_AUTOSUBMIT_HASH = base64.b64encode(hashlib.sha256(AUTOSUBMIT.encode()).digest()).decode()
METADATA_TYPE = "application/samlmetadata+xml"


def _csp(acs_url: str) -> str:
    # form-action by scheme, not the consumer's origin: browsers hold the redirects that follow a form
    # post to form-action too, and many consumers redirect to another host after reading the Response
    # (a console on a sibling domain, a tenant). The page holds one form, ours, to a registered consumer;
    # and no part of an address ever reaches this header (a host with ';' or non-Latin-1 characters would).
    schemes = "https:" if urlsplit(acs_url).scheme == "https" else "http: https:"
    return (
        "default-src 'none'; "
        f"script-src 'self' 'sha256-{_AUTOSUBMIT_HASH}'; style-src 'self'; img-src 'self' data: https:; "
        f"form-action {schemes}; frame-ancestors 'none'; base-uri 'none'"
    )


async def _send(request: Request, outcome: Answer | SignIn) -> Response:
    if isinstance(outcome, SignIn):
        return await sign_in_to(request, outcome.return_to)
    response = template(
        request,
        "saml/post.html",
        {"answer": outcome, "sp_name": outcome.sp_name, "autosubmit": AUTOSUBMIT},
    )
    response.headers["Content-Security-Policy"] = _csp(outcome.acs_url)
    return response


async def metadata(request: Request) -> Response:
    body = await http.portal(request).saml.metadata()
    return Response(body, media_type=METADATA_TYPE, headers={"Cache-Control": "public, max-age=300"})


async def sso(request: Request) -> Response:
    await rate_limit(request, "saml_sso", factor=OAUTH_RATE_FACTOR)
    p = http.portal(request)
    who = await current(request, aal2=False)
    secret, _ = http.ensure_browser_secret(request)
    outcome = await p.saml.receive(request.scope.get("query_string", b""), who, http.context(request), secret)
    return await _send(request, outcome)


async def sso_post(request: Request) -> Response:
    """AuthnRequests by HTTP-POST are not accepted (not yet hardened against signature wrapping)."""
    await rate_limit(request, "saml_sso", factor=OAUTH_RATE_FACTOR)
    raise await http.portal(request).saml.refuse_binding(http.context(request))


async def resume(request: Request) -> Response:
    await rate_limit(request, "saml_sso", factor=OAUTH_RATE_FACTOR)
    p = http.portal(request)
    who = await current(request, aal2=False)
    pending_id = request.query_params.get("request", "")[:100]
    secret, _ = http.ensure_browser_secret(request)
    return await _send(request, await p.saml.resume(pending_id, who, http.context(request), secret))


async def start(request: Request) -> Response:
    await rate_limit(request, "saml_sso", factor=OAUTH_RATE_FACTOR)
    p = http.portal(request)
    who = await current(request, aal2=False)
    sp_id = str(request.path_params.get("sp_id", ""))[:100]
    secret, _ = http.ensure_browser_secret(request)
    return await _send(request, await p.saml.start(sp_id, who, http.context(request), secret))
