"""Browser (end-to-end) fixtures: a real `alacop demo` server and headless Debian Chromium.

The server runs once per session on a free loopback port with its own data directory, so the
demo account's forced password change and second-factor enrolment happen once per session;
`demo_account` tracks the account's password, TOTP seed and recovery codes so tests can sign in
in any order. A second server with passkey sign-in switched on starts only for the tests that ask, and a third,
in test mode with a known CAPTCHA seed, only for the account-recovery tests.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from alacop.help.build import CHROMIUM, CHROMIUM_ARGS, free_port, healthy, stop_process

from .support import DESKTOP, SCREENSHOTS, DemoAccount, PageProblems, Portal, watch

STARTUP_TIMEOUT = 30.0
# Assertions wait as long as locators do: a sign-in's argon2 on a busy 2-core CI machine can take
# several seconds, and a 5-second wait turned that into a false failure.
expect.set_options(timeout=10_000)


@contextmanager
def _run_portal(tmp_path_factory: pytest.TempPathFactory, name: str, **extra_env: str) -> Iterator[Portal]:
    """Start `alacop demo` on a free port with its own data dir; yield it; stop it (by its own PID) afterwards.

    The browser uses http://localhost:<port>: WebAuthn accepts localhost as a relying party, never an IP.
    """
    port = free_port()
    url = f"http://localhost:{port}"
    health_url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path_factory.mktemp(f"alacop-e2e-{name}")
    log_path = data_dir.parent / f"alacop-{name}-{port}.log"
    # Every test's browser comes from 127.0.0.1: the per-address limit (30 a minute) would count them
    # all together, so the session's portals allow more (tests/web covers the limit itself).
    env = {
        **os.environ,
        "ALACOP_DATA_DIR": str(data_dir),
        "ALACOP_PUBLIC_URL": url,
        "ALACOP_POLICY__RATE_LIMIT_PER_MINUTE": "600",
        **extra_env,
    }
    cmd = [sys.executable, "-m", "alacop.cli", "demo", "--host", "127.0.0.1", "--port", str(port)]
    # Output goes to a file, not a pipe: nothing can block on a full pipe and no pipe is left unclosed.
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not healthy(health_url):
                if proc.poll() is not None:
                    pytest.fail(
                        f"`alacop demo` exited with {proc.returncode} before answering /healthz:\n"
                        f"{log_path.read_text(errors='replace')}"
                    )
                if time.monotonic() > deadline:
                    stop_process(proc)
                    pytest.fail(
                        f"`alacop demo` did not answer {health_url}/healthz within {STARTUP_TIMEOUT:.0f}s:\n"
                        f"{log_path.read_text(errors='replace')}"
                    )
                time.sleep(0.2)
            yield Portal(url=url, data_dir=data_dir, env=env)
        finally:
            stop_process(proc)


ROOT = Path(__file__).resolve().parents[2]


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            return bool(resp.status == 200)
    except OSError:
        return False


@contextmanager
def run_demo_app(factory: str, port: int, log: Path, **env: str) -> Iterator[None]:
    """Run one of the demo applications (`examples.<name>.app:build_app`) on 127.0.0.1:`port` until its
    page answers; stop it (by its own handle) afterwards."""
    cmd = [sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _answers(f"http://127.0.0.1:{port}/"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        yield
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    """The portal most tests use, with the default policy (no passkey sign-in)."""
    with _run_portal(tmp_path_factory, "demo") as running:
        yield running


@pytest.fixture(scope="session")
def portal_url(portal: Portal) -> str:
    return portal.url


@pytest.fixture(scope="session")
def passkey_portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    """A second portal, with its own data, where /login/options offers passkey sign-in."""
    with _run_portal(tmp_path_factory, "passkey", ALACOP_POLICY__PASSKEY_SIGN_IN="true") as running:
        yield running


@pytest.fixture(scope="session")
def recovery_portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    """A third portal in test mode, so tests can derive CAPTCHA answers from a seed they chose.

    ALACOP_ENV=test puts a TEST MODE banner on every page: only this portal has it, so the other
    tests' screenshots stay free of it. The seed is random per session, never a fixed value.
    """
    seed = secrets.token_urlsafe(24)
    with _run_portal(tmp_path_factory, "recovery", ALACOP_ENV="test", ALACOP_CAPTCHA_SEED=seed) as running:
        yield running


@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium (never a downloaded browser)."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser: Any, portal_url: str) -> Iterator[Callable[..., tuple[Any, PageProblems]]]:
    """Factory: `page, problems = new_page(viewport=PHONE, base_url=...)`; each call gets a fresh context."""
    contexts: list[Any] = []

    def make(viewport: dict[str, int] | None = None, base_url: str | None = None) -> tuple[Any, PageProblems]:
        context = browser.new_context(viewport=viewport or DESKTOP, base_url=base_url or portal_url, locale="en-US")
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        return page, watch(page)

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[..., tuple[Any, PageProblems]]) -> Iterator[Any]:
    """A desktop-sized page that must end the test without console errors or page errors.

    Tests that want to check mid-way use `new_page()` and call `problems.assert_clean()` themselves.
    """
    pg, problems = new_page()
    yield pg
    problems.assert_clean()


@pytest.fixture(scope="session")
def demo_account(portal_url: str) -> DemoAccount:
    """The demo account's current password, TOTP seed and recovery codes; updated by the tests that change them."""
    return DemoAccount()
