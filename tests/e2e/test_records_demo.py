"""Single sign-on in Chromium: the demo application "Records Search" signs in through the portal and back.

A portal of its own registers the demo application (as `alacop demo` does) at a free port; the demo
application runs with uvicorn; the browser starts at the application, signs in on the portal (the first
sign-in of a user of this test, with an authenticator app), comes back with the ID token's claims shown,
and signs out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from alacop.help.build import free_port

from .conftest import _run_portal, run_demo_app
from .journeys import first_sign_in_steps, shoot
from .support import DemoAccount, PageProblems, Portal

pytestmark = pytest.mark.browser
NewPage = Callable[..., tuple[Any, PageProblems]]


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Portal, str]]:
    port = free_port()
    demo_url = f"http://localhost:{port}"
    with _run_portal(tmp_path_factory, "sso", RECORDS_DEMO_URL=demo_url) as portal:
        credentials = portal.data_dir / "records_demo.json"
        assert json.loads(credentials.read_text())["client_secret"]
        log = portal.data_dir.parent / f"records-demo-{port}.log"
        env = {"RECORDS_DEMO_URL": demo_url, "RECORDS_DEMO_CREDENTIALS": str(credentials)}
        with run_demo_app("examples.records_demo.app:build_app", port, log, **env):
            yield portal, demo_url


def test_sign_in_to_the_demo_application_through_the_portal_and_back(
    sso: tuple[Portal, str], new_page: NewPage
) -> None:
    portal, demo_url = sso
    temporary, chosen = "temporary passphrase for sso user 4417", "cobalt river 83 signal calmly"
    account = DemoAccount(email=portal.create_user("ssouser01", temporary), password=temporary)
    page, problems = new_page(base_url=demo_url)
    page.goto("/")
    expect(page.get_by_role("heading", name="Records Search", level=1)).to_be_visible()
    page.get_by_role("link", name="Sign in with AlaCOP").click()

    # On the portal: it names the application, then the first sign-in of this user.
    expect(page).to_have_url(re.compile(re.escape(portal.url) + r"/login"))
    expect(page.get_by_text("to continue to Records Search (demo)")).to_be_visible()
    shoot(page, "sso-signin")
    first_sign_in_steps(page, account, chosen)

    # Back at the application, which validated the ID token and called userinfo.
    expect(page).to_have_url(re.compile(re.escape(demo_url) + r"/$"))
    expect(page.get_by_role("heading", name="Signed in as ssouser01", level=1)).to_be_visible()
    claims = page.locator("table").inner_text()
    assert "ssouser01@demo.al.gov" in claims and "AL0000000" in claims and "aal2" in claims
    shoot(page, "sso-claims")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Records Search", level=1)).to_be_visible(timeout=15_000)
    problems.assert_clean()
