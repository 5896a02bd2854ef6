"""axe-core in the browser tests: inject it into a page, run the WCAG 2.x A/AA rules, report what is serious.

axe-core comes from npm (tests/e2e/package.json and package-lock.json; `scripts/test` runs `npm ci`).
It is injected with `page.evaluate` (a CDP evaluation, which the page's Content-Security-Policy does not
block), so the portal needs no test-only script source. Without it the accessibility tests skip, or fail
under CI=true.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from .support import DESKTOP, PHONE, SCREENSHOTS, PageProblems

AXE_JS = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
SWEEP_SCREENSHOTS = SCREENSHOTS / "sweep"
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
FAILING_IMPACTS = frozenset({"serious", "critical"})
VIEWPORTS = (("desktop", DESKTOP), ("phone", PHONE))

# Only what the report needs crosses back from the page.
RUN_AXE = (
    "axe.run(document, {runOnly: {type: 'tag', values: " + json.dumps(list(WCAG_TAGS)) + "}})"
    ".then(results => results.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,"
    " nodes: v.nodes.map(n => ({target: n.target, impact: n.impact, summary: n.failureSummary || ''}))})))"
)


@cache
def axe_source() -> str:
    """The text of axe.min.js; skips the test (fails it under CI=true) when `npm ci` has not run."""
    if not AXE_JS.is_file():
        reason = f"{AXE_JS} is missing: run `(cd tests/e2e && npm ci)` (scripts/test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return AXE_JS.read_text(encoding="utf-8")


def run_axe(page: Any) -> list[dict[str, Any]]:
    """All WCAG 2.0/2.1 A and AA violations on the page as it is now (axe is injected if needed)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        # A trailing expression, so that the evaluation returns a plain value rather than axe's last statement.
        page.evaluate(axe_source() + "\n;true")
    return list(page.evaluate(RUN_AXE))


def serious(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v.get("impact") in FAILING_IMPACTS]


def describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"  [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"]:
            target = " ".join(" >>> ".join(t) if isinstance(t, list) else str(t) for t in node["target"])
            summary = " ".join(node["summary"].split())
            lines.append(f"      {target}" + (f" -- {summary}" if summary else ""))
    return "\n".join(lines)


@dataclass
class PageResult:
    """One page of the sweep: where it was, what axe found at each width, what the browser complained about."""

    name: str
    url: str = ""
    violations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # WCAG 1.4.10 Reflow: the page may not be wider than the window (axe does not check it).
    overflow: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def assert_ok(self) -> None:
        report = [f"{self.name} ({self.url}):"]
        failing = False
        for width, found in self.violations.items():
            if found:
                failing = True
                report.append(f" {width}: {len(found)} serious or critical axe violation(s)\n{describe(found)}")
        for width, extra in self.overflow.items():
            if extra > 0:
                failing = True
                report.append(f" {width}: the page is {extra}px wider than the window (WCAG 1.4.10 Reflow)")
        if self.problems:
            failing = True
            report.append(" the browser reported problems:\n" + "\n".join(f"  {p}" for p in self.problems))
        assert not failing, "\n".join(report)


@dataclass
class Sweep:
    """Checks pages as a journey reaches them: axe at desktop and phone width, a screenshot of each width."""

    page: Any
    problems: PageProblems
    results: dict[str, PageResult] = field(default_factory=dict)
    _seen: tuple[int, int] = (0, 0)

    def check(self, name: str, *, expected: tuple[str, ...] = ()) -> None:
        """Record `name` (the page shown now) at both widths, then put the page back at its own width.

        `expected`: console errors that are the point of the page (the 404 of the not-found page itself).
        """
        assert name not in self.results, f"{name} was checked twice"
        SWEEP_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        original = self.page.viewport_size or DESKTOP
        result = PageResult(name=name, url=self.page.url)
        try:
            for width, viewport in VIEWPORTS:
                self.page.set_viewport_size(viewport)
                result.violations[width] = serious(run_axe(self.page))
                result.overflow[width] = int(
                    self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                )
                self.page.screenshot(path=str(SWEEP_SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
        finally:
            self.page.set_viewport_size(original)
        result.problems = [p for p in self.new_problems() if p not in expected]
        self.results[name] = result

    def new_problems(self) -> list[str]:
        """Console errors (CSP violations among them) and page errors since the last page checked."""
        console, errors = self.problems.console_errors, self.problems.page_errors
        fresh = [f"console error: {m}" for m in console[self._seen[0] :]]
        fresh += [f"page error: {m}" for m in errors[self._seen[1] :]]
        self._seen = (len(console), len(errors))
        return fresh
