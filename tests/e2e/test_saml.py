"""SAML sign-in in Chromium: small service providers built on python3-saml sign a user in through the portal.

Each service provider runs in a thread on its own loopback port, publishes its metadata there, and is
registered from that address with `alacop saml sps add`, as an operator would. The browser starts at the
application (SP-initiated: its AuthnRequests are signed, and its metadata makes the portal insist on it),
does the same with JavaScript off (the Continue button), and starts from My applications (IdP-initiated).
The application checks every Response with python3-saml, InResponseTo included, before it shows anything.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from playwright.sync_api import expect

from tests.support.saml import SpKeys, python3_saml_settings, sp_keys

from .conftest import _run_portal
from .journeys import expect_apps, first_sign_in_with_app, identifier_step, password_step, totp_step
from .support import DESKTOP, DemoAccount, Portal, watch

pytestmark = pytest.mark.browser

PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
LOGIN_SHOT = "/tmp/saml-login.png"
POST_SHOT = "/tmp/saml-post.png"
# Chromium tells the console about every blocked load, script or form submission in these words; the
# init script below also reports each securitypolicyviolation event, in case a wording changes.
CSP_WORDS = re.compile(r"Content[ -]Security[ -]Policy|securitypolicyviolation", re.IGNORECASE)
REPORT_CSP = (
    "document.addEventListener('securitypolicyviolation', e => console.error("
    "'securitypolicyviolation: ' + e.violatedDirective + ' ' + e.blockedURI));"
)


class SamlApp:
    """A service provider on 127.0.0.1: python3-saml builds its AuthnRequests and checks the Responses."""

    def __init__(self, name: str, portal_url: str, keys: SpKeys | None = None) -> None:
        self.name = name
        self.keys = keys
        self.sp_id = ""
        self._lock = threading.Lock()
        # RelayState → the ID of the AuthnRequest sent with it: the POST to the consumer crosses sites, so a
        # SameSite cookie would not come back with it.
        self._sent: dict[str, str] = {}
        with urllib.request.urlopen(f"{portal_url}/saml/metadata", timeout=10) as answer:  # noqa: S310 - loopback
            self._idp = OneLogin_Saml2_IdPMetadataParser.parse(answer.read())["idp"]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.app = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"saml-sp-{name}", daemon=True)

    def __enter__(self) -> SamlApp:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def settings(self) -> dict[str, Any]:
        return python3_saml_settings(
            f"{self.url}/metadata", f"{self.url}/acs", self.keys, self._idp, reject_unsolicited=True
        )

    def metadata(self) -> str:
        """python3-saml's own SP metadata: with a signing certificate and AuthnRequestsSigned when it signs."""
        metadata = OneLogin_Saml2_Settings(self.settings(), sp_validation_only=True).get_sp_metadata()
        return metadata.decode() if isinstance(metadata, bytes) else str(metadata)

    def remember(self, relay_state: str, request_id: str) -> None:
        with self._lock:
            self._sent[relay_state] = request_id

    def request_for(self, relay_state: str) -> str | None:
        with self._lock:
            return self._sent.pop(relay_state, None)


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    @property
    def app(self) -> SamlApp:
        return self.server.app  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test's assertions say what went wrong; a line per request would only hide it

    def _request_data(self, post: dict[str, str] | None = None) -> dict[str, Any]:
        parts = urlsplit(self.path)
        return {
            "https": "off",
            "http_host": self.headers["Host"],
            "script_name": parts.path,
            "get_data": {k: v[0] for k, v in parse_qs(parts.query).items()},
            "post_data": post or {},
        }

    def _send(self, status: int, body: str, content_type: str = "text/html; charset=utf-8") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _page(self, status: int, title: str, body: str) -> None:
        self._send(
            status,
            # No icon to fetch: a 404 for /favicon.ico would be a console error in every test's check.
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            f"<title>{html.escape(title)}</title></head><body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>",
        )

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/":
            self._page(200, self.app.name, '<p><a href="/login">Sign in with AlaCOP</a></p>')
        elif path == "/metadata":
            self._send(200, self.app.metadata(), "application/samlmetadata+xml")
        elif path == "/login":
            auth = OneLogin_Saml2_Auth(self._request_data(), self.app.settings())
            relay_state = secrets.token_urlsafe(16)
            location = auth.login(return_to=relay_state)
            self.app.remember(relay_state, auth.get_last_request_id())
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._page(404, "Not found", "")

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/acs":
            self._page(404, "Not found", "")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        relay_state = form.get("RelayState", "")
        request_id = self.app.request_for(relay_state)
        auth = OneLogin_Saml2_Auth(self._request_data(form), self.app.settings())
        auth.process_response(request_id=request_id)
        errors = auth.get_errors()
        if errors or not auth.is_authenticated():
            reason = html.escape(f"{errors} {auth.get_last_error_reason()}")
            self._page(403, "The sign-in was not accepted", f'<p id="errors">{reason}</p>')
            return
        rows = "".join(
            f'<tr><th scope="row">{html.escape(name)}</th><td>{html.escape(", ".join(values))}</td></tr>'
            for name, values in sorted(auth.get_attributes().items())
        )
        started = f"in answer to {request_id}" if request_id else f"from the portal, relay state {relay_state}"
        self._page(
            200,
            f"Signed in to {self.app.name}",
            f'<p id="nameid">NameID <code>{html.escape(auth.get_nameid() or "")}</code> '
            f"({html.escape(auth.get_nameid_format() or '')})</p>"
            f'<p id="started">{html.escape(started)}</p>'
            f'<table id="attributes"><caption>Attributes</caption>{rows}</table>',
        )


def _register(portal: Portal, app: SamlApp, *options: str) -> str:
    """`alacop saml sps add`, reading the metadata from the application's own address."""
    cmd = [sys.executable, "-m", "alacop.cli", "saml", "sps", "add", app.name, "--metadata", f"{app.url}/metadata"]
    done = subprocess.run(
        [*cmd, *options, "--json"],
        env=portal.env,
        capture_output=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, f"`alacop saml sps add` failed:\n{output}"
    added = json.loads(done.stdout)
    assert added["entity_id"] == f"{app.url}/metadata" and added["acs"] == [f"{app.url}/acs"]
    # An application that signs says so in its metadata, and from then on unsigned requests are refused.
    assert added["authn_requests_signed"] is (app.keys is not None)
    return str(added["id"])


@pytest.fixture(scope="module")
def saml_portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    with _run_portal(tmp_path_factory, "saml") as portal:
        yield portal


@pytest.fixture(scope="module")
def records(saml_portal: Portal) -> Iterator[SamlApp]:
    """Started at the application only; it signs its requests, so the portal requires that it does."""
    with SamlApp("Records Search (SAML)", saml_portal.url, keys=sp_keys("127.0.0.1")) as app:
        app.sp_id = _register(saml_portal, app)
        yield app


@pytest.fixture(scope="module")
def case_files(saml_portal: Portal) -> Iterator[SamlApp]:
    """Allowed to start from My applications."""
    with SamlApp("Case Files (SAML)", saml_portal.url) as app:
        app.sp_id = _register(saml_portal, app, "--idp-initiated", "--relay-state", "/cases/open")
        yield app


@pytest.fixture(scope="module")
def account(saml_portal: Portal, browser: Any) -> DemoAccount:
    """A user of the demo agency, past the first sign-in (new password, authenticator app)."""
    temporary = "temporary passphrase for saml user 5821"
    signed_up = DemoAccount(email=saml_portal.create_user("samluser01", temporary), password=temporary)
    context = browser.new_context(viewport=DESKTOP, base_url=saml_portal.url, locale="en-US")
    try:
        first_sign_in_with_app(context.new_page(), signed_up, "amber meadow 52 compass steadily")
    finally:
        context.close()
    return signed_up


class ConsoleLog:
    """Every console message of one page, of any level."""

    def __init__(self, page: Any) -> None:
        self.messages: list[str] = []
        page.on("console", lambda msg: self.messages.append(f"{msg.type}: {msg.text}"))

    def csp_reports(self) -> list[str]:
        return [m for m in self.messages if CSP_WORDS.search(m)]


OpenPage = Callable[..., tuple[Any, ConsoleLog, Any]]


@pytest.fixture
def open_page(browser: Any) -> Iterator[OpenPage]:
    """Factory: `page, console, problems = open_page(base_url, javascript=...)`, each in a fresh context."""
    contexts: list[Any] = []

    def make(base_url: str, *, javascript: bool = True) -> tuple[Any, ConsoleLog, Any]:
        context = browser.new_context(
            viewport=DESKTOP, base_url=base_url, locale="en-US", java_script_enabled=javascript
        )
        context.set_default_timeout(10_000)
        context.add_init_script(REPORT_CSP)
        contexts.append(context)
        page = context.new_page()
        return page, ConsoleLog(page), watch(page)

    yield make
    for context in contexts:
        context.close()


def _start_at_the_application(page: Any, app: SamlApp, portal: Portal) -> None:
    page.goto("/")
    expect(page.get_by_role("heading", name=app.name, level=1)).to_be_visible()
    page.get_by_role("link", name="Sign in with AlaCOP").click()
    expect(page).to_have_url(re.compile(re.escape(portal.url) + r"/login"))
    expect(page.get_by_text(f"to continue to {app.name}")).to_be_visible()


def _sign_in(page: Any, account: DemoAccount) -> None:
    page.locator("input#identifier").click()
    page.keyboard.type(account.email)
    page.keyboard.press("Enter")
    password_step(page, account.email, account.password)
    totp_step(page, account)


def _expect_signed_in(page: Any, app: SamlApp, started: str | re.Pattern[str]) -> dict[str, str]:
    """On the application's consumer page, which python3-saml only shows for a Response it accepted."""
    expect(page).to_have_url(f"{app.url}/acs")
    expect(page.get_by_role("heading", name=f"Signed in to {app.name}", level=1)).to_be_visible()
    expect(page.locator("#started")).to_have_text(started)
    expect(page.locator("#nameid")).to_contain_text(PERSISTENT)
    cells = page.locator("#attributes tr")
    shown = {row.locator("th").inner_text(): row.locator("td").inner_text() for row in cells.all()}
    assert shown["username"] == "samluser01@alacop.gov", shown
    assert shown["email"] == "samluser01@demo.al.gov" and shown["agencyOri"] == "AL0000000", shown
    assert shown["aal"] == "aal2", shown
    return shown


def test_sign_in_started_at_the_application(
    saml_portal: Portal, records: SamlApp, account: DemoAccount, open_page: OpenPage
) -> None:
    page, console, problems = open_page(records.url)
    _start_at_the_application(page, records, saml_portal)
    page.screenshot(path=LOGIN_SHOT, full_page=True)
    _sign_in(page, account)
    # The continue page moves on, the Response page submits itself: nothing to click.
    _expect_signed_in(page, records, re.compile(r"^in answer to \S+$"))
    assert console.csp_reports() == [], console.messages
    problems.assert_clean()


def test_without_javascript_the_continue_button_finishes_the_sign_in(
    saml_portal: Portal, records: SamlApp, account: DemoAccount, open_page: OpenPage
) -> None:
    page, console, problems = open_page(records.url, javascript=False)
    _start_at_the_application(page, records, saml_portal)
    _sign_in(page, account)
    expect(page.get_by_role("heading", name=f"Signing you in to {records.name}", level=1)).to_be_visible()
    expect(page).to_have_url(re.compile(re.escape(saml_portal.url) + r"/saml/continue\?request="))
    button = page.get_by_role("button", name="Continue", exact=True)
    expect(button).to_be_visible()
    page.screenshot(path=POST_SHOT, full_page=True)
    button.click()
    _expect_signed_in(page, records, re.compile(r"^in answer to \S+$"))
    assert console.csp_reports() == [], console.messages
    problems.assert_clean()


def test_sign_in_started_from_my_applications(
    saml_portal: Portal, records: SamlApp, case_files: SamlApp, account: DemoAccount, open_page: OpenPage
) -> None:
    page, console, problems = open_page(saml_portal.url)
    identifier_step(page, account.email)
    password_step(page, account.email, account.password)
    totp_step(page, account)
    expect_apps(page, account.email)
    tile = page.get_by_role("link", name=case_files.name)
    expect(tile).to_have_attribute("href", f"/saml/start/{case_files.sp_id}")
    # Started at the application only, with no start address: My applications has nowhere to send anyone.
    expect(page.get_by_role("link", name=records.name)).to_have_count(0)
    tile.click()
    shown = _expect_signed_in(page, case_files, "from the portal, relay state /cases/open")
    assert set(shown) >= {"name", "agencyName", "roles", "amr"}, shown
    assert console.csp_reports() == [], console.messages
    problems.assert_clean()
