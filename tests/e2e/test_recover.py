"""“Can't access your account?” in headless Chromium, on a third portal in test mode (a known CAPTCHA seed).

A user created with the CLI enrols an authenticator app, locks the account with wrong passwords, unlocks it
with an authenticator code; later it resets a forgotten password with a recovery code. The CAPTCHA answer
comes from `answer_for(seed, nonce)` with the nonce read from the picture's src, as docs/testing.md says.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from .journeys import (
    FLOW_URL,
    RECOVER_URL,
    expect_apps,
    expect_captcha_picture_loaded,
    first_sign_in_with_app,
    password_step,
    recover_account_type_step,
    recover_choose_step,
    recover_done_step,
    recover_identify_step,
    recover_recovery_code_step,
    recover_totp_step,
    sign_out,
    totp_step,
)
from .support import SCREENSHOTS, DemoAccount, PageProblems, Portal

pytestmark = pytest.mark.browser

NewPage = Callable[..., tuple[Any, PageProblems]]

USERNAME = "recoveruser01"
TEMPORARY = "temporary passphrase for recovery user 7310"
CHOSEN = "silver orchard compass 48 calmly"
RESET = "amber tide notebook 93 slowly"
LOCKOUT_THRESHOLD = 5
MIN_AUDIO_BYTES = 20_000


@pytest.fixture(scope="module")
def recovery_account(recovery_portal: Portal) -> DemoAccount:
    """The CLI-created user; whichever test runs first does its first sign-in and enrols the app."""
    email = recovery_portal.create_user(USERNAME, TEMPORARY)
    return DemoAccount(email=email, password=TEMPORARY)


def _enrolled(new_page: NewPage, portal: Portal, account: DemoAccount) -> tuple[Any, PageProblems]:
    """A page on the recovery portal, signed out, for an account that has done its first sign-in."""
    page, problems = new_page(base_url=portal.url)
    if not account.changed:
        first_sign_in_with_app(page, account, CHOSEN)
        sign_out(page)
    return page, problems


def _sign_in_from_current_page(page: Any, account: DemoAccount, password: str) -> None:
    """On the sign-in page already: email, password (keyboard and clicks only, no navigation)."""
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    page.locator("input#identifier").click()
    page.keyboard.type(account.email)
    page.keyboard.press("Enter")
    password_step(page, account.email, password)


def _lock_with_wrong_passwords(page: Any, account: DemoAccount) -> None:
    page.goto("/login")
    page.locator("input#identifier").click()
    page.keyboard.type(account.email)
    page.keyboard.press("Enter")
    alert = page.get_by_role("alert")
    for attempt in range(1, LOCKOUT_THRESHOLD + 1):
        expect(page.locator("input#password")).to_have_value("")
        password_step(page, account.email, f"not my password {attempt}")
        expect(page.get_by_role("heading", name="Enter password")).to_be_visible()
        if attempt < LOCKOUT_THRESHOLD:
            expect(alert).to_contain_text("Your account or password is incorrect.")
        else:
            expect(alert).to_contain_text("Your account is locked after too many failed sign-in attempts.")
    # Locked for real: the right password no longer gets past the password step.
    page.goto("/login")
    _sign_in_from_current_page(page, account, account.password)
    expect(page.get_by_role("alert")).to_contain_text("Your account is locked")
    expect(page.get_by_role("heading", name="Verify your identity")).to_have_count(0)


def test_locked_account_unlocks_with_authenticator_code(
    new_page: NewPage, recovery_portal: Portal, recovery_account: DemoAccount
) -> None:
    account = recovery_account
    page, problems = _enrolled(new_page, recovery_portal, account)
    _lock_with_wrong_passwords(page, account)

    page.goto("/login")
    recover_account_type_step(page, screenshot=True)
    recover_identify_step(page, recovery_portal, USERNAME, screenshot=True)
    recover_totp_step(page, account, screenshot=True)
    recover_choose_step(page, account.email, "I know my password, but still can't sign in", screenshot=True)

    expect(page.get_by_role("heading", name="Unlock your account", level=1)).to_be_visible()
    field = page.get_by_label("Your current password")
    expect(field).to_be_focused()
    field.click()
    page.keyboard.type(account.password)
    page.get_by_role("button", name="Unlock", exact=True).click()
    recover_done_step(page, "Your account is unlocked.", screenshot=True)

    _sign_in_from_current_page(page, account, account.password)
    totp_step(page, account)
    expect_apps(page, account.email)
    for name in (
        "recover-type-desktop",
        "recover-identify-desktop",
        "recover-identify-phone",
        "recover-verify-desktop",
        "recover-choose-desktop",
        "recover-done-desktop",
    ):
        assert (SCREENSHOTS / f"{name}.png").is_file(), f"{name}.png was not written"
    problems.assert_clean()


def test_forgotten_password_reset_with_recovery_code(
    new_page: NewPage, recovery_portal: Portal, recovery_account: DemoAccount
) -> None:
    account = recovery_account
    page, problems = _enrolled(new_page, recovery_portal, account)
    codes_before = len(account.recovery_codes)

    page.goto("/login")
    recover_account_type_step(page)
    recover_identify_step(page, recovery_portal, USERNAME)
    recover_recovery_code_step(page, account)
    recover_choose_step(page, account.email, "I forgot my password")

    expect(page.get_by_role("heading", name="Choose a new password", level=1)).to_be_visible()
    expect(page.get_by_label("New password", exact=True)).to_be_focused()
    for label in ("New password", "Confirm new password"):
        page.get_by_label(label, exact=True).click()
        page.keyboard.type(RESET)
    page.get_by_role("button", name="Reset password", exact=True).click()
    recover_done_step(page, "Your password has been reset.")
    old_password, account.password = account.password, RESET
    assert len(account.recovery_codes) == codes_before - 1

    # The old password is refused; the new one (and a second factor) signs in.
    _sign_in_from_current_page(page, account, old_password)
    expect(page.get_by_role("alert")).to_contain_text("Your account or password is incorrect.")
    page.locator("input#password").click()
    page.keyboard.type(account.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    totp_step(page, account)
    expect_apps(page, account.email)
    problems.assert_clean()


def _wav_chunks(body: bytes) -> dict[bytes, int]:
    """The RIFF/WAVE chunk ids and sizes; asserts the header and that the chunks fit the file."""
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE", f"not a RIFF/WAVE file: {body[:12]!r}"
    (riff_size,) = struct.unpack("<I", body[4:8])
    assert riff_size + 8 == len(body), f"RIFF size {riff_size} + 8 does not match the body's {len(body)} bytes"
    chunks: dict[bytes, int] = {}
    pos = 12
    while pos + 8 <= len(body):
        chunk_id, size = body[pos : pos + 4], struct.unpack("<I", body[pos + 4 : pos + 8])[0]
        chunks[chunk_id] = size
        pos += 8 + size + (size & 1)
    return chunks


def test_captcha_picture_and_audio(new_page: NewPage, recovery_portal: Portal) -> None:
    """The picture points to the audio; the audio is a real WAV file that the browser can load and play."""
    page, problems = new_page(base_url=recovery_portal.url)
    page.goto("/login")
    expect(page.locator(".test-banner")).to_contain_text("TEST MODE")
    page.get_by_role("link", name="Can't access your account?").click()

    # "Personal account" explains itself and leads back.
    page.get_by_role("button", name=re.compile(r"^Personal account")).click()
    expect(page.get_by_role("heading", name="Personal accounts are not supported")).to_be_visible()
    page.get_by_role("button", name="Back", exact=True).click()
    expect(page.get_by_role("heading", name="Which type of account do you need help with?")).to_be_visible()
    page.get_by_role("button", name=re.compile(r"^Work or school account")).click()

    expect(page).to_have_url(RECOVER_URL)
    expect(page.get_by_role("heading", name="Get back into your account", level=1)).to_be_visible()
    expect_captcha_picture_loaded(page)
    picture = page.locator(".captcha img")
    alt = picture.get_attribute("alt") or ""
    assert re.search(r"\baudio\b", alt, re.IGNORECASE), f"the picture's alt text should point to the audio: {alt!r}"
    audio = page.locator(".captcha audio")
    expect(audio).to_have_count(1)
    expect(audio).to_have_attribute("controls", "")
    expect(audio).to_be_visible()
    expect(page.get_by_role("button", name="New challenge")).to_be_visible()
    img_src, audio_src = picture.get_attribute("src") or "", audio.get_attribute("src") or ""
    assert img_src.partition("?")[2] == audio_src.partition("?")[2], "the audio should be the same challenge"

    # The audio, fetched with the page's own cookies.
    response = page.request.get(audio_src)
    assert response.status == 200, f"GET {audio_src} answered {response.status}"
    assert response.headers["content-type"] == "audio/wav"
    body = response.body()
    assert len(body) > MIN_AUDIO_BYTES, f"the audio is only {len(body)} bytes"
    chunks = _wav_chunks(body)
    assert b"fmt " in chunks and b"data" in chunks, f"WAV chunks: {chunks}"
    assert chunks[b"data"] > MIN_AUDIO_BYTES, f"the data chunk holds only {chunks[b'data']} bytes"

    # The browser itself loads and plays it (headless Chromium has a fake audio output).
    played = page.evaluate(
        """async (audio) => {
            audio.load();
            await new Promise((ok, fail) => {
                if (audio.readyState >= 1) { ok(); return; }
                audio.addEventListener('loadedmetadata', ok, {once: true});
                const failed = () => fail(new Error('audio error ' + (audio.error && audio.error.code)));
                audio.addEventListener('error', failed, {once: true});
            });
            let playError = null;
            try { await audio.play(); } catch (e) { playError = e.name + ': ' + e.message; }
            const result = {readyState: audio.readyState, duration: audio.duration, paused: audio.paused, playError};
            audio.pause();
            return result;
        }""",
        audio.element_handle(),
    )
    assert played["readyState"] >= 1, f"the browser could not load the audio: {played}"
    assert played["duration"] > 1, f"the audio should last more than a second: {played}"
    assert played["playError"] is None, f"audio.play() was refused: {played}"

    # A new challenge changes the picture and the audio; the old audio is gone.
    page.get_by_role("button", name="New challenge").click()
    expect(page.get_by_role("heading", name="Get back into your account", level=1)).to_be_visible()
    expect_captcha_picture_loaded(page)
    assert page.locator(".captcha img").get_attribute("src") != img_src
    assert page.request.get(audio_src).status == 404
    assert not FLOW_URL.search(page.url)
    problems.assert_clean()
