"""Second factors in headless Chromium: enrolment at first sign-in, later sign-ins, Security info.

The demo account enrols an authenticator app; a user created with the CLI enrols a security key
(Chromium's virtual authenticator, driven over CDP).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from .journeys import (
    add_virtual_authenticator,
    change_password_step,
    credentials,
    demo_first_sign_in,
    enrol_security_key,
    expect_apps,
    expect_second_factor,
    identifier_step,
    password_step,
    save_recovery_codes,
    shoot,
    sign_out,
    totp_step,
)
from .support import SCREENSHOTS, DemoAccount, PageProblems, Portal

pytestmark = pytest.mark.browser

NewPage = Callable[..., tuple[Any, PageProblems]]


def test_demo_first_sign_in_enrols_authenticator_app(new_page: NewPage, demo_account: DemoAccount) -> None:
    """Password change, authenticator app and recovery codes; then a later sign-in with a code."""
    page, problems = new_page()
    if not demo_account.changed:  # else the test that ran first did it, with the same checks and screenshots
        demo_first_sign_in(page, demo_account)
        sign_out(page)
    for name in (
        "enroll-desktop",
        "enroll-phone",
        "enroll-totp-desktop",
        "enroll-totp-phone",
        "recovery-codes-desktop",
    ):
        assert (SCREENSHOTS / f"{name}.png").is_file(), f"{name}.png was not written"
    assert demo_account.totp_secret is not None

    # A later sign-in asks for the app's code; a password alone does not sign in.
    identifier_step(page, demo_account.email)
    password_step(page, demo_account.email, demo_account.password)
    expect_second_factor(page, demo_account.email)
    expect(page.get_by_label("Enter the 6-digit code from your authenticator app")).to_be_focused()
    other_ways = page.locator("details.other-ways")
    expect(other_ways.get_by_role("button", name="Recovery code")).to_be_hidden()
    shoot(page, "second-factor", phone_too=True)
    other_ways.locator("summary").click()
    expect(other_ways.get_by_role("button", name="Recovery code", exact=True)).to_be_visible()
    expect(other_ways.get_by_role("button", name="Authenticator app")).to_have_count(0)
    expect(page.get_by_role("link", name="Lost your phone or security key?")).to_be_visible()
    totp_step(page, demo_account)
    expect_apps(page, demo_account.email)

    # Security info lists the app, the recovery codes and this sign-in.
    page.get_by_role("link", name="Security info").click()
    expect(page).to_have_url(re.compile(r"/account/security$"))
    expect(page.get_by_role("heading", name="Security info", level=1)).to_be_visible()
    methods = page.get_by_role("region", name="Sign-in methods")
    expect(methods.locator("tbody tr")).to_have_count(1)
    expect(methods.locator("tbody tr td").first).to_have_text("Authenticator app")
    expect(methods.get_by_role("textbox", name="Name of Authenticator app")).to_have_value("Work phone")
    expect(page.get_by_role("region", name="Recovery codes")).to_contain_text(
        f"{len(demo_account.recovery_codes)} of 10 unused"
    )
    expect(page.get_by_role("region", name="Recent sign-ins").locator("tbody tr.ok").first).to_be_visible()
    expect(page.get_by_role("region", name="Where you're signed in")).to_contain_text("(this browser)")
    shoot(page, "security-info")
    problems.assert_clean()


def test_new_user_enrols_security_key_and_signs_in_with_it(new_page: NewPage, portal: Portal) -> None:
    """First sign-in choosing a security key (virtual authenticator); sign out; sign in with the key."""
    temporary, chosen = "temporary passphrase for key user 4821", "granite meadow kettle 55 softly"
    email = portal.create_user("keyuser01", temporary)
    page, problems = new_page()
    cdp, authenticator = add_virtual_authenticator(page)

    identifier_step(page, email)
    password_step(page, email, temporary)
    change_password_step(page, temporary, chosen)
    enrol_security_key(page, email, "Blue security key", screenshot="enroll-key")
    expect(page.get_by_role("status").filter(has_text="was added")).to_contain_text(
        "Security key or passkey “Blue security key” was added."
    )
    save_recovery_codes(page)
    expect_apps(page, email)
    stored = credentials(cdp, authenticator)
    assert len(stored) == 1, f"the virtual authenticator should hold one credential: {stored}"

    sign_out(page)
    identifier_step(page, email)
    password_step(page, email, chosen)
    expect_second_factor(page, email)
    expect(page.get_by_role("button", name="Use security key")).to_be_visible()
    shoot(page, "second-factor-key")
    page.get_by_role("button", name="Use security key").click()
    expect_apps(page, email)
    assert credentials(cdp, authenticator)[0]["signCount"] >= 2, "the key was not used to sign in"
    problems.assert_clean()
