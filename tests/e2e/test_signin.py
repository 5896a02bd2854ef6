"""The sign-in pages in headless Chromium: layout, order, messages and the demo account's journey."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from .journeys import FLOW_URL, expect_second_factor, password_step, sign_in_demo, sign_out
from .support import DEMO_PASSWORD, DESKTOP, PHONE, DemoAccount, PageProblems

pytestmark = pytest.mark.browser

NewPage = Callable[..., tuple[Any, PageProblems]]


def _signin_elements(page: Any) -> list[tuple[str, Any]]:
    """The sign-in page's parts, in the order they must appear in the DOM (and to screen readers)."""
    return [
        ("heading 'Sign in'", page.get_by_role("heading", name="Sign in", exact=True)),
        ("email field", page.locator("input#identifier")),
        ("link 'Can't access your account?'", page.get_by_role("link", name="Can't access your account?")),
        ("button 'Next'", page.get_by_role("button", name="Next", exact=True)),
        ("link 'New User Registration'", page.get_by_role("link", name="New User Registration")),
        ("link 'ALACOP Help Center'", page.get_by_role("link", name="ALACOP Help Center")),
        ("WARNING", page.locator("section.warning")),
        ("link 'Sign-in options'", page.get_by_role("link", name="Sign-in options")),
    ]


def _assert_dom_order(page: Any, parts: list[tuple[str, Any]]) -> None:
    handles = [(name, loc.element_handle()) for name, loc in parts]
    for (first_name, first), (second_name, second) in itertools.pairwise(handles):
        follows = page.evaluate(
            "([a, b]) => Boolean(a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING)",
            [first, second],
        )
        assert follows, f"{second_name} should come after {first_name} in the DOM"


def _box(page: Any, selector: str) -> dict[str, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not rendered"
    return dict(box)


@pytest.mark.parametrize(
    ("viewport", "shot"),
    [(DESKTOP, "signin-desktop.png"), (PHONE, "signin-phone.png")],
    ids=["desktop", "phone"],
)
def test_signin_page_layout_and_order(
    new_page: NewPage, screenshots_dir: Path, viewport: dict[str, int], shot: str
) -> None:
    page, problems = new_page(viewport=viewport)
    page.goto("/login")
    expect(page).to_have_url(FLOW_URL)
    expect(page).to_have_title(re.compile(r"^Sign in"))

    parts = _signin_elements(page)
    for name, loc in parts:
        expect(loc, f"{name} should be shown once").to_have_count(1)
        expect(loc, f"{name} should be visible").to_be_visible()
    _assert_dom_order(page, parts)

    field = page.locator("input#identifier")
    expect(field).to_have_attribute("placeholder", "someone@alacop.gov")
    expect(field).to_have_attribute("type", "email")
    expect(page.get_by_role("textbox", name="AlaCOP email")).to_have_count(1)
    expect(page.get_by_role("link", name="Can't access your account?")).to_have_attribute("href", "/recover")
    expect(page.get_by_role("link", name="New User Registration")).to_have_attribute("href", "/register")
    expect(page.get_by_role("link", name="ALACOP Help Center")).to_have_attribute("href", "/help")
    expect(page.get_by_role("link", name="Sign-in options")).to_have_attribute("href", "/login/options")
    warning = page.locator("section.warning")
    expect(warning).to_contain_text("WARNING")
    expect(warning).to_contain_text("All transactions are monitored and logged")

    page.screenshot(path=str(screenshots_dir / shot), full_page=True)

    square = _box(page, ".stage-square")
    bar = _box(page, "main.bar")
    if viewport is PHONE:
        assert bar["y"] >= square["y"] + square["height"], f"bar {bar} should be below the square {square}"
        assert bar["x"] >= 0
        assert bar["x"] + bar["width"] <= viewport["width"] + 0.5, "the sign-in bar overflows the phone screen"
    else:
        assert bar["x"] >= square["x"] + square["width"], f"bar {bar} should be right of the square {square}"
    problems.assert_clean()


def test_wrong_domain_is_explained(new_page: NewPage) -> None:
    page, problems = new_page()
    page.goto("/login")
    page.locator("input#identifier").click()
    page.keyboard.type("someone@gmail.com")
    page.get_by_role("button", name="Next", exact=True).click()

    alert = page.get_by_role("alert")
    expect(alert).to_have_count(1)
    expect(alert).to_contain_text("followed by “@alacop.gov”")
    expect(page).to_have_url(FLOW_URL)
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    expect(page.locator("input#identifier")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("input#password")).to_have_count(0)
    problems.assert_clean()


def test_demo_sign_in_forced_change_and_sign_out(
    new_page: NewPage, screenshots_dir: Path, demo_account: DemoAccount
) -> None:
    """Sign in (the forced change and enrolment if no test did them yet; else a recovery code), then sign out."""
    page, problems = new_page()
    sign_in_demo(page, demo_account, second_factor="recovery_code")
    page.screenshot(path=str(screenshots_dir / "apps-desktop.png"), full_page=True)

    sign_out(page)
    # Signed out for real: the applications page no longer opens.
    page.goto("/apps")
    expect(page.get_by_role("heading", name="My applications")).to_have_count(0)
    problems.assert_clean()


def test_old_password_stops_working_after_the_change(new_page: NewPage, demo_account: DemoAccount) -> None:
    """Whatever ran first, after the forced change only the new passphrase works, and it alone is not enough."""
    if not demo_account.changed:
        page, problems = new_page()
        sign_in_demo(page, demo_account)  # does the forced change and enrolment itself
        problems.assert_clean()
    assert demo_account.changed

    other, other_problems = new_page()
    other.goto("/login")
    other.locator("input#identifier").fill(demo_account.email)
    other.get_by_role("button", name="Next", exact=True).click()
    password_step(other, demo_account.email, DEMO_PASSWORD)
    expect(other.get_by_role("alert")).to_contain_text("Your account or password is incorrect.")
    expect(other.get_by_role("heading", name="Enter password")).to_be_visible()

    # The new passphrase leads to the second factor, not to a session.
    other.locator("input#password").fill("")
    password_step(other, demo_account.email, demo_account.password)
    expect_second_factor(other, demo_account.email)
    other.goto("/apps")
    expect(other.get_by_role("heading", name="My applications")).to_have_count(0)
    other_problems.assert_clean()


def _focused(page: Any) -> dict[str, str]:
    return dict(
        page.evaluate(
            "() => { const e = document.activeElement;"
            " return {tag: e.tagName, id: e.id || '', text: (e.textContent || '').trim()}; }"
        )
    )


def test_keyboard_only_reaches_password_step(new_page: NewPage, demo_account: DemoAccount) -> None:
    page, problems = new_page()
    page.goto("/login")
    # Only page.keyboard from here: Tab to the email field (it has autofocus, so usually no Tab is needed).
    for _ in range(10):
        if _focused(page)["id"] == "identifier":
            break
        page.keyboard.press("Tab")
    assert _focused(page)["id"] == "identifier", "Tab never reached the email field"
    page.keyboard.type(demo_account.email)
    for _ in range(5):
        page.keyboard.press("Tab")
        focused = _focused(page)
        if focused["tag"] == "BUTTON":
            break
    assert focused == {"tag": "BUTTON", "id": "", "text": "Next"}, f"Tab after the email field reached {focused}"
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", name="Enter password")).to_be_visible()
    expect(page.locator(".identity")).to_have_text(demo_account.email)
    expect(page.locator("input#password")).to_be_focused()
    problems.assert_clean()


def test_signin_options_page(new_page: NewPage, screenshots_dir: Path) -> None:
    page, problems = new_page()
    page.goto("/login")
    page.get_by_role("link", name="Sign-in options").click()
    expect(page).to_have_url(re.compile(r"/login/options$"))
    expect(page.get_by_role("heading", name="Sign-in options")).to_be_visible()

    for key, title in (
        ("passkey", "Face, fingerprint, PIN or security key"),
        ("github", "Sign in with GitHub"),
    ):
        option = page.locator(f"[data-option={key}]")
        expect(option).to_be_visible()
        expect(option).to_contain_text(title)
        expect(option.locator(".option-status")).to_contain_text("not supported")
    back = page.get_by_role("link", name="Back", exact=True)
    expect(back).to_have_attribute("href", "/login")
    page.screenshot(path=str(screenshots_dir / "options-desktop.png"), full_page=True)

    back.click()
    expect(page).to_have_url(FLOW_URL)
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    problems.assert_clean()
