"""Constants and small helpers shared by the browser tests and their fixtures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

DEMO_EMAIL = "demo01@alacop.gov"
DEMO_PASSWORD = "correct horse battery staple 2026"

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


@dataclass
class DemoAccount:
    email: str = DEMO_EMAIL
    password: str = DEMO_PASSWORD
    changed: bool = False
