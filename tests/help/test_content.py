"""Guides: front matter, Markdown rendering with a table of contents, and title-first search."""

from __future__ import annotations

from pathlib import Path

import pytest

from alacop.help.content import GUIDES, HelpCenter, parse_guide

SAMPLE = """---
title: Locked accounts
slug: locked
category: Signing in
order: 2
summary: What a lock means.
---
Intro text about the portal.

## Why accounts lock

Five wrong attempts within fifteen minutes. <script>alert(1)</script>

## Why accounts lock

Same heading twice.
"""


def test_front_matter_toc_and_safe_html() -> None:
    guide = parse_guide(SAMPLE, default_slug="x")
    assert (guide.slug, guide.title, guide.category, guide.order) == ("locked", "Locked accounts", "Signing in", 2)
    assert guide.toc == (("why-accounts-lock", "Why accounts lock"), ("why-accounts-lock-2", "Why accounts lock"))
    assert '<h2 id="why-accounts-lock">' in guide.html
    assert "<script>" not in guide.html
    assert "&lt;script&gt;" in guide.html
    assert "Five wrong attempts" in guide.text


def test_search_ranks_titles_first_and_needs_every_word(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("---\ntitle: Passwords\nslug: a\n---\nA page about codes.\n")
    (tmp_path / "b.md").write_text("---\ntitle: Codes\nslug: b\n---\nPasswords are mentioned once here.\n")
    center = HelpCenter.load(tmp_path, tmp_path)
    assert [h.guide.slug for h in center.search("passwords")] == ["a", "b"]
    assert [h.guide.slug for h in center.search("CODES")] == ["b", "a"]
    assert [h.guide.slug for h in center.search("passwords mentioned")] == ["b"]
    assert center.search("nothing-like-this") == []
    assert center.search("   ") == []


def test_shipped_guides_cover_the_required_topics() -> None:
    center = HelpCenter.load()
    required = {
        "login-page",
        "signing-in",
        "cant-access-account",
        "new-user-registration",
        "authentication-methods",
        "sign-in-options",
        "acceptable-use",
        "contact-support",
    }
    assert required <= set(center.guides)
    for guide in center.guides.values():
        assert guide.title and guide.summary, guide.slug
        assert len(guide.toc) >= 2, guide.slug
    assert len(list(GUIDES.glob("*.md"))) == len(center.guides)


@pytest.mark.parametrize("word", ["captcha", "recovery", "passkey", "1-844-838-9028"])
def test_search_finds_guides_by_words_from_their_bodies(word: str) -> None:
    hits = HelpCenter.load().search(word)
    assert hits, word
    assert all(word.split("-")[0] in h.guide.text.lower() or word in h.guide.title.lower() for h in hits)
