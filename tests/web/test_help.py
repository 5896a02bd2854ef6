"""The help center through the app: pages, search, videos, and every internal link resolving."""

from __future__ import annotations

import re
from collections import deque

from tests.conftest import Harness

LINK = re.compile(r'(?:href|src)="(/[^"#]*)(?:#[^"]*)?"')


def test_help_home_lists_categories_guides_and_tutorials(harness: Harness) -> None:
    page = harness.client.get("/help")
    assert page.status_code == 200
    assert page.template.name == "help/index.html"
    names = [name for name, _ in page.context["categories"]]
    assert names[0] == "Getting started"
    assert 'action="/help/search"' in page.text
    assert "/help/guides/login-page" in page.text
    assert "/help/sign-in" in page.text


def test_guide_page_has_a_table_of_contents(harness: Harness) -> None:
    page = harness.client.get("/help/guides/login-page")
    assert page.status_code == 200
    guide = page.context["guide"]
    for anchor, _title in guide.toc:
        assert f'href="#{anchor}"' in page.text
        assert f'id="{anchor}"' in page.text


def test_search_finds_a_guide_by_a_word_from_its_body(harness: Harness) -> None:
    page = harness.client.get("/help/search", params={"q": "CAPTCHA"})
    assert page.status_code == 200
    slugs = [h.guide.slug for h in page.context["hits"]]
    assert "cant-access-account" in slugs
    empty = harness.client.get("/help/search", params={"q": "zzqqxxnothing"})
    assert empty.context["hits"] == []
    hostile = harness.client.get("/help/search", params={"q": "<script>alert(1)</script>" + "x" * 500})
    assert hostile.status_code == 200
    assert "<script>alert(1)" not in hostile.text


def test_unknown_guide_and_video_are_404_pages(harness: Harness) -> None:
    for path in ("/help/guides/nope", "/help/videos/nope"):
        response = harness.client.get(path)
        assert response.status_code == 404
        assert "Page not found" in response.text


def test_video_pages_play_with_captions_and_show_the_transcript(harness: Harness) -> None:
    videos = harness.portal.help.videos
    assert videos, "the tutorials are built by `alacop help build`"
    for slug, video in videos.items():
        page = harness.client.get(f"/help/videos/{slug}")
        assert page.status_code == 200
        assert "<video controls" in page.text
        assert f'src="/help/static/videos/{video.vtt}"' in page.text
        assert 'kind="captions"' in page.text
        assert video.transcript.strip().splitlines()[0].strip() in page.text
        media = harness.client.get(f"/help/static/videos/{video.webm}")
        assert media.status_code == 200
        assert media.headers["content-type"].startswith("video/webm")
        assert media.content[:4] == b"\x1a\x45\xdf\xa3"
        track = harness.client.get(f"/help/static/videos/{video.vtt}")
        assert track.headers["content-type"].startswith("text/vtt")
        assert track.text.startswith("WEBVTT")


def test_every_internal_link_in_the_help_resolves(harness: Harness) -> None:
    start = ["/help", "/login"]  # the sign-in page's help link included
    seen: set[str] = set()
    queue = deque(start)
    broken: list[str] = []
    while queue:
        path = queue.popleft()
        if path in seen:
            continue
        seen.add(path)
        response = harness.client.get(path)
        if response.status_code != 200:
            broken.append(f"{path} -> {response.status_code}")
            continue
        if not response.headers.get("content-type", "").startswith("text/html"):
            continue
        if not (path.startswith("/help") or path == "/login"):
            continue  # follow links out of the help once, not the whole portal
        for link in LINK.findall(response.text):
            if link.startswith(("/login?", "/recover?")) or link in seen:
                continue
            queue.append(link)
    assert not broken, broken
    assert any(p.startswith("/help/guides/") for p in seen)
    assert any(p.startswith("/help/static/screenshots/") for p in seen)


def test_sign_in_errors_link_to_a_section_of_sign_in_help(harness: Harness) -> None:
    harness.create_user()
    for _ in range(5):
        page = harness.sign_in("cs0101", "not the password")
    wrong_domain = harness.identifier("someone@gmail.com")
    help_page = harness.client.get("/help/sign-in").text
    for page_with_error in (page, wrong_domain):
        anchors = re.findall(r'href="/help/sign-in#([\w-]+)"', page_with_error.text)
        assert anchors
        for anchor in anchors:
            assert f'id="{anchor}"' in help_page, anchor
    for topic in ("Caps Lock", "locked", "lost your phone", "year old", "@alacop.gov"):
        assert topic.lower() in help_page.lower(), topic
