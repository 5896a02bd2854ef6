"""`alacop help build`: record the help center's video tutorials and take the guides' screenshots.

Everything comes from the real pages: the recorder starts its own `alacop demo` portals on free loopback
ports with temporary data directories, creates its users with `alacop users create`, and drives headless
Debian Chromium through the same journeys a person takes. Two portals run:

* a normal one (no TEST MODE banner) for the sign-in and first sign-in tutorials and most screenshots;
* one in test mode with a random CAPTCHA seed, because only there can a script answer the CAPTCHA of
  "Can't access your account?": the recovery tutorial and the recover-* screenshots show its banner.

Videos are Playwright screencasts (WebM, 1280x800). Playwright encodes them with ffmpeg: its own build if
one is installed, else Debian's /usr/bin/ffmpeg (`apt-get install ffmpeg`), offered to Playwright through a
temporary PLAYWRIGHT_BROWSERS_PATH. Each tutorial gets `<slug>.webm`, `<slug>.vtt` (captions timed from
the browser context's start) and `<slug>.txt` (numbered steps); `videos/index.json` lists them.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp

from alacop.core.captcha import answer_for

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "static"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
DOMAIN = "alacop.gov"
AGENCY = "AL0000000"
DEMO_USER = "demo01"
DEMO_PASSWORD = "correct horse battery staple 2026"
TOTP_PERIOD = 30
LOCKOUT_THRESHOLD = 5
STARTUP_TIMEOUT = 45.0
TIMEOUT_MS = 15_000

PACE = 1.2  # seconds on each screen before acting, so viewers can read it
TYPE_DELAY = 60  # milliseconds between keystrokes
READING_SPEED = 45  # caption characters a viewer reads per second, for the pause before acting
BEFORE_CLICK = 0.6  # seconds a highlighted button stays before it is clicked

FLOW_URL = re.compile(r"/login(\?flow=[\w-]+)?$")
APPS_URL = re.compile(r"/apps$")
RECOVER_URL = re.compile(r"/recover(\?flow=[\w-]+)?$")
REGISTER_URL = re.compile(r"/register(\?flow=[\w-]+)?$")
SECURITY_URL = re.compile(r"/account/security$")


@dataclass(frozen=True)
class Tutorial:
    slug: str
    title: str
    summary: str


TUTORIALS = (
    Tutorial(
        "signing-in",
        "Signing in",
        "Sign in to AlaCOP with your email, your password and a code from your authenticator app, then sign out.",
    ),
    Tutorial(
        "first-sign-in",
        "Your first sign-in",
        "Replace your temporary password, set up an authenticator app and save your recovery codes.",
    ),
    Tutorial(
        "registering",
        "Registering for an account",
        "Request an AlaCOP account, confirm your work email, then activate the account your agency approved: "
        "choose a password, set up an authenticator app and save your recovery codes.",
    ),
    Tutorial(
        "recovering-an-account",
        "Recovering a locked account",
        "Unlock your account after too many wrong passwords with “Can't access your account?” and a code "
        "from your authenticator app, then sign in again.",
    ),
)
SLUGS = tuple(t.slug for t in TUTORIALS)
# Tutorials that cannot be recorded yet, with the reason the help center shows.
MISSING: dict[str, str] = {}
SCREENSHOTS = (
    "signin-desktop.png",
    "signin-phone.png",
    "options-desktop.png",
    "apps-desktop.png",
    "enroll-desktop.png",
    "enroll-totp-desktop.png",
    "recovery-codes-desktop.png",
    "second-factor-desktop.png",
    "security-info-desktop.png",
    "recover-type-desktop.png",
    "recover-identify-desktop.png",
    "recover-verify-desktop.png",
    "recover-choose-desktop.png",
    "recover-done-desktop.png",
    "register-form-desktop.png",
    "register-verify-desktop.png",
    "activate-desktop.png",
)


class BuildError(Exception):
    """A problem worth one line on stderr."""


# -- portals ----------------------------------------------------------------------------------------
def free_port() -> int:
    """A loopback TCP port nothing is listening on (the portal and the test servers share this)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def healthy(url: str) -> bool:
    """Whether the portal at `url` answers /healthz with 200."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:  # noqa: S310 - loopback http only
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """End a process this code started, by its own handle: terminate, then kill if it will not go."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class Portal:
    """One running `alacop demo`, with its own temporary data directory."""

    name: str
    url: str
    data_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def captcha_key(self) -> bytes:
        seed = self.env.get("ALACOP_CAPTCHA_SEED", "")
        if not seed or self.env.get("ALACOP_ENV") != "test":
            raise BuildError(f"the {self.name} portal has no test CAPTCHA seed")
        return seed.encode()

    def create_user(self, username: str, password: str, name: str) -> Account:
        """`alacop users create … --password-stdin`: the user must change the password at first sign-in."""
        cmd = [sys.executable, "-m", "alacop.cli", "users", "create", username, "--agency", AGENCY]
        cmd += ["--email", f"{username}@demo.al.gov", "--name", name, "--password-stdin"]
        done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
            cmd, input=f"{password}\n".encode(), env=self.env, capture_output=True, timeout=60, check=False
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
            raise BuildError(f"`alacop users create {username}` failed: {output[-1] if output else done.returncode}")
        return Account(username=username, password=password)

    def mail_to(self, address: str, pattern: str) -> str:
        """The first group of `pattern` in the newest message the portal saved for `address` (its outbox)."""
        outbox = self.data_dir / "outbox"
        for path in sorted(outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns, reverse=True):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == address:
                body = message.get_body(preferencelist=("plain",))
                found = re.search(pattern, body.get_content() if body else "")
                if found:
                    return found.group(1)
        raise BuildError(f"no message to {address} matching {pattern!r} in {outbox}")

    def approve(self, address: str) -> None:
        """`alacop registrations approve`, as the agency's coordinator would on the console."""
        listed = self._cli("registrations", "list", "--json")
        ids = [r["id"] for r in json.loads(listed) if r["email"] == address and r["status"] == "pending"]
        if len(ids) != 1:
            raise BuildError(f"expected one pending request from {address}, found {len(ids)}")
        self._cli("registrations", "approve", ids[0])

    def _cli(self, *args: str) -> str:
        done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
            [sys.executable, "-m", "alacop.cli", *args], env=self.env, capture_output=True, timeout=60, check=False
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
            raise BuildError(f"`alacop {' '.join(args)}` failed: {output[-1] if output else done.returncode}")
        return done.stdout.decode()

    def stop(self) -> None:
        stop_process(self.proc)


@contextmanager
def run_portal(workdir: Path, name: str, **extra_env: str) -> Iterator[Portal]:
    """Start `alacop demo` on a free port; wait for /healthz; stop it by its own PID afterwards."""
    port = free_port()
    url = f"http://localhost:{port}"
    data_dir = workdir / f"portal-{name}"
    data_dir.mkdir()
    log_path = workdir / f"portal-{name}.log"
    # Settings from the caller's environment (a database URL, test mode) must not leak into the recording.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALACOP_")}
    env |= {"ALACOP_DATA_DIR": str(data_dir), "ALACOP_PUBLIC_URL": url, **extra_env}
    cmd = [sys.executable, "-m", "alacop.cli", "demo", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # noqa: S603
    portal = Portal(name=name, url=url, data_dir=data_dir, env=env, proc=proc, log_path=log_path)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not healthy(f"http://127.0.0.1:{port}"):
            if proc.poll() is not None:
                raise BuildError(f"`alacop demo` ({name}) exited with {proc.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise BuildError(f"`alacop demo` ({name}) did not answer /healthz in {STARTUP_TIMEOUT:.0f}s")
            time.sleep(0.2)
        yield portal
    finally:
        portal.stop()


# -- accounts ---------------------------------------------------------------------------------------
@dataclass
class Account:
    username: str
    password: str
    totp_secret: str | None = None
    recovery_codes: list[str] = field(default_factory=list)
    last_step: int = 0

    @property
    def email(self) -> str:
        return f"{self.username}@{DOMAIN}"

    def totp_code(self) -> str:
        """A code the portal has not seen: each step's code works once, and the portal accepts ±1 step.

        So the next step's code may be used early; only when that is spent too does this wait.
        """
        if not self.totp_secret:
            raise BuildError(f"{self.username} has no authenticator app yet")
        while True:
            current = int(time.time()) // TOTP_PERIOD
            step = max(self.last_step + 1, current)
            if step <= current + 1:
                break
            time.sleep(max(0.1, (current + 1) * TOTP_PERIOD - time.time() + 0.2))
        self.last_step = step
        return pyotp.TOTP(self.totp_secret).at(step * TOTP_PERIOD)


# -- driving a page ---------------------------------------------------------------------------------
@dataclass
class Cue:
    start: float
    end: float
    text: str


class Take:
    """Drives one page: at human speed with captions when `slow`, else as fast as the pages allow."""

    def __init__(self, page: Any, t0: float, *, slow: bool) -> None:
        self.page = page
        self.t0 = t0
        self.slow = slow
        self.cues: list[Cue] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str) -> None:
        """Start the caption of a new step (the previous one ends here), then give the viewer time to read."""
        if not self.slow:
            return
        now = self.now()
        if self.cues and self.cues[-1].end < 0:
            self.cues[-1].end = now
        self.cues.append(Cue(start=now, end=-1.0, text=text))
        # About 1.2 s on each screen; a little longer for a long sentence.
        self.pause(max(PACE, min(2.5, len(text) / READING_SPEED)))

    def finish(self) -> list[Cue]:
        if self.cues and self.cues[-1].end < 0:
            self.pause()
            self.cues[-1].end = self.now()
        return self.cues

    def pause(self, seconds: float = PACE) -> None:
        if self.slow:
            self.page.wait_for_timeout(int(seconds * 1000))

    def type_into(self, target: Any, text: str) -> None:
        target.click()
        self.page.keyboard.type(text, delay=TYPE_DELAY if self.slow else 0)
        self.pause(0.4)

    def click(self, target: Any) -> None:
        """Click; when recording, outline the target first so the viewer sees what is selected."""
        if self.slow:
            target.evaluate(
                "e => { const r = e.getBoundingClientRect();"
                " if (r.top < 60 || r.bottom > innerHeight - 60) e.scrollIntoView({block: 'center'});"
                " e.style.outline = '4px solid #f59e0b'; e.style.outlineOffset = '3px';"
                " setTimeout(() => { e.style.outline = ''; e.style.outlineOffset = ''; }, 1500); }"
            )
            self.pause(BEFORE_CLICK)
        target.click()

    def button(self, name: str, *, exact: bool = True) -> Any:
        return self.page.get_by_role("button", name=name, exact=exact)

    def heading(self, name: str, **kw: Any) -> Any:
        return self.page.get_by_role("heading", name=name, exact=True, **kw)

    def wait_heading(self, name: str, **kw: Any) -> None:
        self.heading(name, **kw).wait_for(state="visible")


def _visible(locator: Any) -> None:
    locator.wait_for(state="visible")


# -- journeys (each step waits for the page it acts on) ---------------------------------------------
def open_sign_in(t: Take, caption: str = "Go to the AlaCOP sign-in page.") -> None:
    t.page.goto("/login")
    t.page.wait_for_url(FLOW_URL)
    t.wait_heading("Sign in")
    t.say(caption)


def identifier_step(t: Take, account: Account) -> None:
    t.wait_heading("Sign in")
    t.say(f"Type your AlaCOP email, your username followed by @{DOMAIN}, then select Next.")
    t.type_into(t.page.locator("input#identifier"), account.email)
    t.click(t.button("Next"))
    t.wait_heading("Enter password")


def password_step(t: Take, password: str, caption: str = "Type your password, then select Sign in.") -> None:
    t.wait_heading("Enter password")
    t.say(caption)
    t.type_into(t.page.locator("input#password"), password)
    t.click(t.button("Sign in"))


def change_password_step(t: Take, account: Account, new: str) -> None:
    t.wait_heading("Choose a new password")
    t.say("AlaCOP asks for a new password: type the temporary one, then your new password twice.")
    for label, value in (("Current password", account.password), ("New password", new), ("Confirm new password", new)):
        t.type_into(t.page.get_by_label(label, exact=True), value)
    t.say("Select Set password and sign in.")
    t.click(t.button("Set password and sign in"))
    account.password = new


def enrol_totp(t: Take, account: Account, shots: Shots | None = None) -> None:
    t.wait_heading("Choose a method")
    t.say("Next, set up a second way to prove it's you: select Authenticator app.")
    if shots:
        shots.take(t.page, "enroll-desktop.png")
    t.click(t.button("Authenticator app"))
    t.heading("Authenticator app", level=2).wait_for()
    _visible(t.page.locator(".qr svg"))
    t.say("Open the authenticator app on your phone, add an account and scan the QR code.")
    t.pause()
    t.say("If you can't scan it, select Can't scan it? and type the key into the app instead.")
    t.click(t.page.get_by_text("Can't scan it? Enter this key instead"))
    secret = t.page.locator(".secret-text code")
    _visible(secret)
    account.totp_secret = secret.inner_text().replace(" ", "").strip()
    t.pause()
    if shots:
        shots.take(t.page, "enroll-totp-desktop.png")
    t.say("Type the 6-digit code the app shows, name the app if you like, then select Add authenticator app.")
    t.type_into(t.page.get_by_label("Code from the app", exact=True), account.totp_code())
    t.type_into(t.page.get_by_label("Name for this app (optional)"), "Work phone")
    t.click(t.button("Add authenticator app"))


def save_recovery_codes(t: Take, account: Account, shots: Shots | None = None) -> None:
    t.wait_heading("Save your recovery codes")
    codes = t.page.get_by_role("list", name="Recovery codes").locator("li")
    _visible(codes.first)
    account.recovery_codes = [c.strip() for c in codes.all_inner_texts()]
    if shots:
        shots.take(t.page, "recovery-codes-desktop.png")
    t.say("Write down or print your recovery codes and keep them somewhere safe: each one works once.")
    t.pause()
    t.say("Then select I have saved my codes.")
    t.click(t.button("I have saved my codes"))


def expect_apps(
    t: Take, caption: str = "You're signed in: My applications lists the applications you can use."
) -> None:
    t.page.wait_for_url(APPS_URL)
    t.wait_heading("My applications")
    t.say(caption)


def totp_step(t: Take, account: Account) -> None:
    t.wait_heading("Verify your identity")
    t.say("Open your authenticator app and type the 6-digit code it shows for AlaCOP, then select Verify.")
    t.type_into(t.page.get_by_label("Enter the 6-digit code from your authenticator app"), account.totp_code())
    t.click(t.button("Verify"))


def sign_out(t: Take) -> None:
    t.say("When you're done, select Sign out.")
    t.click(t.button("Sign out"))
    t.page.wait_for_url(FLOW_URL)
    t.wait_heading("Sign in")


def first_sign_in(t: Take, account: Account, new_password: str, shots: Shots | None = None) -> None:
    """Temporary password → new password → authenticator app → recovery codes → My applications."""
    open_sign_in(
        t, "Go to the AlaCOP sign-in page. Your administrator gave you your username and a temporary password."
    )
    identifier_step(t, account)
    password_step(t, account.password, "Type the temporary password, then select Sign in.")
    change_password_step(t, account, new_password)
    enrol_totp(t, account, shots)
    save_recovery_codes(t, account, shots)
    expect_apps(t)


def lock_with_wrong_passwords(t: Take, account: Account) -> None:
    t.page.goto("/login")
    t.wait_heading("Sign in")
    identifier_step(t, account)
    for attempt in range(1, LOCKOUT_THRESHOLD + 1):
        t.wait_heading("Enter password")
        t.page.locator("input#password").fill(f"not my password {attempt}")
        with t.page.expect_navigation():
            t.button("Sign in").click()
    t.page.get_by_role("alert").filter(has_text="locked").wait_for()


def _captcha_answer(page: Any, portal: Portal) -> str:
    picture = page.locator(".captcha img")
    _visible(picture)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
    src = picture.get_attribute("src") or ""
    nonce = parse_qs(urlsplit(src).query).get("c", [""])[0]
    if not nonce:
        raise BuildError(f"no CAPTCHA nonce in {src!r}")
    return answer_for(portal.captcha_key, nonce)


def recover_unlock(t: Take, portal: Portal, account: Account, shots: Shots | None = None) -> None:
    """From the sign-in page: Can't access your account? → … → "Your account is unlocked." → sign-in page."""
    t.wait_heading("Sign in")
    t.say("On the sign-in page, select Can't access your account?")
    t.click(t.page.get_by_role("link", name="Can't access your account?"))
    t.page.wait_for_url(RECOVER_URL)
    t.wait_heading("Which type of account do you need help with?")
    if shots:
        shots.take(t.page, "recover-type-desktop.png")
    t.say("Your AlaCOP account is a work account: select Work or school account.")
    t.click(t.page.get_by_role("button", name=re.compile(r"^Work or school account")))

    t.wait_heading("Get back into your account", level=1)
    answer = _captcha_answer(t.page, portal)
    if shots:
        shots.take(t.page, "recover-identify-desktop.png")
    t.say("Type your username or AlaCOP email.")
    t.type_into(t.page.get_by_label("Email or Username"), account.username)
    t.say("Type the characters you see in the picture (or select play to hear them), then select Next.")
    t.type_into(t.page.get_by_label("Enter the characters in the picture or the words in the audio"), answer)
    t.click(t.button("Next"))

    t.wait_heading("Verify your identity", level=1)
    if shots:
        shots.take(t.page, "recover-verify-desktop.png")
    t.say("Prove it's you: type the 6-digit code from your authenticator app, then select Verify.")
    t.type_into(t.page.get_by_label("Enter the 6-digit code from your authenticator app"), account.totp_code())
    t.click(t.button("Verify"))

    t.wait_heading("What do you need?", level=1)
    if shots:
        shots.take(t.page, "recover-choose-desktop.png")
    t.say("Your password is right but the account is locked: select I know my password, but still can't sign in.")
    t.click(t.page.get_by_role("button", name=re.compile(r"^I know my password, but still can't sign in")))

    t.wait_heading("Unlock your account", level=1)
    t.say("Type your current password, then select Unlock.")
    t.type_into(t.page.get_by_label("Your current password"), account.password)
    t.click(t.button("Unlock"))

    t.wait_heading("You're all set", level=1)
    t.page.get_by_role("status").filter(has_text="Your account is unlocked.").wait_for()
    if shots:
        shots.take(t.page, "recover-done-desktop.png")
    t.say("Your account is unlocked. Select Go to the sign-in page.")
    t.click(t.page.get_by_role("link", name="Go to the sign-in page"))
    t.page.wait_for_url(FLOW_URL)


@dataclass(frozen=True)
class Applicant:
    first_name: str
    last_name: str
    email: str
    password: str


def register(t: Take, portal: Portal, who: Applicant, shots: Shots | None = None) -> None:
    """From the sign-in page: New User Registration → the form → the emailed code → Request sent."""
    t.wait_heading("Sign in")
    t.say("On the sign-in page, select New User Registration.")
    t.click(t.page.get_by_role("link", name="New User Registration"))
    t.page.wait_for_url(REGISTER_URL)
    t.wait_heading("New User Registration", level=1)
    answer = _captcha_answer(t.page, portal)
    t.say("Fill in the request. Every field is required: start with your name and job title.")
    for label, value in (("First name", who.first_name), ("Last name", who.last_name), ("Job title", "Dispatcher")):
        t.type_into(t.page.get_by_label(label), value)
    t.say("Choose your agency by its name or its ORI, then give your work email at your agency's domain.")
    t.type_into(t.page.get_by_label("Agency"), AGENCY)
    t.type_into(t.page.get_by_label("Work email"), who.email)
    t.say("Add your work phone, your supervisor's name, and why you need access.")
    t.type_into(t.page.get_by_label("Work phone"), "(334) 555-0142")
    t.type_into(t.page.get_by_label("Supervisor's name"), "Lt. Morgan Hale")
    t.type_into(t.page.get_by_label("Reason for access"), "Dispatch queries for patrol units.")
    t.say("Give the date of your CJIS security awareness training: it must be within the last year.")
    trained = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 40 * 86400))
    t.page.get_by_label("Date of your CJIS security awareness training").fill(trained)
    t.pause(0.6)
    t.say("Read the rules of behavior, then tick the box to accept them.")
    t.page.locator("#rules").scroll_into_view_if_needed()
    t.pause()
    t.click(t.page.get_by_label("I have read the rules of behavior and I accept them."))
    if shots:
        shots.take(t.page, "register-form-desktop.png")
    t.say("Type the characters in the picture, or play the audio and type the words you hear. Select Submit request.")
    t.type_into(t.page.get_by_label("Enter the characters in the picture or the words in the audio"), answer)
    t.click(t.button("Submit request"))

    t.wait_heading("Confirm your work email", level=1)
    if shots:
        shots.take(t.page, "register-verify-desktop.png")
    code = portal.mail_to(who.email, r"registration is: ([A-Z0-9]{8})")
    t.say("AlaCOP emails a code to your work email. Type it, then select Confirm.")
    t.type_into(t.page.get_by_label("Code from the email"), code)
    t.click(t.button("Confirm"))
    t.wait_heading("Request sent", level=1)
    t.say("Your request goes to your agency's coordinator. You get an email when they decide.")


def activate(t: Take, portal: Portal, who: Applicant, shots: Shots | None = None) -> Account:
    """Open the approval email's link → choose a password → (the caller enrols a method)."""
    username = portal.mail_to(who.email, r"Your username is ([a-z0-9]+)")
    link = portal.mail_to(who.email, r"(/activate\?token=[\w-]+)")
    t.page.goto(link)
    t.wait_heading("Activate your account")
    t.say(f"Once approved, the email gives you your username, here {username}, and a link to activate your account.")
    if shots:
        shots.take(t.page, "activate-desktop.png")
    t.say("Choose your password: type it twice, then select Set password and continue.")
    t.type_into(t.page.get_by_label("New password", exact=True), who.password)
    t.type_into(t.page.get_by_label("Confirm new password", exact=True), who.password)
    t.click(t.button("Set password and continue"))
    return Account(username=username, password=who.password)


# -- screenshots ------------------------------------------------------------------------------------
@dataclass
class Shots:
    out: Path
    written: list[Path] = field(default_factory=list)

    def take(self, page: Any, name: str) -> None:
        path = self.out / name
        page.screenshot(path=str(path), full_page=True)
        self.written.append(path)


# -- recording --------------------------------------------------------------------------------------
class Browser:
    """Headless Debian Chromium; contexts for plain screenshots and for recorded takes."""

    def __init__(self, chromium: Any, portal_problems: list[str]) -> None:
        self.chromium = chromium
        self.problems = portal_problems
        # Chromium's own user agent, less "Headless": Security info shows it in the screenshots and videos.
        self.user_agent = (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{chromium.version} Safari/537.36"
        )

    def _watch(self, page: Any, label: str) -> None:
        def on_console(msg: Any) -> None:
            if msg.type == "error":
                self.problems.append(f"{label}: console error: {msg.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda err: self.problems.append(f"{label}: page error: {err}"))

    @contextmanager
    def page(self, base_url: str, viewport: dict[str, int] = DESKTOP, label: str = "page") -> Iterator[Any]:
        context = self.chromium.new_context(
            viewport=viewport, base_url=base_url, locale="en-US", user_agent=self.user_agent
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.new_page()
            self._watch(page, label)
            yield page
        finally:
            context.close()

    def record(self, base_url: str, video_tmp: Path, script: Callable[[Take], None], label: str) -> Recording:
        """Run `script` in a new recorded context; return the finished WebM and the captions."""
        rec_dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=video_tmp))
        context = self.chromium.new_context(
            viewport=DESKTOP,
            base_url=base_url,
            locale="en-US",
            user_agent=self.user_agent,
            record_video_dir=str(rec_dir),
            record_video_size=DESKTOP,
        )
        t0 = time.monotonic()
        try:
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            self._watch(page, label)
            take = Take(page, t0, slow=True)
            script(take)
            cues = take.finish()
            video = page.video
        finally:
            context.close()
        elapsed = time.monotonic() - t0
        path = Path(video.path()) if video else None
        if path is None or not path.is_file():
            raise BuildError(f"Playwright wrote no video for {label}")
        return Recording(path=path, cues=cues, elapsed=elapsed)


@dataclass
class Recording:
    path: Path
    cues: list[Cue]
    elapsed: float


# -- output files -----------------------------------------------------------------------------------
def vtt_time(seconds: float) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def render_vtt(cues: list[Cue]) -> str:
    lines = ["WEBVTT", ""]
    for number, cue in enumerate(cues, 1):
        lines += [str(number), f"{vtt_time(cue.start)} --> {vtt_time(cue.end)}", cue.text, ""]
    return "\n".join(lines)


def render_transcript(tutorial: Tutorial, cues: list[Cue]) -> str:
    lines = [tutorial.title, "", tutorial.summary, ""]
    lines += [f"{number}. {cue.text}" for number, cue in enumerate(cues, 1)]
    return "\n".join(lines) + "\n"


def _read_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int]:
    first = data[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise ValueError("bad EBML length")
    value = first if keep_marker else first & (0xFF >> length)
    for b in data[pos + 1 : pos + length]:
        value = (value << 8) | b
    return value, pos + length


def webm_duration(path: Path) -> float | None:
    """Segment → Info → Duration (× TimecodeScale), in seconds; None if the file does not say."""
    data = path.read_bytes()
    pos = 0
    try:
        while pos < len(data):
            element, pos = _read_vint(data, pos, keep_marker=True)
            size, pos = _read_vint(data, pos, keep_marker=False)
            if element == 0x18538067:  # Segment: look inside
                continue
            if element == 0x1549A966:  # Info
                scale, duration, inner, end = 1_000_000, None, pos, pos + size
                while inner < end:
                    child, inner = _read_vint(data, inner, keep_marker=True)
                    child_size, inner = _read_vint(data, inner, keep_marker=False)
                    body = data[inner : inner + child_size]
                    if child == 0x2AD7B1:
                        scale = int.from_bytes(body, "big")
                    elif child == 0x4489:
                        duration = struct.unpack(">f" if child_size == 4 else ">d", body)[0]
                    inner += child_size
                return None if duration is None else duration * scale / 1e9
            pos += size
    except (ValueError, IndexError, struct.error):
        return None
    return None


def _update_index(out_videos: Path, built: dict[str, dict[str, Any]]) -> Path:
    """Merge this run's tutorials into index.json, keeping earlier ones whose files are still there."""
    index_path = out_videos / "index.json"
    previous: dict[str, dict[str, Any]] = {}
    if index_path.is_file():
        try:
            data = json.loads(index_path.read_text(encoding="utf-8"))
            entries = data.get("videos", []) if isinstance(data, dict) else data
            previous = {e["slug"]: e for e in entries if isinstance(e, dict) and "slug" in e}
        except (ValueError, TypeError, KeyError):
            previous = {}
    merged = {**previous, **built}
    videos = [
        merged[slug]
        for slug in SLUGS
        if slug in merged and all((out_videos / merged[slug][k]).is_file() for k in ("webm", "vtt", "transcript"))
    ]
    index = {
        "videos": videos,
        "missing": sorted(MISSING),
        "missing_reasons": MISSING,
    }
    index_path.write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return index_path


# -- the build --------------------------------------------------------------------------------------
VIDEO_PASSWORDS = {
    "signing-in": ("jordan.lee", "Jordan Lee", "temporary passphrase for jordan 5521", "maple river lantern 42 gently"),
    "first-sign-in": (DEMO_USER, "Casey Demo", DEMO_PASSWORD, "blue harbor lantern 7 quietly"),
    "recovering-an-account": (
        "sam.rivera",
        "Sam Rivera",
        "temporary passphrase for sam 8830",
        "quiet orchard 61 compass",
    ),
}


def _prepared(browser: Browser, portal: Portal, username: str, name: str, temporary: str, chosen: str) -> Account:
    """A CLI-created user who already did the first sign-in (fast, not recorded), signed out."""
    account = portal.create_user(username, temporary, name)
    with browser.page(portal.url, label=f"prepare {username}") as page:
        take = Take(page, time.monotonic(), slow=False)
        first_sign_in(take, account, chosen)
        sign_out(take)
    return account


def record_signing_in(browser: Browser, portal: Portal, video_tmp: Path) -> Recording:
    account = _prepared(browser, portal, *VIDEO_PASSWORDS["signing-in"])

    def script(t: Take) -> None:
        open_sign_in(t)
        identifier_step(t, account)
        password_step(t, account.password)
        totp_step(t, account)
        expect_apps(t)
        t.pause()
        sign_out(t)
        t.say("You're signed out and back on the sign-in page.")

    return browser.record(portal.url, video_tmp, script, "signing-in")


def record_first_sign_in(browser: Browser, portal: Portal, video_tmp: Path) -> Recording:
    username, _name, temporary, chosen = VIDEO_PASSWORDS["first-sign-in"]
    account = Account(username=username, password=temporary)  # seeded by `alacop demo`

    def script(t: Take) -> None:
        first_sign_in(t, account, chosen)
        t.pause()

    return browser.record(portal.url, video_tmp, script, "first-sign-in")


def record_recovery(browser: Browser, portal: Portal, video_tmp: Path) -> Recording:
    account = _prepared(browser, portal, *VIDEO_PASSWORDS["recovering-an-account"])
    with browser.page(portal.url, label="lock sam.rivera") as page:
        lock_with_wrong_passwords(Take(page, time.monotonic(), slow=False), account)

    def script(t: Take) -> None:
        open_sign_in(t, "Your account locks after too many wrong passwords. Here's how to unlock it.")
        identifier_step(t, account)
        password_step(t, account.password)
        t.page.get_by_role("alert").filter(has_text="locked").wait_for()
        t.say("The sign-in page says that your account is locked.")
        t.pause()
        t.say("Select Use a different account to go back to the first sign-in page.")
        t.click(t.page.get_by_role("button", name=re.compile(r"^Use a different account")))
        t.page.wait_for_url(FLOW_URL)
        recover_unlock(t, portal, account)
        t.wait_heading("Sign in")
        t.say("Now sign in as usual.")
        identifier_step(t, account)
        password_step(t, account.password)
        totp_step(t, account)
        expect_apps(t, "You're signed in again.")
        t.pause()

    return browser.record(portal.url, video_tmp, script, "recovering-an-account")


REGISTRANT = Applicant("Riley", "Nguyen", "riley.nguyen@demo.al.gov", "amber field 77 lantern calmly")


def record_registering(browser: Browser, portal: Portal, video_tmp: Path) -> Recording:
    def script(t: Take) -> None:
        open_sign_in(t, "Go to the AlaCOP sign-in page.")
        register(t, portal, REGISTRANT)
        t.pause()
        portal.approve(REGISTRANT.email)
        account = activate(t, portal, REGISTRANT)
        enrol_totp(t, account)
        save_recovery_codes(t, account)
        expect_apps(t)
        t.pause()

    return browser.record(portal.url, video_tmp, script, "registering")


def take_registration_screenshots(browser: Browser, portal: Portal, shots: Shots) -> None:
    """register-* and activate-* from the test-mode portal, where the CAPTCHA is answerable."""
    who = Applicant("Jamie", "Ortiz", "jamie.ortiz@demo.al.gov", "granite 18 meadow lantern")
    with browser.page(portal.url, label="screenshots jamie.ortiz") as page:
        t = Take(page, time.monotonic(), slow=False)
        page.goto("/login")
        register(t, portal, who, shots)
        portal.approve(who.email)
        activate(t, portal, who, shots)
        t.wait_heading("Choose a method")


def take_screenshots(browser: Browser, portal: Portal, shots: Shots) -> None:
    """Sign-in, options, enrolment, recovery codes, apps, second factor and Security info (normal portal)."""
    with browser.page(portal.url, label="signin-desktop") as page:
        page.goto("/login")
        Take(page, 0, slow=False).wait_heading("Sign in")
        shots.take(page, "signin-desktop.png")
        page.get_by_role("link", name="Sign-in options").click()
        page.wait_for_url(re.compile(r"/login/options$"))
        page.get_by_role("heading", name="Sign-in options").first.wait_for()
        shots.take(page, "options-desktop.png")
    with browser.page(portal.url, viewport=PHONE, label="signin-phone") as page:
        page.goto("/login")
        Take(page, 0, slow=False).wait_heading("Sign in")
        shots.take(page, "signin-phone.png")

    account = portal.create_user("taylor.morgan", "temporary passphrase for taylor 3307", "Taylor Morgan")
    with browser.page(portal.url, label="screenshots taylor.morgan") as page:
        t = Take(page, time.monotonic(), slow=False)
        first_sign_in(t, account, "copper valley 28 lantern softly", shots)
        shots.take(page, "apps-desktop.png")
        sign_out(t)
        open_sign_in(t)
        identifier_step(t, account)
        password_step(t, account.password)
        t.wait_heading("Verify your identity")
        _visible(page.get_by_label("Enter the 6-digit code from your authenticator app"))
        shots.take(page, "second-factor-desktop.png")
        totp_step(t, account)
        expect_apps(t)
        page.get_by_role("link", name="Security info").click()
        page.wait_for_url(SECURITY_URL)
        t.wait_heading("Security info", level=1)
        shots.take(page, "security-info-desktop.png")


def take_recovery_screenshots(browser: Browser, portal: Portal, shots: Shots) -> None:
    """recover-* from the test-mode portal (its TEST MODE banner shows: only there is the CAPTCHA answerable)."""
    account = _prepared(
        browser, portal, "alex.kim", "Alex Kim", "temporary passphrase for alex 6412", "harbor 93 quiet"
    )
    with browser.page(portal.url, label="screenshots alex.kim") as page:
        t = Take(page, time.monotonic(), slow=False)
        lock_with_wrong_passwords(t, account)
        page.goto("/login")
        recover_unlock(t, portal, account, shots)


def _ffmpeg_for_playwright(workdir: Path) -> str | None:
    """Make sure Playwright finds an ffmpeg; returns a problem, or None.

    Playwright looks for `<browsers path>/ffmpeg-<revision>/ffmpeg-linux`. Without its own build there,
    a temporary browsers path with a link to Debian's ffmpeg stands in (Chromium comes from executable_path).
    """
    import playwright

    browsers_json = Path(playwright.__file__).parent / "driver" / "package" / "browsers.json"
    try:
        data = json.loads(browsers_json.read_text(encoding="utf-8"))
        revision = next(b["revision"] for b in data["browsers"] if b["name"] == "ffmpeg")
    except (OSError, ValueError, KeyError, StopIteration):
        return f"cannot read Playwright's ffmpeg revision from {browsers_json}"
    default_root = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache" / "ms-playwright")
    if (default_root / f"ffmpeg-{revision}" / "ffmpeg-linux").is_file():
        return None
    system = shutil.which("ffmpeg")
    if not system:
        return "ffmpeg is missing: videos need it (apt-get install ffmpeg), or use --no-videos"
    link_dir = workdir / "playwright-browsers" / f"ffmpeg-{revision}"
    link_dir.mkdir(parents=True)
    (link_dir / "ffmpeg-linux").symlink_to(system)
    # The Playwright driver is a child process started later: it inherits this for the build's duration.
    os.environ["PLAYWRIGHT_BROWSERS_PATH"] = str(link_dir.parent)
    return None


@contextmanager
def _environ_restored(name: str) -> Iterator[None]:
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _human_size(n: int) -> str:
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    if argv and argv[0] == "--":  # `alacop help build -- --only …` passes the separator through
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="alacop help build",
        description="Record the help center's video tutorials and take its screenshots in headless Chromium.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument(
        "--only", nargs="+", action="extend", metavar="SLUG", help=f"record only these tutorials: {', '.join(SLUGS)}"
    )
    parser.add_argument("--no-videos", action="store_true", help="record no video tutorial")
    parser.add_argument("--no-screenshots", action="store_true", help="take no screenshot")
    return parser.parse_args(argv)


def _error(message: str) -> int:
    print(f"alacop help build: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = list(dict.fromkeys(args.only or []))
    for slug in only:
        if slug in MISSING:
            return _error(f"no tutorial for {slug!r}: {MISSING[slug]}")
        if slug not in SLUGS:
            return _error(f"unknown tutorial {slug!r}; choose from {', '.join(SLUGS)}")
    slugs = [] if args.no_videos else (only or list(SLUGS))
    screenshots = not args.no_screenshots
    if not slugs and not screenshots:
        return _error("nothing to do: --no-videos and --no-screenshots together")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        return _error("playwright is missing: pip install 'alacop[test]' (never `playwright install`)")
    if not CHROMIUM.is_file():
        return _error(f"{CHROMIUM} is missing: apt-get install chromium")

    out: Path = args.out.resolve()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alacop-help-build-")))
        stack.enter_context(_environ_restored("PLAYWRIGHT_BROWSERS_PATH"))
        if slugs and (problem := _ffmpeg_for_playwright(workdir)):
            return _error(problem)
        try:
            return _build(stack, workdir, out, slugs, screenshots, sync_playwright)
        except BuildError as exc:
            return _error(str(exc))
        except PlaywrightError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"alacop help build: failed: {first}", file=sys.stderr)
            return 1
    return 1  # pragma: no cover - ExitStack does not swallow exceptions


def _build(
    stack: ExitStack, workdir: Path, out: Path, slugs: list[str], screenshots: bool, sync_playwright: Any
) -> int:
    started = time.monotonic()
    need_normal = screenshots or any(s in ("signing-in", "first-sign-in") for s in slugs)
    need_recovery = screenshots or any(s in ("recovering-an-account", "registering") for s in slugs)
    normal = stack.enter_context(run_portal(workdir, "normal")) if need_normal else None
    recovery = None
    if need_recovery:
        seed = secrets.token_urlsafe(24)
        recovery = stack.enter_context(run_portal(workdir, "recovery", ALACOP_ENV="test", ALACOP_CAPTCHA_SEED=seed))
    for portal in (normal, recovery):
        if portal:
            print(f"started portal {portal.name} at {portal.url} (pid {portal.proc.pid})", flush=True)

    problems: list[str] = []
    pw = stack.enter_context(sync_playwright())
    chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    stack.callback(chromium.close)
    browser = Browser(chromium, problems)

    if screenshots:
        shots_dir = out / "screenshots"
        shots_dir.mkdir(parents=True, exist_ok=True)
        shots = Shots(shots_dir)
        assert normal
        assert recovery
        take_screenshots(browser, normal, shots)
        take_recovery_screenshots(browser, recovery, shots)
        take_registration_screenshots(browser, recovery, shots)
        missing = sorted(set(SCREENSHOTS) - {p.name for p in shots.written})
        if missing:
            raise BuildError(f"screenshots not taken: {', '.join(missing)}")
        for path in sorted(set(shots.written)):
            print(f"wrote {path} ({_human_size(path.stat().st_size)})", flush=True)

    if slugs:
        videos_dir = out / "videos"
        videos_dir.mkdir(parents=True, exist_ok=True)
        video_tmp = workdir / "videos"
        video_tmp.mkdir()
        recorders = {"signing-in": record_signing_in, "first-sign-in": record_first_sign_in}
        built: dict[str, dict[str, Any]] = {}
        for tutorial in TUTORIALS:
            if tutorial.slug not in slugs:
                continue
            if tutorial.slug in ("recovering-an-account", "registering"):
                assert recovery
                recorder = record_recovery if tutorial.slug == "recovering-an-account" else record_registering
                rec = recorder(browser, recovery, video_tmp)
            else:
                assert normal
                rec = recorders[tutorial.slug](browser, normal, video_tmp)
            built[tutorial.slug] = _write_tutorial(videos_dir, tutorial, rec)
        index = _update_index(videos_dir, built)
        print(f"wrote {index}", flush=True)

    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"done in {time.monotonic() - started:.0f}s", flush=True)
    return 0


def _write_tutorial(videos_dir: Path, tutorial: Tutorial, rec: Recording) -> dict[str, Any]:
    webm = videos_dir / f"{tutorial.slug}.webm"
    vtt = videos_dir / f"{tutorial.slug}.vtt"
    txt = videos_dir / f"{tutorial.slug}.txt"
    shutil.move(str(rec.path), webm)
    vtt.write_text(render_vtt(rec.cues), encoding="utf-8")
    txt.write_text(render_transcript(tutorial, rec.cues), encoding="utf-8")
    duration = webm_duration(webm) or rec.elapsed
    print(
        f"wrote {webm} ({_human_size(webm.stat().st_size)}, {duration:.1f}s, {len(rec.cues)} steps),"
        f" {vtt.name}, {txt.name}",
        flush=True,
    )
    return {
        "slug": tutorial.slug,
        "title": tutorial.title,
        "summary": tutorial.summary,
        "duration_seconds": round(duration, 1),
        "webm": webm.name,
        "vtt": vtt.name,
        "transcript": txt.name,
        "steps": [cue.text for cue in rec.cues],
        "cues": [{"start": round(c.start, 3), "end": round(c.end, 3), "text": c.text} for c in rec.cues],
    }


if __name__ == "__main__":
    sys.exit(main())
