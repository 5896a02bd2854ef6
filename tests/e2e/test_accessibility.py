"""Accessibility sweep: every page of the portal through axe-core (WCAG 2.0/2.1 A and AA) at desktop and phone width.

Each page is one test. Public pages open on their own; the pages behind a sign-in or a recovery are reached by
one journey per group (a module-scoped fixture, with users of its own, so the demo account is left alone) that
records every page on the way; the tests then judge the recorded pages one by one. A page passes when axe finds
no serious or critical violation at 1280x800 or 390x844 and the browser reported no console error, page error or
CSP violation. Screenshots of both widths go to artifacts/screenshots/sweep/<name>-<desktop|phone>.png.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from alacop.core.captcha import answer_for
from alacop.help.content import HelpCenter

from .a11y import PageResult, Sweep, axe_source
from .journeys import (
    APPS_URL,
    FLOW_URL,
    add_virtual_authenticator,
    change_password_step,
    credentials,
    enrol_totp,
    expect_apps,
    expect_captcha_picture_loaded,
    expect_enrol_choice,
    expect_recover_verify,
    expect_second_factor,
    first_sign_in_with_app,
    identifier_step,
    password_step,
    recover_account_type_step,
    recover_choose_step,
    recover_identify_step,
    recover_recovery_code_step,
    save_recovery_codes,
    sign_out,
)
from .support import DEMO_EMAIL, DEMO_ORI, DESKTOP, DemoAccount, Portal, watch

pytestmark = pytest.mark.browser

HELP = HelpCenter.load()

# Pages axe finds serious or critical problems on, each with the problem: strict, so a fix shows up at once.
KNOWN_PROBLEMS: dict[str, str] = {}


def _marks(name: str) -> tuple[Any, ...]:
    reason = KNOWN_PROBLEMS.get(name)
    return (pytest.mark.xfail(strict=True, reason=reason),) if reason else ()


@pytest.fixture(scope="module")
def axe_ready() -> None:
    axe_source()  # skips the module (fails it under CI=true) when `npm ci` has not run in tests/e2e


@pytest.fixture(scope="module")
def open_sweep(browser: Any, axe_ready: None) -> Iterator[Callable[[str], Sweep]]:
    """Factory: a Sweep on a fresh desktop browser context for the given portal URL; closed after the module."""
    contexts: list[Any] = []

    def make(base_url: str) -> Sweep:
        context = browser.new_context(viewport=DESKTOP, base_url=base_url, locale="en-US")
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        return Sweep(page=page, problems=watch(page))

    yield make
    for context in contexts:
        context.close()


# -- public pages: one visit each -------------------------------------------------------------------------
def _heading(page: Any, name: str) -> None:
    expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()


def _signin(page: Any) -> None:
    page.goto("/login")
    expect(page).to_have_url(FLOW_URL)
    _heading(page, "Sign in")


def _password(page: Any) -> None:
    _signin(page)
    page.locator("input#identifier").click()
    page.keyboard.type(DEMO_EMAIL)  # the identifier alone changes nothing on the account
    page.keyboard.press("Enter")
    _heading(page, "Enter password")


def _wrong_domain(page: Any) -> None:
    _signin(page)
    page.locator("input#identifier").click()
    page.keyboard.type("someone@gmail.com")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("@alacop.gov")


def _visit(path: str, heading: str | None = None, status: int = 200) -> Callable[[Any], None]:
    def go(page: Any) -> None:
        response = page.goto(path)
        assert response is not None and response.status == status, f"GET {path} answered {response and response.status}"
        if heading:
            _heading(page, heading)
        else:
            expect(page.locator("h1").first).to_be_visible()

    return go


PUBLIC: dict[str, Callable[[Any], None]] = {
    "signin-identifier": _signin,
    "signin-password": _password,
    "signin-wrong-domain": _wrong_domain,
    "signin-options": _visit("/login/options", "Sign-in options"),
    "register": _visit("/register", "New User Registration"),
    "help": _visit("/help"),
    "help-search": _visit("/help/search?q=password"),
    **{f"help-guide-{slug}": _visit(f"/help/guides/{slug}") for slug in HELP.guides},
    **{f"help-video-{slug}": _visit(f"/help/videos/{slug}") for slug in HELP.videos},
    "help-sign-in": _visit("/help/sign-in"),
    "not-found": _visit("/no-such-page", status=404),
}


@pytest.mark.parametrize("name", [pytest.param(n, id=n, marks=_marks(n)) for n in PUBLIC])
def test_public_page(name: str, open_sweep: Callable[[str], Sweep], portal: Portal) -> None:
    sweep = open_sweep(portal.url)
    PUBLIC[name](sweep.page)
    expected = ()
    if name == "not-found":  # the document's own 404 is the point of this page
        url = sweep.page.url
        expected = (
            f"console error: Failed to load resource: the server responded with a status of 404 (Not Found) ({url}:0)",
        )
    sweep.check(name, expected=expected)
    sweep.results[name].assert_ok()
    sweep.page.context.close()


# -- signed-in pages: a user of the sweep's own, from its first sign-in to the second factor -----------------
SIGNED_IN = (
    "signin-new-password",
    "enroll-choice",
    "enroll-totp",
    "recovery-codes",
    "apps",
    "security",
    "account-password",
    "reauth",
    "add-method-totp",
    "add-method-key",
    "account-recovery-codes",
    "second-factor",
    "second-factor-recovery-code",
)


def _add_method(sweep: Sweep, button: str, heading: str, name: str) -> None:
    page = sweep.page
    page.get_by_role("button", name=button, exact=True).click()
    expect(page).to_have_url(re.compile(r"/account/security/add\?flow="))
    _heading(page, heading)
    sweep.check(name)
    page.get_by_role("link", name="Cancel", exact=True).click()
    _heading(page, "Security info")


@pytest.fixture(scope="module")
def signed_in_pages(open_sweep: Callable[[str], Sweep], portal: Portal) -> dict[str, PageResult]:
    temporary, chosen = "temporary passphrase for sweep user 5172", "violet canyon ledger 31 kindly"
    account = DemoAccount(email=portal.create_user("sweepuser01", temporary), password=temporary)
    sweep = open_sweep(portal.url)
    page = sweep.page

    identifier_step(page, account.email)
    password_step(page, account.email, account.password)
    _heading(page, "Choose a new password")
    sweep.check("signin-new-password")
    change_password_step(page, account.password, chosen)
    account.password, account.changed = chosen, True

    expect_enrol_choice(page, account.email)
    sweep.check("enroll-choice")
    page.get_by_role("button", name="Authenticator app", exact=True).click()
    expect(page.get_by_role("heading", name="Authenticator app", level=2)).to_be_visible()
    expect(page.locator(".qr svg")).to_be_visible()
    page.get_by_text("Can't scan it? Enter this key instead").click()
    secret = page.locator(".secret-text code")
    expect(secret).to_be_visible()
    account.totp_secret = secret.inner_text().replace(" ", "").strip()
    sweep.check("enroll-totp")
    page.get_by_label("Code from the app", exact=True).fill(account.totp_code())
    page.get_by_role("button", name="Add authenticator app").click()

    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    sweep.check("recovery-codes")
    account.recovery_codes = save_recovery_codes(page)
    expect_apps(page, account.email)
    sweep.check("apps")

    page.get_by_role("link", name="Security info").click()
    _heading(page, "Security info")
    sweep.check("security")

    page.goto("/account/password")
    if page.get_by_role("heading", name="Confirm it's you").count():  # only if the sign-in is no longer recent
        page.get_by_label("Password", exact=True).fill(account.password)
        page.get_by_role("button", name="Continue").click()
    _heading(page, "Change password")
    sweep.check("account-password")

    page.goto("/account/reauth?next=/account/security")
    _heading(page, "Confirm it's you")
    sweep.check("reauth")

    page.goto("/account/security")
    _add_method(sweep, "Add authenticator app", "Add an authenticator app", "add-method-totp")
    _add_method(sweep, "Add security key or passkey", "Add a security key or passkey", "add-method-key")
    page.get_by_role("button", name="Create new recovery codes").click()
    _heading(page, "Your new recovery codes")
    sweep.check("account-recovery-codes")

    page.goto("/apps")
    expect(page).to_have_url(APPS_URL)
    sign_out(page)
    identifier_step(page, account.email)
    password_step(page, account.email, account.password)
    expect_second_factor(page, account.email)
    sweep.check("second-factor")
    page.locator("details.other-ways summary").click()
    page.get_by_role("button", name="Recovery code", exact=True).click()
    expect(page.get_by_label("Enter one of your recovery codes")).to_be_visible()
    sweep.check("second-factor-recovery-code")
    return sweep.results


@pytest.mark.parametrize("name", [pytest.param(n, id=n, marks=_marks(n)) for n in SIGNED_IN])
def test_signed_in_page(name: str, signed_in_pages: dict[str, PageResult]) -> None:
    assert name in signed_in_pages, f"the sweep never reached {name}: it reached {sorted(signed_in_pages)}"
    signed_in_pages[name].assert_ok()


# -- "Can't access your account?": every step, on the portal in test mode (its CAPTCHA answers are known) -----
RECOVER = (
    "recover-type",
    "recover-personal",
    "recover-identify",
    "recover-verify",
    "recover-verify-recovery-code",
    "recover-choose",
    "recover-unlock",
    "recover-done",
    "recover-new-password",
)
RECOVER_USER = "sweeprecover01"


@pytest.fixture(scope="module")
def recover_pages(open_sweep: Callable[[str], Sweep], recovery_portal: Portal) -> dict[str, PageResult]:
    temporary, chosen = "temporary passphrase for sweep recovery 6620", "maple quarry signal 64 softly"
    account = DemoAccount(email=recovery_portal.create_user(RECOVER_USER, temporary), password=temporary)
    sweep = open_sweep(recovery_portal.url)
    page = sweep.page
    first_sign_in_with_app(page, account, chosen)
    sign_out(page)

    # Unlock, verified with a recovery code (no wait for a fresh authenticator code).
    page.get_by_role("link", name="Can't access your account?").click()
    _heading(page, "Can't access your account?")
    sweep.check("recover-type")
    page.get_by_role("button", name=re.compile(r"^Personal account")).click()
    _heading(page, "Personal accounts are not supported")
    sweep.check("recover-personal")
    page.get_by_role("button", name="Back", exact=True).click()
    page.get_by_role("button", name=re.compile(r"^Work or school account")).click()
    _heading(page, "Get back into your account")
    expect_captcha_picture_loaded(page)
    sweep.check("recover-identify")
    recover_identify_step(page, recovery_portal, RECOVER_USER)
    expect_recover_verify(page, account.email)
    sweep.check("recover-verify")
    page.get_by_role("button", name="Enter a recovery code", exact=True).click()
    expect(page.get_by_label("Enter one of your recovery codes")).to_be_focused()
    sweep.check("recover-verify-recovery-code")
    page.keyboard.type(account.take_recovery_code())
    page.get_by_role("button", name="Verify", exact=True).click()
    _heading(page, "What do you need?")
    sweep.check("recover-choose")
    recover_choose_step(page, account.email, "I know my password, but still can't sign in")
    _heading(page, "Unlock your account")
    sweep.check("recover-unlock")
    page.get_by_label("Your current password").fill(account.password)
    page.get_by_role("button", name="Unlock", exact=True).click()
    _heading(page, "You're all set")
    sweep.check("recover-done")

    # The other branch: a forgotten password, as far as the new-password form.
    page.get_by_role("link", name="Go to the sign-in page").click()
    recover_account_type_step(page)
    recover_identify_step(page, recovery_portal, RECOVER_USER)
    recover_recovery_code_step(page, account)
    recover_choose_step(page, account.email, "I forgot my password")
    _heading(page, "Choose a new password")
    sweep.check("recover-new-password")
    return sweep.results


@pytest.mark.parametrize("name", [pytest.param(n, id=n, marks=_marks(n)) for n in RECOVER])
def test_recover_page(name: str, recover_pages: dict[str, PageResult]) -> None:
    assert name in recover_pages, f"the sweep never reached {name}: it reached {sorted(recover_pages)}"
    recover_pages[name].assert_ok()


# -- New User Registration and activation, on the portal in test mode -----------------------------------------
REGISTER = (
    "register-refused",
    "register-verify",
    "register-submitted",
    "register-status",
    "activate",
    "activation-refused",
)
REGISTER_EMAIL = "sweep.register@demo.al.gov"


def _captcha(page: Any, portal: Portal) -> str:
    expect_captcha_picture_loaded(page)
    src = page.locator(".captcha img").get_attribute("src") or ""
    found = re.search(r"[?&]c=([\w-]+)", src)
    assert found, src
    return answer_for(portal.captcha_seed, found.group(1))


def _outbox(portal: Portal, to: str, pattern: str) -> str:
    for path in sorted((portal.data_dir / "outbox").glob("*.eml"), key=lambda p: p.stat().st_mtime_ns, reverse=True):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        found = re.search(pattern, body.get_content() if body else "") if message["To"] == to else None
        if found:
            return found.group(1)
    raise AssertionError(f"no mail to {to} matching {pattern!r}")


@pytest.fixture(scope="module")
def register_pages(open_sweep: Callable[[str], Sweep], recovery_portal: Portal) -> dict[str, PageResult]:
    sweep = open_sweep(recovery_portal.url)
    page = sweep.page
    page.goto("/register")
    _heading(page, "New User Registration")
    # Every field left empty: each one marked, with its message.
    page.get_by_label("Enter the characters in the picture or the words in the audio", exact=False).fill(
        _captcha(page, recovery_portal)
    )
    page.get_by_role("button", name="Submit request").click()
    expect(page.get_by_role("alert")).to_contain_text("Check the fields marked below.")
    sweep.check("register-refused")
    for field, value in (
        ("first_name", "Sweep"),
        ("last_name", "Register"),
        ("title", "Clerk"),
        ("agency", "AL0000000"),
        ("email", REGISTER_EMAIL),
        ("phone", "334 555 0199"),
        ("supervisor", "Sgt. Lee"),
        ("reason", "Records."),
    ):
        page.locator(f"#{field}").fill(value)
    page.locator("#training_date").fill((date.today() - timedelta(days=5)).isoformat())
    page.locator("#accept_rules").check()
    page.locator("#captcha").fill(_captcha(page, recovery_portal))
    page.get_by_role("button", name="Submit request").click()
    _heading(page, "Confirm your work email")
    sweep.check("register-verify")
    page.get_by_label("Code from the email").fill(_outbox(recovery_portal, REGISTER_EMAIL, r"registration is: (\w+)"))
    page.get_by_role("button", name="Confirm").click()
    _heading(page, "Request sent")
    sweep.check("register-submitted")
    page.get_by_role("link", name="status page").click()
    _heading(page, "Your registration request")
    sweep.check("register-status")

    listed = subprocess.run(
        [sys.executable, "-m", "alacop.cli", "registrations", "list", "--json"],
        env=recovery_portal.env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    (request_id,) = [r["id"] for r in json.loads(listed.stdout) if r["email"] == REGISTER_EMAIL]
    subprocess.run(
        [sys.executable, "-m", "alacop.cli", "registrations", "approve", request_id],
        env=recovery_portal.env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    page.goto(_outbox(recovery_portal, REGISTER_EMAIL, r"(/activate\?token=[\w-]+)"))
    _heading(page, "Activate your account")
    sweep.check("activate")
    response = page.goto("/activate?token=not-a-real-link")
    assert response is not None and response.status == 410
    _heading(page, "This link does not work")
    sweep.check(
        "activation-refused",
        expected=(
            f"console error: Failed to load resource: the server responded with a status of 410 (Gone) ({page.url}:0)",
        ),
    )
    return sweep.results


@pytest.mark.parametrize("name", [pytest.param(n, id=n, marks=_marks(n)) for n in REGISTER])
def test_register_page(name: str, register_pages: dict[str, PageResult]) -> None:
    assert name in register_pages, f"the sweep never reached {name}: it reached {sorted(register_pages)}"
    register_pages[name].assert_ok()


# -- the console (/admin): an administrator of the sweep's own, and a plain user it refuses ---------------------
ADMIN = (
    "admin-forbidden",
    "admin-enroll-second",
    "admin-enroll-key",
    "admin-users",
    "admin-users-no-results",
    "admin-user",
    "admin-requests",
    "admin-request",
    "admin-agencies",
    "admin-agency",
    "admin-policy",
    "admin-applications",
    "admin-saml-applications",
    "admin-audit",
    "admin-audit-verify",
)
ADMIN_PLAIN_USER = "sweepplain01"
ADMIN_APPLICANT = "Jordan Sweep"

# Run with the portal's environment: a pending registration request to the demo agency, as if the applicant
# had confirmed the work email (the `portal` fixture is not in test mode, so its CAPTCHA can't be answered).
_PENDING_REQUEST = """
import asyncio, sys, uuid
from datetime import timedelta
from alacop.config import load_settings
from alacop.core.registration import Application, Registration, RegistrationStatus
from alacop.wiring import build_deps

async def main():
    deps = build_deps(load_settings())
    try:
        now = deps.clock.now()
        async with deps.store.transaction() as tx:
            agency = await tx.agencies.by_ori(sys.argv[1])
            registration = Registration(
                id=str(uuid.uuid4()),
                application=Application(
                    first_name="Jordan", last_name="Sweep", agency_id=agency.id, title="Dispatcher",
                    email="jordan.sweep@demo.al.gov", phone="334 555 0177", supervisor="Lt. Hale",
                    reason="Dispatch queries.", training_date=now.date() - timedelta(days=20), rules_sha256="0" * 64,
                ),
                status=RegistrationStatus.PENDING,
                created_at=now,
                expires_at=now + timedelta(days=30),
                status_token_hash=uuid.uuid4().hex,
            )
            await tx.registrations.add(registration)
    finally:
        await deps.limiter.close()
        await deps.store.close()

asyncio.run(main())
"""


def _add_pending_request(portal: Portal) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PENDING_REQUEST, DEMO_ORI], env=portal.env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace")


@pytest.fixture(scope="module")
def admin_pages(open_sweep: Callable[[str], Sweep], portal: Portal) -> dict[str, PageResult]:
    sweep = open_sweep(portal.url)
    page = sweep.page

    # A plain user is refused the console with a 403 (the document's own status logs a console error).
    temporary, chosen = "temporary passphrase for sweep plain 4418", "quiet orchard 57 copper lantern"
    plain = DemoAccount(email=portal.create_user(ADMIN_PLAIN_USER, temporary), password=temporary)
    first_sign_in_with_app(page, plain, chosen)
    response = page.goto("/admin")
    assert response is not None and response.status == 403, f"/admin answered {response and response.status}"
    _heading(page, "You can't do that here")
    sweep.check(
        "admin-forbidden",
        expected=(
            f"console error: Failed to load resource: the server responded with a status of 403 (Forbidden) "
            f"({page.url}:0)",
        ),
    )
    page.goto("/apps")
    sign_out(page)

    # An administrator's first sign-in: a new password, an authenticator app, then a security key (two kinds).
    temporary, chosen = "temporary passphrase for sweep admin 9031", "amber signal 46 harbor gently"
    admin = DemoAccount(email=portal.create_user("sweepadmin01", temporary, role="admin"), password=temporary)
    cdp, authenticator = add_virtual_authenticator(page)
    identifier_step(page, admin.email)
    password_step(page, admin.email, admin.password)
    change_password_step(page, admin.password, chosen)
    admin.password, admin.changed = chosen, True
    enrol_totp(page, admin)
    expect_enrol_choice(page, admin.email)
    expect(page.get_by_role("list", name="Methods set up so far")).to_be_visible()
    sweep.check("admin-enroll-second")
    page.get_by_role("button", name="Security key or passkey", exact=True).click()
    expect(page.get_by_role("heading", name="Security key or passkey", level=2)).to_be_visible()
    page.get_by_label("Name for this key").fill("Desk key")
    sweep.check("admin-enroll-key")
    page.get_by_role("button", name="Register security key").click()
    admin.recovery_codes = save_recovery_codes(page)
    expect_apps(page, admin.email)
    assert len(credentials(cdp, authenticator)) == 1

    _add_pending_request(portal)
    page.goto("/admin")
    expect(page).to_have_url(re.compile(r"/admin/users$"))
    _heading(page, "Users")
    expect(page.locator("table.data tbody a").first).to_be_visible()
    sweep.check("admin-users")
    page.get_by_label("Name, username or email").fill("nobody-has-this-name")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.get_by_role("cell", name="No users match.")).to_be_visible()
    sweep.check("admin-users-no-results")
    page.get_by_label("Name, username or email").fill(ADMIN_PLAIN_USER)
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_role("link", name=ADMIN_PLAIN_USER, exact=True).click()
    expect(page).to_have_url(re.compile(r"/admin/users/[\w-]+$"))
    expect(page.get_by_role("heading", name="Actions", level=2)).to_be_visible()
    sweep.check("admin-user")

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Requests").click()
    _heading(page, "Registration requests")
    sweep.check("admin-requests")
    page.get_by_role("link", name=ADMIN_APPLICANT).click()
    _heading(page, f"Request from {ADMIN_APPLICANT}")
    expect(page.get_by_role("heading", name="Decide", level=2)).to_be_visible()
    sweep.check("admin-request")

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Agencies").click()
    _heading(page, "Agencies")
    sweep.check("admin-agencies")
    page.get_by_role("link", name=DEMO_ORI, exact=True).click()
    _heading(page, "Demo County Sheriff's Office")
    sweep.check("admin-agency")

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Policy").click()
    _heading(page, "Policy in force")
    sweep.check("admin-policy")

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Applications").click()
    _heading(page, "Authorized applications")
    sweep.check("admin-applications")
    page.get_by_role("navigation", name="Kinds of application").get_by_role("link", name="SAML 2.0").click()
    expect(page).to_have_url(re.compile(r"/admin/applications/saml$"))
    expect(page.get_by_role("heading", name="Register a SAML application", level=2)).to_be_visible()
    sweep.check("admin-saml-applications")

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Audit").click()
    _heading(page, "Audit trail")
    expect(page.locator("table.audit tbody tr").first).to_be_visible()
    sweep.check("admin-audit")
    page.get_by_role("link", name="Verify now").click()
    _heading(page, "Audit chain")
    expect(page.locator(".chain-status")).to_have_attribute("data-chain", "intact")
    sweep.check("admin-audit-verify")
    return sweep.results


@pytest.mark.parametrize("name", [pytest.param(n, id=n, marks=_marks(n)) for n in ADMIN])
def test_admin_page(name: str, admin_pages: dict[str, PageResult]) -> None:
    assert name in admin_pages, f"the sweep never reached {name}: it reached {sorted(admin_pages)}"
    admin_pages[name].assert_ok()
