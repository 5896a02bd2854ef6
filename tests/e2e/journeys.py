"""Steps of the sign-in journeys, shared by the browser tests: each one checks the page it acts on."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import expect

from alacop.core.captcha import answer_for

from .support import DESKTOP, PHONE, SCREENSHOTS, DemoAccount, Portal

NEW_PASSPHRASE = "blue harbor lantern 7 quietly"
FLOW_URL = re.compile(r"/login(\?flow=[\w-]+)?$")
APPS_URL = re.compile(r"/apps$")
# The base32 seed, shown in groups of four characters.
GROUPED_SECRET = re.compile(r"^[A-Z2-7]{4}( [A-Z2-7]{4})*( [A-Z2-7]{1,3})?$")
VIRTUAL_AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "usb",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
}


def shoot(page: Any, name: str, *, phone_too: bool = False) -> None:
    """Full-page screenshot `<name>-desktop.png`; with phone_too, the same page at phone width as well."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"), full_page=True)
    if phone_too:
        page.set_viewport_size(PHONE)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True)
        page.set_viewport_size(DESKTOP)


def focused(page: Any) -> dict[str, str]:
    return dict(
        page.evaluate(
            "() => { const e = document.activeElement;"
            " return {tag: e.tagName, id: e.id || '', text: (e.textContent || '').trim()}; }"
        )
    )


def tab_to_button(page: Any, label: str, *, limit: int = 30) -> None:
    """Press Tab until the button named `label` has the focus (keyboard only)."""
    for _ in range(limit):
        current = focused(page)
        if current["tag"] == "BUTTON" and current["text"] == label:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached the button {label!r}; the focus is on {focused(page)}")


def identifier_step(page: Any, email: str) -> None:
    page.goto("/login")
    type_identifier(page, email)


def type_identifier(page: Any, email: str) -> None:
    """On an identifier page already open (the portal's own, or one an application sent the browser to)."""
    page.locator("input#identifier").click()
    page.keyboard.type(email)
    page.keyboard.press("Enter")


def password_step(page: Any, email: str, password: str) -> None:
    expect(page.get_by_role("heading", name="Enter password")).to_be_visible()
    expect(page.locator(".identity")).to_have_text(email)
    page.locator("input#password").click()
    page.keyboard.type(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def change_password_step(page: Any, current: str, new: str) -> None:
    """The forced change at first sign-in."""
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    expect(page.locator("input#password")).to_have_count(0)
    for label, value in (("Current password", current), ("New password", new), ("Confirm new password", new)):
        page.get_by_label(label, exact=True).click()
        page.keyboard.type(value)
    page.get_by_role("button", name="Set password and sign in").click()


def expect_enrol_choice(page: Any, email: str) -> None:
    expect(page).to_have_url(FLOW_URL)
    expect(page).to_have_title(re.compile(r"^Set up your sign-in methods"))
    expect(page.get_by_role("heading", name="Set up your sign-in methods", level=1)).to_be_visible()
    expect(page.locator(".identity")).to_have_text(email)
    expect(page.get_by_role("heading", name="Choose a method")).to_be_visible()
    for label in ("Authenticator app", "Security key or passkey"):
        expect(page.get_by_role("button", name=label, exact=True)).to_be_visible()


def enrol_totp(page: Any, account: DemoAccount, *, screenshots: bool = False) -> None:
    """On "Set up your sign-in methods": choose the app with the keyboard, read the key, type a code."""
    expect_enrol_choice(page, account.email)
    if screenshots:
        shoot(page, "enroll", phone_too=True)
    tab_to_button(page, "Authenticator app")
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", name="Authenticator app", level=2)).to_be_visible()
    expect(page.get_by_role("heading", name="Or choose another method")).to_be_visible()
    expect(page.get_by_role("button", name="Authenticator app", exact=True)).to_have_count(0)
    qr = page.locator(".qr svg")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert box is not None and min(box["width"], box["height"]) >= 150, f"the QR code is too small to scan: {box}"
    code_field = page.get_by_label("Code from the app", exact=True)
    expect(code_field).to_be_focused()

    secret_text = page.locator(".secret-text code")
    expect(secret_text).to_be_hidden()
    page.get_by_text("Can't scan it? Enter this key instead").click()
    expect(secret_text).to_be_visible()
    grouped = secret_text.inner_text().strip()
    assert GROUPED_SECRET.fullmatch(grouped), f"the key should be base32 in groups of 4, not {grouped!r}"
    account.totp_secret = grouped.replace(" ", "")
    assert len(account.totp_secret) == 32
    if screenshots:
        shoot(page, "enroll-totp", phone_too=True)

    code_field.click()
    page.keyboard.type(account.totp_code())
    page.get_by_label("Name for this app (optional)").click()
    page.keyboard.type("Work phone")
    page.get_by_role("button", name="Add authenticator app").click()


def save_recovery_codes(page: Any, *, screenshots: bool = False) -> list[str]:
    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    codes = page.get_by_role("list", name="Recovery codes").locator("li")
    expect(codes).to_have_count(10)
    texts = [t.strip() for t in codes.all_inner_texts()]
    assert all(texts), f"empty recovery codes: {texts}"
    assert len(set(texts)) == 10, f"the recovery codes should all differ: {texts}"
    if screenshots:
        shoot(page, "recovery-codes")
    page.get_by_role("button", name="I have saved my codes").click()
    return texts


def expect_apps(page: Any, email: str) -> None:
    expect(page).to_have_url(APPS_URL)
    expect(page.get_by_role("heading", name="My applications")).to_be_visible()
    expect(page.locator(".welcome")).to_contain_text(email)


def sign_out(page: Any) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(FLOW_URL)
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()


def demo_first_sign_in(page: Any, account: DemoAccount) -> None:
    """The demo account's first sign-in: forced password change, authenticator app, recovery codes.

    Whichever test runs it first takes the enrolment screenshots (this is the only time the pages show).
    """
    assert not account.changed
    identifier_step(page, account.email)
    password_step(page, account.email, account.password)
    change_password_step(page, account.password, NEW_PASSPHRASE)
    account.password = NEW_PASSPHRASE
    account.changed = True
    enrol_totp(page, account, screenshots=True)
    expect(page.get_by_role("status").filter(has_text="was added")).to_contain_text(
        "Authenticator app “Work phone” was added."
    )
    account.recovery_codes = save_recovery_codes(page, screenshots=True)
    expect_apps(page, account.email)


def expect_second_factor(page: Any, email: str) -> None:
    expect(page).to_have_url(FLOW_URL)
    expect(page).to_have_title(re.compile(r"^Verify your identity"))
    expect(page.get_by_role("heading", name="Verify your identity")).to_be_visible()
    expect(page.locator(".identity")).to_have_text(email)


def totp_step(page: Any, account: DemoAccount) -> None:
    expect_second_factor(page, account.email)
    page.get_by_label("Enter the 6-digit code from your authenticator app").click()
    page.keyboard.type(account.totp_code())
    page.keyboard.press("Enter")


def recovery_code_step(page: Any, account: DemoAccount) -> None:
    expect_second_factor(page, account.email)
    page.get_by_text("Sign in another way").click()
    page.get_by_role("button", name="Recovery code", exact=True).click()
    expect_second_factor(page, account.email)
    field = page.get_by_label("Enter one of your recovery codes")
    expect(field).to_be_focused()
    page.keyboard.type(account.take_recovery_code())
    page.get_by_role("button", name="Verify", exact=True).click()


def sign_in_demo(page: Any, account: DemoAccount, *, second_factor: str = "totp") -> None:
    """Sign the demo account in to /apps; the first time, do the forced change and the enrolment."""
    if not account.changed:
        demo_first_sign_in(page, account)
        return
    identifier_step(page, account.email)
    password_step(page, account.email, account.password)
    if second_factor == "totp":
        totp_step(page, account)
    else:
        recovery_code_step(page, account)
    expect_apps(page, account.email)


def add_virtual_authenticator(page: Any) -> tuple[Any, str]:
    """Chromium's virtual CTAP2 authenticator (resident keys, user verification) for this page."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": VIRTUAL_AUTHENTICATOR})
    return cdp, str(added["authenticatorId"])


def credentials(cdp: Any, authenticator_id: str) -> list[dict[str, Any]]:
    found = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    return list(found["credentials"])


def enrol_security_key(page: Any, email: str, key_name: str, *, screenshot: str | None = None) -> None:
    """On "Set up your sign-in methods": choose a security key and register it (the virtual one answers)."""
    expect_enrol_choice(page, email)
    page.get_by_role("button", name="Security key or passkey", exact=True).click()
    expect(page.get_by_role("heading", name="Security key or passkey", level=2)).to_be_visible()
    expect(page.get_by_role("button", name="Authenticator app", exact=True)).to_be_visible()
    page.get_by_label("Name for this key").click()
    page.keyboard.type(key_name)
    if screenshot:
        shoot(page, screenshot)
    page.get_by_role("button", name="Register security key").click()


def first_sign_in_with_security_key(page: Any, email: str, temporary: str, new: str, key_name: str) -> None:
    identifier_step(page, email)
    password_step(page, email, temporary)
    change_password_step(page, temporary, new)
    enrol_security_key(page, email, key_name)
    save_recovery_codes(page)
    expect_apps(page, email)


def first_sign_in_with_app(page: Any, account: DemoAccount, new_password: str) -> None:
    """A CLI-created user's first sign-in: forced change, authenticator app, recovery codes saved in `account`."""
    page.goto("/login")
    first_sign_in_steps(page, account, new_password)
    expect_apps(page, account.email)


def first_sign_in_steps(page: Any, account: DemoAccount, new_password: str) -> None:
    """The same from an identifier page already open, up to where the sign-in sends the browser."""
    assert not account.changed
    type_identifier(page, account.email)
    password_step(page, account.email, account.password)
    change_password_step(page, account.password, new_password)
    account.password = new_password
    account.changed = True
    enrol_totp(page, account)
    account.recovery_codes = save_recovery_codes(page)


# -- "Can't access your account?" ------------------------------------------------------------------
RECOVER_URL = re.compile(r"/recover(\?flow=[\w-]+)?$")


def recover_account_type_step(page: Any, *, screenshot: bool = False) -> None:
    """From the sign-in page: "Can't access your account?", then "Work or school account"."""
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    page.get_by_role("link", name="Can't access your account?").click()
    expect(page).to_have_url(RECOVER_URL)
    expect(page.get_by_role("heading", name="Can't access your account?", level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="Which type of account do you need help with?")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile(r"^Personal account"))).to_be_visible()
    if screenshot:
        shoot(page, "recover-type")
    page.get_by_role("button", name=re.compile(r"^Work or school account")).click()


def captcha_nonce(page: Any) -> str:
    """The challenge's nonce, read from the picture's src (/recover/captcha.png?flow=ID&c=NONCE)."""
    src = page.locator(".captcha img").get_attribute("src")
    assert src, "the CAPTCHA picture has no src"
    query = parse_qs(urlsplit(src).query)
    assert urlsplit(src).path == "/recover/captcha.png", f"unexpected CAPTCHA picture src {src!r}"
    assert len(query.get("c", [])) == 1 and len(query.get("flow", [])) == 1, f"no flow or nonce in {src!r}"
    return str(query["c"][0])


def expect_captcha_picture_loaded(page: Any) -> None:
    picture = page.locator(".captcha img")
    expect(picture).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle(), timeout=10_000)


def recover_identify_step(page: Any, portal: Portal, username: str, *, screenshot: bool = False) -> None:
    """ "Get back into your account": type the username and the CAPTCHA answer derived from the test seed."""
    expect(page).to_have_url(RECOVER_URL)
    expect(page.get_by_role("heading", name="Get back into your account", level=1)).to_be_visible()
    expect(page.locator(".test-banner")).to_contain_text("TEST MODE")
    expect_captcha_picture_loaded(page)
    if screenshot:
        shoot(page, "recover-identify", phone_too=True)
    page.get_by_label("Email or Username").click()
    page.keyboard.type(username)
    answer = answer_for(portal.captcha_seed, captcha_nonce(page))
    page.get_by_label("Enter the characters in the picture or the words in the audio").click()
    page.keyboard.type(answer)
    page.get_by_role("button", name="Next", exact=True).click()


def expect_recover_verify(page: Any, email: str) -> None:
    expect(page).to_have_url(RECOVER_URL)
    expect(page.get_by_role("heading", name="Verify your identity", level=1)).to_be_visible()
    expect(page.locator(".identity")).to_have_text(email)


def recover_totp_step(page: Any, account: DemoAccount, *, screenshot: bool = False) -> None:
    """The default way to verify: a code from the authenticator app."""
    expect_recover_verify(page, account.email)
    field = page.get_by_label("Enter the 6-digit code from your authenticator app")
    expect(field).to_be_focused()
    for other in ("Use my security key or passkey", "Enter a recovery code"):
        expect(page.get_by_role("button", name=other, exact=True)).to_be_visible()
    if screenshot:
        shoot(page, "recover-verify")
    field.click()
    page.keyboard.type(account.totp_code())
    page.get_by_role("button", name="Verify", exact=True).click()


def recover_recovery_code_step(page: Any, account: DemoAccount) -> None:
    expect_recover_verify(page, account.email)
    page.get_by_role("button", name="Enter a recovery code", exact=True).click()
    expect_recover_verify(page, account.email)
    field = page.get_by_label("Enter one of your recovery codes")
    expect(field).to_be_focused()
    expect(page.get_by_role("button", name="Enter a code from my authenticator app", exact=True)).to_be_visible()
    page.keyboard.type(account.take_recovery_code())
    page.get_by_role("button", name="Verify", exact=True).click()


def recover_choose_step(page: Any, email: str, choice: str, *, screenshot: bool = False) -> None:
    expect(page).to_have_url(RECOVER_URL)
    expect(page.get_by_role("heading", name="What do you need?", level=1)).to_be_visible()
    expect(page.locator(".identity")).to_have_text(email)
    for label in ("I forgot my password", "I know my password, but still can't sign in"):
        expect(page.get_by_role("button", name=re.compile(f"^{re.escape(label)}"))).to_be_visible()
    if screenshot:
        shoot(page, "recover-choose")
    page.get_by_role("button", name=re.compile(f"^{re.escape(choice)}")).click()


def recover_done_step(page: Any, message: str, *, screenshot: bool = False) -> None:
    """ "You're all set", then "Go to the sign-in page"."""
    expect(page).to_have_url(RECOVER_URL)
    expect(page.get_by_role("heading", name="You're all set", level=1)).to_be_visible()
    expect(page.get_by_role("status").filter(has_text=message)).to_have_count(1)
    if screenshot:
        shoot(page, "recover-done")
    page.get_by_role("link", name="Go to the sign-in page").click()
    expect(page).to_have_url(FLOW_URL)
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
