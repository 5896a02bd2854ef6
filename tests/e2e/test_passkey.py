"""Passkey sign-in (no password typed) on a second portal started with ALACOP_POLICY__PASSKEY_SIGN_IN=true."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from .journeys import (
    FLOW_URL,
    add_virtual_authenticator,
    credentials,
    expect_apps,
    first_sign_in_with_security_key,
    shoot,
    sign_out,
)
from .support import PageProblems, Portal

pytestmark = pytest.mark.browser

NewPage = Callable[..., tuple[Any, PageProblems]]


# App bug: LoginService.submit_passkey (alacop/flows/login.py) hands a flow still in state "identifier" to
# _complete, whose flow.move(COMPLETE) raises FlowInvalid (TRANSITIONS[IDENTIFIER] is {PASSWORD}), so
# POST /login/passkey answers 400 after the key was verified. Strict: this fails loudly once it is fixed.
def test_passkey_sign_in_without_password(new_page: NewPage, passkey_portal: Portal) -> None:
    temporary, chosen = "temporary passphrase for passkey user 9034", "copper window falcon 12 gently"
    email = passkey_portal.create_user("passkeyuser01", temporary)
    page, problems = new_page(base_url=passkey_portal.url)
    cdp, authenticator = add_virtual_authenticator(page)

    first_sign_in_with_security_key(page, email, temporary, chosen, "Laptop passkey")
    stored = credentials(cdp, authenticator)
    assert len(stored) == 1 and stored[0]["isResidentCredential"], f"expected one discoverable credential: {stored}"
    sign_out(page)

    page.get_by_role("link", name="Sign-in options").click()
    expect(page).to_have_url(re.compile(r"/login/options$"))
    expect(page.get_by_role("heading", name="Sign-in options")).to_be_visible()
    option = page.locator("[data-option=passkey]")
    expect(option).to_contain_text("Face, fingerprint, PIN or security key")
    expect(option.locator(".option-status")).to_have_count(0)
    button = option.get_by_role("button", name="Sign in with a passkey")
    expect(button).to_be_visible()
    expect(page.locator("[data-option=github] .option-status")).to_contain_text("not supported")
    shoot(page, "options-passkey")

    button.click()
    expect_apps(page, email)
    expect(page.locator("input[type=password]")).to_have_count(0)
    assert not FLOW_URL.search(page.url)
    problems.assert_clean()
