"""Sign-in with the keyboard alone: focus order and a visible focus indicator on every control (WCAG 2.4.3, 2.4.7).

A user created for this test does its first sign-in (forced change, authenticator app) the usual way; then, from
the sign-in page, only page.keyboard is used: Tab, Shift+Tab, Enter and typing, through the identifier, the
password and the authenticator code to /apps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from .journeys import expect_apps, expect_second_factor, first_sign_in_with_app, sign_out
from .support import DemoAccount, PageProblems, Portal

pytestmark = pytest.mark.browser

NewPage = Callable[..., tuple[Any, PageProblems]]
TAB_LIMIT = 12

FOCUSED = """() => {
    const e = document.activeElement;
    const s = getComputedStyle(e);
    const label = e.labels && e.labels.length ? e.labels[0].textContent.trim() : '';
    return {
        tag: e.tagName, id: e.id || '', type: e.getAttribute('type') || '', label,
        text: e.tagName === 'INPUT' ? '' : (e.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 60),
        outline: `${s.outlineStyle} ${s.outlineWidth} ${s.outlineColor}`,
        outlineShown: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0,
        boxShadow: s.boxShadow,
    };
}"""


def _focused(page: Any) -> dict[str, Any]:
    return dict(page.evaluate(FOCUSED))


def _name(control: dict[str, Any]) -> str:
    what = control["label"] or control["text"] or control["id"] or "?"
    return f"{control['tag'].lower()} {what!r}"


def _assert_focus_visible(control: dict[str, Any]) -> None:
    assert control["tag"] not in ("BODY", "HTML"), "the focus left the page's controls"
    assert control["outlineShown"] or control["boxShadow"] != "none", (
        f"{_name(control)} has the focus but shows no focus indicator "
        f"(outline {control['outline']}, box-shadow {control['boxShadow']}): WCAG 2.4.7"
    )


def _is_field(control: dict[str, Any], field_id: str) -> bool:
    return bool(control["tag"] == "INPUT" and control["id"] == field_id)


def _is_button(control: dict[str, Any], label: str) -> bool:
    return bool(control["tag"] == "BUTTON" and control["text"] == label)


def _tab_to(page: Any, wanted: Callable[[dict[str, Any]], bool], what: str, *, back: bool = False) -> list[str]:
    """Press Tab (Shift+Tab if `back`) until `wanted` has the focus; every control on the way must show its focus.

    Returns the names of the controls the focus was on, from the one it started on to `wanted`.
    """
    current = _focused(page)
    path = [_name(current)]
    for _ in range(TAB_LIMIT):
        if wanted(current):
            _assert_focus_visible(current)
            return path
        page.keyboard.press("Shift+Tab" if back else "Tab")
        current = _focused(page)
        _assert_focus_visible(current)
        path.append(_name(current))
    raise AssertionError(f"{'Shift+Tab' if back else 'Tab'} never reached {what}; the focus went through {path}")


def test_keyboard_only_sign_in(new_page: NewPage, portal: Portal) -> None:
    temporary, chosen = "temporary passphrase for keyboard user 3391", "hazel window rocket 27 neatly"
    account = DemoAccount(email=portal.create_user("keyboarduser01", temporary), password=temporary)
    setup, setup_problems = new_page()
    first_sign_in_with_app(setup, account, chosen)
    sign_out(setup)
    setup_problems.assert_clean()

    page, problems = new_page()
    page.goto("/login")
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()

    # Identifier: the email field first, then Next (and back again with Shift+Tab).
    _tab_to(page, lambda c: _is_field(c, "identifier"), "the email field")
    page.keyboard.type(account.email)
    forward = _tab_to(page, lambda c: _is_button(c, "Next"), "the Next button")
    backward = _tab_to(page, lambda c: _is_field(c, "identifier"), "the email field", back=True)
    assert backward[0] == "button 'Next'" and backward[-1] == "input 'AlaCOP email'", f"Shift+Tab: {backward}"
    _tab_to(page, lambda c: _is_button(c, "Next"), "the Next button")
    page.keyboard.press("Enter")

    # Password: the password field (focused on arrival), then Sign in.
    expect(page.get_by_role("heading", name="Enter password")).to_be_visible()
    expect(page.locator(".identity")).to_have_text(account.email)
    expect(page.locator("input#password")).to_be_focused()
    _tab_to(page, lambda c: _is_field(c, "password"), "the password field")
    page.keyboard.type(account.password)
    _tab_to(page, lambda c: _is_button(c, "Sign in"), "the Sign in button")
    page.keyboard.press("Enter")

    # Second factor: the code field (focused on arrival), then Verify.
    expect_second_factor(page, account.email)
    expect(page.locator("input#code")).to_be_focused()
    _tab_to(page, lambda c: _is_field(c, "code"), "the code field")
    page.keyboard.type(account.totp_code())
    _tab_to(page, lambda c: _is_button(c, "Verify"), "the Verify button")
    page.keyboard.press("Enter")

    expect_apps(page, account.email)
    assert forward[0] == "input 'AlaCOP email'" and forward[-1] == "button 'Next'", f"Tab order: {forward}"
    problems.assert_clean()
