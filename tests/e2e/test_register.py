"""New User Registration through approval, in headless Chromium, on the test-mode portal.

An applicant fills in the form (the CAPTCHA answered from the test seed), confirms the work email with
the code from the portal's outbox and sees "Request sent". The demo agency's coordinator, `democo`,
does a first sign-in with two kinds of method (an authenticator app and Chromium's virtual security
key), opens the request on the console and approves it. The applicant opens the activation link from
the outbox, chooses a password, sets up an authenticator app and reaches My applications.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from alacop.core.captcha import answer_for

from .journeys import (
    add_virtual_authenticator,
    change_password_step,
    credentials,
    enrol_totp,
    expect_apps,
    expect_captcha_picture_loaded,
    password_step,
    save_recovery_codes,
    shoot,
)
from .support import DEMO_PASSWORD, DemoAccount, PageProblems, Portal

pytestmark = pytest.mark.browser
NewPage = Callable[..., tuple[Any, PageProblems]]

APPLICANT_EMAIL = "riley.nguyen@demo.al.gov"
APPLICANT_PASSWORD = "granite meadow 52 lantern softly"
COORDINATOR = "democo@alacop.gov"
COORDINATOR_PASSWORD = "copper valley 28 harbor quietly"
REGISTER_URL = re.compile(r"/register(\?flow=[\w-]+)?$")


def _mail(portal: Portal, to: str, pattern: str) -> str:
    """The first group of `pattern` in the newest message the portal saved for `to`; waits briefly."""
    outbox = portal.data_dir / "outbox"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for path in sorted(outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns, reverse=True):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            body = message.get_body(preferencelist=("plain",))
            found = re.search(pattern, body.get_content() if body else "") if message["To"] == to else None
            if found:
                return found.group(1)
        time.sleep(0.2)
    raise AssertionError(f"no mail to {to} matching {pattern!r} in {outbox}")


def _type(page: Any, label: str, text: str) -> None:
    page.get_by_label(label, exact=True).click()
    page.keyboard.type(text)


def _register(page: Any, portal: Portal) -> None:
    page.goto("/login")
    page.get_by_role("link", name="New User Registration").click()
    expect(page).to_have_url(REGISTER_URL)
    expect(page.get_by_role("heading", name="New User Registration", level=1)).to_be_visible()
    expect_captcha_picture_loaded(page)
    for label, value in (
        ("First name *(required)", "Riley"),
        ("Last name *(required)", "Nguyen"),
        ("Job title *(required)", "Dispatcher"),
        ("Agency *(required)", "AL0000000"),
        ("Work email *(required)", "riley.nguyen@gmail.com"),
        ("Work phone *(required)", "(334) 555-0142"),
        ("Supervisor's name *(required)", "Lt. Morgan Hale"),
        ("Reason for access *(required)", "Dispatch queries for patrol units."),
    ):
        _type(page, label, value)
    trained = (date.today() - timedelta(days=40)).isoformat()
    page.get_by_label("Date of your CJIS security awareness training *(required)").fill(trained)
    page.get_by_label("I have read the rules of behavior and I accept them.").check()
    src = page.locator(".captcha img").get_attribute("src") or ""
    assert src.startswith("/register/captcha.png?"), src
    nonce = re.search(r"[?&]c=([\w-]+)", src)
    assert nonce, src
    _type(
        page,
        "Enter the characters in the picture or the words in the audio: *(required)",
        answer_for(portal.captcha_seed, nonce.group(1)),
    )
    page.get_by_role("button", name="Submit request").click()

    # A personal email is refused on the field, and everything else typed is still there.
    expect(page.get_by_role("alert")).to_contain_text("Check the fields marked below.")
    email_field = page.get_by_label("Work email *(required)")
    expect(email_field).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Supervisor's name *(required)")).to_have_value("Lt. Morgan Hale")
    expect(page.get_by_label("I have read the rules of behavior and I accept them.")).to_be_checked()
    email_field.fill(APPLICANT_EMAIL)
    expect_captcha_picture_loaded(page)
    nonce = re.search(r"[?&]c=([\w-]+)", page.locator(".captcha img").get_attribute("src") or "")
    assert nonce
    _type(
        page,
        "Enter the characters in the picture or the words in the audio: *(required)",
        answer_for(portal.captcha_seed, nonce.group(1)),
    )
    shoot(page, "register-form")
    page.get_by_role("button", name="Submit request").click()

    expect(page.get_by_role("heading", name="Confirm your work email", level=1)).to_be_visible()
    expect(page.locator("#flow-message")).to_contain_text(f"We sent a code to {APPLICANT_EMAIL}")
    shoot(page, "register-verify", phone_too=True)
    code = _mail(portal, APPLICANT_EMAIL, r"registration is: ([A-Z0-9]{8})")
    page.get_by_label("Code from the email").click()
    page.keyboard.type(code.lower())
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="Request sent", level=1)).to_be_visible()
    page.get_by_role("link", name="status page").click()
    expect(page.get_by_role("heading", name="Your registration request", level=1)).to_be_visible()
    expect(page.locator("[data-status]")).to_have_attribute("data-status", "pending")


def _coordinator_first_sign_in(page: Any) -> None:
    """democo: forced change, an authenticator app, then a security key (coordinators need two kinds)."""
    cdp, authenticator = add_virtual_authenticator(page)
    page.goto("/login")
    page.locator("input#identifier").click()
    page.keyboard.type(COORDINATOR)
    page.keyboard.press("Enter")
    password_step(page, COORDINATOR, DEMO_PASSWORD)
    change_password_step(page, DEMO_PASSWORD, COORDINATOR_PASSWORD)
    account = DemoAccount(email=COORDINATOR, password=COORDINATOR_PASSWORD, changed=True)
    enrol_totp(page, account)
    expect(page.get_by_role("heading", name="Set up your sign-in methods", level=1)).to_be_visible()
    page.get_by_role("button", name="Security key or passkey", exact=True).click()
    page.get_by_label("Name for this key").click()
    page.keyboard.type("Desk key")
    page.get_by_role("button", name="Register security key").click()
    save_recovery_codes(page)
    expect_apps(page, COORDINATOR)
    assert len(credentials(cdp, authenticator)) == 1


def _approve_on_the_console(page: Any) -> None:
    page.goto("/admin/requests")
    expect(page.get_by_role("heading", name="Registration requests", level=1)).to_be_visible()
    page.get_by_role("link", name="Riley Nguyen").click()
    expect(page.get_by_role("heading", name="Request from Riley Nguyen", level=1)).to_be_visible()
    expect(page.get_by_text(f"{APPLICANT_EMAIL} (confirmed)")).to_be_visible()
    shoot(page, "console-request")
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page.locator("#main .msg-success")).to_contain_text("approved")
    expect(page.locator("[data-fact=status]")).to_have_text("approved")
    page.locator("[data-fact=account]").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Riley Nguyen")
    expect(page.locator("#main")).to_contain_text("rn0101")


def _activate(page: Any, portal: Portal) -> str:
    link = _mail(portal, APPLICANT_EMAIL, r"(/activate\?token=[\w-]+)")
    assert _mail(portal, APPLICANT_EMAIL, r"Your username is (\w+)") == "rn0101"
    page.goto(link)
    expect(page.get_by_role("heading", name="Activate your account", level=1)).to_be_visible()
    expect(page.locator("p.identity")).to_have_text("rn0101@alacop.gov")
    shoot(page, "activate", phone_too=True)
    for label in ("New password", "Confirm new password"):
        _type(page, label, APPLICANT_PASSWORD)
    page.get_by_role("button", name="Set password and continue").click()
    account = DemoAccount(email="rn0101@alacop.gov", password=APPLICANT_PASSWORD, changed=True)
    enrol_totp(page, account)
    save_recovery_codes(page)
    expect_apps(page, "rn0101@alacop.gov")
    return link


def test_register_approve_on_the_console_activate_and_reach_apps(recovery_portal: Portal, new_page: NewPage) -> None:
    applicant, applicant_problems = new_page(base_url=recovery_portal.url)
    _register(applicant, recovery_portal)

    coordinator, coordinator_problems = new_page(base_url=recovery_portal.url)
    _coordinator_first_sign_in(coordinator)
    _approve_on_the_console(coordinator)

    link = _activate(applicant, recovery_portal)
    applicant_problems.assert_clean()
    coordinator_problems.assert_clean()

    # The link worked once: a second visit gets the refusal page (a 410, which the console logs).
    again, _ = new_page(base_url=recovery_portal.url)
    response = again.goto(link)
    assert response is not None and response.status == 410
    expect(again.get_by_role("heading", name="This link does not work", level=1)).to_be_visible()
    assert again.request.get(f"{recovery_portal.url}/register/status?t=unknown").status == 404
