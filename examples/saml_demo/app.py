"""Case Files (SAML demo): a separate web application that signs in through the AlaCOP Portal by SAML 2.0.

It is a SAML service provider built with python3-saml (the OneLogin toolkit): its AuthnRequests go by
HTTP-Redirect, signed with RSA-SHA256; the portal answers by HTTP-POST to /saml/acs, where python3-saml
checks the Response strictly (signed message and assertion, no SHA-1, audience, destination, validity,
and InResponseTo against the request this application sent) before anything is shown. The portal's
signing certificates and sign-in address come from its /saml/metadata, read on first use.

`alacop demo` registers it (it may also start from My applications) and writes its entity ID, consumer
address, key and certificate to `data/saml_demo.json`; `./scripts/saml-demo` runs it on
http://localhost:8002.
"""

from __future__ import annotations

import copy
import html
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

CONFIG = Path(os.environ.get("SAML_DEMO_CONFIG", "data/saml_demo.json"))
NAME = "Case Files"

REDIRECT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
NS = {"md": "urn:oasis:names:tc:SAML:2.0:metadata", "ds": "http://www.w3.org/2000/09/xmldsig#"}
# An AuthnRequest not answered within this time is forgotten (the portal's sign-in takes a few minutes).
PENDING_SECONDS = 30 * 60
MAX_PENDING = 10_000


def _config() -> dict[str, str]:
    try:
        data: dict[str, str] = json.loads(CONFIG.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"SAML demo: {CONFIG} is missing or unreadable; run `alacop demo` first") from exc
    return data


def parse_idp_metadata(xml: bytes) -> dict[str, Any]:
    """python3-saml's `idp` settings from the portal's metadata: entity ID, sign-in address, certificates."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(xml, parser=parser)
    idp = root.find("md:IDPSSODescriptor", NS)
    if root.get("entityID") is None or idp is None:
        raise ValueError("not the metadata of a SAML identity provider")
    sso = [
        s.get("Location")
        for s in idp.findall("md:SingleSignOnService", NS)
        if s.get("Binding") == REDIRECT_BINDING and s.get("Location")
    ]
    certificates = [
        "".join((cert.text or "").split())
        for key in idp.findall("md:KeyDescriptor", NS)
        if key.get("use") in (None, "signing")
        for cert in key.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", NS)
    ]
    if not sso or not certificates:
        raise ValueError("the metadata has no HTTP-Redirect sign-in address or no signing certificate")
    return {
        "entityId": root.get("entityID"),
        "singleSignOnService": {"url": sso[0], "binding": REDIRECT_BINDING},
        # Every published certificate: during a rotation the portal publishes the next one beside the current.
        "x509certMulti": {"signing": certificates},
    }


def build_app() -> Starlette:
    config = _config()
    portal = (os.environ.get("SAML_DEMO_PORTAL") or config.get("portal") or "http://localhost:8000").rstrip("/")
    idp: dict[str, Any] = {}
    # RelayState → the ID of the AuthnRequest sent with it. The portal's POST to /saml/acs comes from
    # another site, so a SameSite cookie would not come back with it; the RelayState does.
    pending: dict[str, tuple[str, float]] = {}
    lock = threading.Lock()

    def settings() -> dict[str, Any]:
        """A fresh dict each time: python3-saml fills in defaults in the one it is given."""
        return {
            "strict": True,
            "debug": False,
            "sp": {
                "entityId": config["entity_id"],
                "assertionConsumerService": {"url": config["acs_url"], "binding": POST_BINDING},
                "NameIDFormat": PERSISTENT,
                "x509cert": config["certificate"],
                "privateKey": config["private_key"],
            },
            "idp": copy.deepcopy(idp),
            "security": {
                "authnRequestsSigned": True,
                "wantMessagesSigned": True,
                "wantAssertionsSigned": True,
                "wantNameId": True,
                "requestedAuthnContext": False,
                "signatureAlgorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
                "digestAlgorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
                "rejectDeprecatedAlgorithm": True,
                # A Response to a request this application did not send (or has forgotten) is refused.
                "rejectUnsolicitedResponsesWithInResponseTo": True,
            },
        }

    async def load_idp() -> None:
        if idp:
            return
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(f"{portal}/saml/metadata")
            answer.raise_for_status()
        idp.update(parse_idp_metadata(answer.content))

    def remember(relay_state: str, request_id: str) -> None:
        now = time.monotonic()
        with lock:
            for key in [k for k, (_, at) in pending.items() if now - at > PENDING_SECONDS]:
                del pending[key]
            if len(pending) >= MAX_PENDING:
                pending.pop(next(iter(pending)))
            pending[relay_state] = (request_id, now)

    def sent_with(relay_state: str) -> str | None:
        with lock:
            found = pending.pop(relay_state, None)
        return found[0] if found and time.monotonic() - found[1] <= PENDING_SECONDS else None

    def request_data(request: Request, post: dict[str, str] | None = None) -> dict[str, Any]:
        """What python3-saml needs to know of the request (it checks the Destination against this URL)."""
        return {
            "https": "on" if request.url.scheme == "https" else "off",
            "http_host": request.headers.get("host", request.url.netloc),
            "script_name": request.url.path,
            "get_data": dict(request.query_params),
            "post_data": post or {},
        }

    def page(body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<link rel='icon' href='data:,'><title>{NAME} (SAML demo)</title></head><body>"
            f"<header><strong>{NAME}</strong> (SAML demo application)</header><main>{body}</main></body></html>",
            status_code=status,
        )

    def failed(why: str) -> HTMLResponse:
        return page(
            f"<h1>Sign-in failed</h1><p id='error'>{html.escape(why)}</p><p><a href='/'>Start over</a></p>", 403
        )

    async def home(request: Request) -> Response:
        return page(f"<h1>{NAME}</h1><p>You are not signed in.</p><p><a href='/login'>Sign in with AlaCOP</a></p>")

    async def login(request: Request) -> Response:
        try:
            await load_idp()
        except (httpx.HTTPError, ValueError, etree.XMLSyntaxError) as exc:
            return failed(f"Could not read the portal's SAML metadata at {portal}/saml/metadata ({exc}).")
        auth = OneLogin_Saml2_Auth(request_data(request), settings())
        relay_state = secrets.token_urlsafe(16)
        location = auth.login(return_to=relay_state)
        remember(relay_state, auth.get_last_request_id())
        return RedirectResponse(location, status_code=303)

    async def acs(request: Request) -> Response:
        if request.method == "GET":
            return RedirectResponse("/", status_code=303)
        try:
            await load_idp()
        except (httpx.HTTPError, ValueError, etree.XMLSyntaxError) as exc:
            return failed(f"Could not read the portal's SAML metadata at {portal}/saml/metadata ({exc}).")
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        relay_state = form.get("RelayState", "")
        # None when the sign-in started on the portal (My applications): then the Response must not claim
        # to answer any request.
        request_id = sent_with(relay_state) if relay_state else None
        auth = OneLogin_Saml2_Auth(request_data(request, form), settings())
        try:
            auth.process_response(request_id=request_id)
        except Exception as exc:  # python3-saml raises on a Response it cannot even read (not XML, say)
            return failed(f"The portal's answer could not be read: {exc}")
        errors = auth.get_errors()
        if errors or not auth.is_authenticated():
            return failed(f"The portal's answer was not accepted: {auth.get_last_error_reason() or ', '.join(errors)}")
        attributes: dict[str, list[str]] = auth.get_attributes()
        rows = "".join(
            f"<tr><th scope='row'>{html.escape(name)}</th><td>{html.escape(', '.join(values))}</td></tr>"
            for name, values in sorted(attributes.items())
        )
        who = (attributes.get("username") or [auth.get_nameid()])[0]
        started = "at this application" if request_id else "on the portal (My applications)"
        return page(
            f"<h1>Signed in as {html.escape(who)}</h1>"
            f"<p id='started'>The sign-in started {started}.</p>"
            f"<p id='nameid'>NameID <code>{html.escape(auth.get_nameid() or '')}</code> "
            f"(format <code>{html.escape(auth.get_nameid_format() or '')}</code>)</p>"
            f"<table id='attributes'><caption>The attributes AlaCOP sent</caption>{rows}</table>"
            "<p><a href='/'>Start over</a></p>"
        )

    async def metadata(request: Request) -> Response:
        xml = OneLogin_Saml2_Settings(settings(), sp_validation_only=True).get_sp_metadata()
        return Response(xml, media_type="application/samlmetadata+xml")

    return Starlette(
        routes=[
            Route("/", home),
            Route("/login", login),
            Route("/saml/acs", acs, methods=["GET", "POST"]),
            Route("/saml/metadata", metadata),
        ]
    )
