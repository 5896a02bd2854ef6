"""SAML single sign-on in Chromium: the demo application "Case Files" signs in through the portal and back.

A portal of its own registers the demo application (as `alacop demo` does) at a free port; the demo
application runs with uvicorn and python3-saml; the browser starts at the application, signs in on the
portal (the first sign-in of a user of this test, with an authenticator app), and comes back to the
application's consumer page, which shows the NameID and attributes of the Response it accepted.
"""

from __future__ import annotations

import base64
import json
import re
import stat
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import expect

from alacop.help.build import free_port

from .conftest import _run_portal, run_demo_app
from .journeys import expect_apps, first_sign_in_steps
from .support import DemoAccount, PageProblems, Portal

pytestmark = pytest.mark.browser
NewPage = Callable[..., tuple[Any, PageProblems]]
SHOT = "/tmp/saml-demo.png"
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"


@pytest.fixture(scope="module")
def saml_sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Portal, str]]:
    port = free_port()
    demo_url = f"http://localhost:{port}"
    with _run_portal(tmp_path_factory, "saml-demo", SAML_DEMO_URL=demo_url) as portal:
        config = portal.data_dir / "saml_demo.json"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        written = json.loads(config.read_text())
        assert written["entity_id"] == f"{demo_url}/saml/metadata" and written["acs_url"] == f"{demo_url}/saml/acs"
        assert "PRIVATE KEY" in written["private_key"]
        log = portal.data_dir.parent / f"saml-demo-{port}.log"
        with run_demo_app("examples.saml_demo.app:build_app", port, log, SAML_DEMO_CONFIG=str(config)):
            yield portal, demo_url


def test_the_demo_application_publishes_its_metadata(saml_sso: tuple[Portal, str]) -> None:
    _, demo_url = saml_sso
    with urllib.request.urlopen(f"{demo_url}/saml/metadata", timeout=10) as resp:  # noqa: S310 - loopback
        xml = resp.read().decode()
    assert f'entityID="{demo_url}/saml/metadata"' in xml
    assert 'AuthnRequestsSigned="true"' in xml and f'Location="{demo_url}/saml/acs"' in xml


def test_an_unsigned_response_is_refused_with_the_reason(saml_sso: tuple[Portal, str], new_page: NewPage) -> None:
    portal, demo_url = saml_sso
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    unsigned = (
        '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_forged" Version="2.0" '
        f'IssueInstant="{now}" Destination="{demo_url}/saml/acs">'
        f"<saml:Issuer>{portal.url}/saml/metadata</saml:Issuer>"
        '<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>'
        "</samlp:Response>"
    )
    page, _ = new_page(base_url=demo_url)
    form = {"SAMLResponse": base64.b64encode(unsigned.encode()).decode()}
    answer = page.request.post("/saml/acs", form=form)
    assert answer.status == 403
    assert "Sign-in failed" in answer.text() and "was not accepted" in answer.text(), answer.text()


def test_sign_in_to_the_saml_demo_application_through_the_portal_and_back(
    saml_sso: tuple[Portal, str], new_page: NewPage
) -> None:
    portal, demo_url = saml_sso
    temporary, chosen = "temporary passphrase for saml demo user 6130", "harbor lantern 47 quietly drifting"
    account = DemoAccount(email=portal.create_user("samldemo01", temporary), password=temporary)
    page, problems = new_page(base_url=demo_url)
    page.goto("/")
    expect(page.get_by_role("heading", name="Case Files", level=1)).to_be_visible()
    page.get_by_role("link", name="Sign in with AlaCOP").click()

    # On the portal: it names the application, then the first sign-in of this user.
    expect(page).to_have_url(re.compile(re.escape(portal.url) + r"/login"))
    expect(page.get_by_text("to continue to Case Files (SAML demo)")).to_be_visible()
    first_sign_in_steps(page, account, chosen)

    # Back at the application, whose consumer page shows only a Response python3-saml accepted.
    expect(page).to_have_url(f"{demo_url}/saml/acs")
    expect(page.get_by_role("heading", name="Signed in as samldemo01@alacop.gov", level=1)).to_be_visible()
    expect(page.locator("#started")).to_have_text("The sign-in started at this application.")
    expect(page.locator("#nameid")).to_contain_text(PERSISTENT)
    rows = page.locator("#attributes tr")
    shown = {row.locator("th").inner_text(): row.locator("td").inner_text() for row in rows.all()}
    assert shown["username"] == "samldemo01@alacop.gov", shown
    assert shown["email"] == "samldemo01@demo.al.gov" and shown["agencyOri"] == "AL0000000", shown
    assert shown["aal"] == "aal2", shown
    page.screenshot(path=SHOT, full_page=True)
    page.get_by_role("link", name="Start over").click()
    expect(page.get_by_role("heading", name="Case Files", level=1)).to_be_visible()

    # Signed in on the portal now, the application is also on My applications (IdP-initiated).
    page.goto(f"{portal.url}/")
    expect_apps(page, account.email)
    page.get_by_role("link", name="Case Files (SAML demo)").click()
    expect(page).to_have_url(f"{demo_url}/saml/acs")
    expect(page.get_by_role("heading", name="Signed in as samldemo01@alacop.gov", level=1)).to_be_visible()
    expect(page.locator("#started")).to_have_text("The sign-in started on the portal (My applications).")
    problems.assert_clean()
