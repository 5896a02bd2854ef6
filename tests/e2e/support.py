"""Constants and small helpers shared by the browser tests and their fixtures."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

DEMO_EMAIL = "demo01@alacop.gov"
DEMO_PASSWORD = "correct horse battery staple 2026"
DEMO_ORI = "AL0000000"
TOTP_PERIOD = 30

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@dataclass
class PageProblems:
    """Console errors (CSP violations show up here) and uncaught page errors seen by one page."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        problems = [f"console error: {m}" for m in self.console_errors]
        problems += [f"page error: {m}" for m in self.page_errors]
        assert not problems, "the browser reported problems:\n" + "\n".join(problems)


def watch(page: Any) -> PageProblems:
    problems = PageProblems()

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            loc = msg.location or {}
            problems.console_errors.append(f"{msg.text} ({loc.get('url', '?')}:{loc.get('lineNumber', '?')})")

    page.on("console", on_console)
    page.on("pageerror", lambda err: problems.page_errors.append(str(err)))
    return problems


@dataclass(frozen=True)
class Portal:
    """One running `alacop demo`: the URL the browser uses and what the CLI needs to reach its data."""

    url: str
    data_dir: Path
    env: dict[str, str]

    def create_user(self, username: str, password: str, role: str = "user") -> str:
        """Create a user with `alacop users create` (it must change its password at first sign-in)."""
        cmd = [sys.executable, "-m", "alacop.cli", "users", "create", username, "--agency", DEMO_ORI]
        cmd += ["--email", f"{username}@demo.al.gov", "--role", role, "--password-stdin"]
        done = subprocess.run(
            cmd, input=f"{password}\n".encode(), env=self.env, capture_output=True, timeout=60, check=False
        )
        output = (done.stdout + done.stderr).decode(errors="replace")
        assert done.returncode == 0, f"`alacop users create {username}` failed:\n{output}"
        return f"{username}@alacop.gov"

    @property
    def captcha_seed(self) -> bytes:
        """The CAPTCHA key of a portal in test mode (ALACOP_ENV=test with ALACOP_CAPTCHA_SEED)."""
        seed = self.env.get("ALACOP_CAPTCHA_SEED", "")
        assert seed and self.env.get("ALACOP_ENV") == "test", "this portal does not run with a test CAPTCHA seed"
        return seed.encode()


@dataclass
class DemoAccount:
    """An account's current secrets, kept up to date by whichever test changes them."""

    email: str = DEMO_EMAIL
    password: str = DEMO_PASSWORD
    changed: bool = False
    # Set by the first sign-in's enrolment: the authenticator app's seed and the recovery codes shown.
    totp_secret: str | None = None
    recovery_codes: list[str] = field(default_factory=list)
    last_totp_step: int = 0

    def note_totp_used(self, at: float | None = None) -> None:
        self.last_totp_step = int(time.time() if at is None else at) // TOTP_PERIOD

    def totp_code(self) -> str:
        """A code from a step the portal has not seen yet: each code is accepted once, so maybe wait."""
        assert self.totp_secret, "the account has no authenticator app yet"
        while (step := int(time.time()) // TOTP_PERIOD) <= self.last_totp_step:
            time.sleep(max(0.1, (self.last_totp_step + 1) * TOTP_PERIOD - time.time() + 0.2))
        self.last_totp_step = step
        return pyotp.TOTP(self.totp_secret).at(step * TOTP_PERIOD)

    def take_recovery_code(self) -> str:
        assert self.recovery_codes, "no unused recovery code left"
        return self.recovery_codes.pop(0)
