"""The help center's content: Markdown guides with front matter, rendered once at start, and search."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

HERE = Path(__file__).parent
GUIDES = HERE / "guides"
STATIC = HERE / "static"
CATEGORY_ORDER = ("Getting started", "Signing in", "Your account", "Policies and support")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Guide:
    slug: str
    title: str
    category: str
    order: int
    summary: str
    html: str
    toc: tuple[tuple[str, str], ...]
    text: str


@dataclass(frozen=True, slots=True)
class Video:
    slug: str
    title: str
    summary: str
    duration_seconds: float
    webm: str
    vtt: str
    transcript: str
    steps: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Hit:
    guide: Guide
    score: int
    snippet: str


@dataclass
class HelpCenter:
    guides: dict[str, Guide] = field(default_factory=dict)
    videos: dict[str, Video] = field(default_factory=dict)
    missing_videos: tuple[str, ...] = ()

    @classmethod
    def load(cls, guides_dir: Path = GUIDES, static_dir: Path = STATIC) -> HelpCenter:
        center = cls()
        for path in sorted(guides_dir.glob("*.md")):
            guide = parse_guide(path.read_text(encoding="utf-8"), default_slug=path.stem)
            center.guides[guide.slug] = guide
        index = static_dir / "videos" / "index.json"
        if index.is_file():
            data = json.loads(index.read_text(encoding="utf-8"))
            entries = data.get("videos", data) if isinstance(data, dict) else data
            for entry in entries:
                video = Video(
                    slug=entry["slug"],
                    title=entry["title"],
                    summary=entry.get("summary", ""),
                    duration_seconds=float(entry.get("duration_seconds", 0)),
                    webm=entry["webm"],
                    vtt=entry["vtt"],
                    transcript=(static_dir / "videos" / Path(entry["transcript"]).name).read_text(encoding="utf-8")
                    if (static_dir / "videos" / Path(entry["transcript"]).name).is_file()
                    else "",
                    steps=tuple(entry.get("steps", ())),
                )
                center.videos[video.slug] = video
            if isinstance(data, dict):
                center.missing_videos = tuple(str(m) for m in data.get("missing", ()))
        return center

    def categories(self) -> list[tuple[str, list[Guide]]]:
        names = list(CATEGORY_ORDER) + sorted({g.category for g in self.guides.values()} - set(CATEGORY_ORDER))
        grouped = []
        for name in names:
            members = sorted((g for g in self.guides.values() if g.category == name), key=lambda g: (g.order, g.title))
            if members:
                grouped.append((name, members))
        return grouped

    def search(self, query: str, limit: int = 20) -> list[Hit]:
        """Every word must appear somewhere; a word in the title counts far more than one in the body."""
        terms = words(query)[:10]
        if not terms:
            return []
        hits = []
        for guide in self.guides.values():
            title, summary, body = words(guide.title), words(guide.summary), words(guide.text)
            score = 0
            for term in terms:
                in_title = sum(1 for w in title if w.startswith(term))
                in_summary = sum(1 for w in summary if w.startswith(term))
                in_body = sum(1 for w in body if w.startswith(term))
                if not (in_title or in_summary or in_body):
                    break
                score += 100 * in_title + 10 * in_summary + min(in_body, 20)
            else:
                hits.append(Hit(guide, score, snippet(guide.text, terms)))
        hits.sort(key=lambda h: (-h.score, h.guide.title))
        return hits[:limit]


def words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return _WORD.findall(folded)


def snippet(text: str, terms: list[str], width: int = 180) -> str:
    lowered = text.lower()
    positions = [lowered.find(t) for t in terms if lowered.find(t) >= 0]
    start = max(0, min(positions) - 60) if positions else 0
    piece = text[start : start + width].strip()
    return ("…" if start else "") + piece + ("…" if start + width < len(text) else "")


def slugify(text: str) -> str:
    return "-".join(words(text)) or "section"


_FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)


def parse_guide(source: str, *, default_slug: str) -> Guide:
    meta: dict[str, str] = {}
    body = source
    match = _FRONT.match(source)
    if match:
        for line in match.group(1).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                meta[key.strip()] = value.strip()
        body = source[match.end() :]
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
    tokens = md.parse(body)
    toc: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            title = tokens[i + 1].content
            anchor = slugify(title)
            while anchor in seen:
                anchor += "-2"
            seen.add(anchor)
            token.attrSet("id", anchor)
            if token.tag == "h2":
                toc.append((anchor, title))
    html = md.renderer.render(tokens, md.options, {})
    # Images load lazily and keep their size; every screenshot already carries its alt text.
    html = html.replace("<img ", '<img loading="lazy" ')
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", body)
    text = re.sub(r"[#*_`>|\[\]()]", " ", text)
    return Guide(
        slug=meta.get("slug", default_slug),
        title=meta.get("title", default_slug.replace("-", " ").capitalize()),
        category=meta.get("category", "Getting started"),
        order=int(meta.get("order", "99") or 99),
        summary=meta.get("summary", ""),
        html=html,
        toc=tuple(toc),
        text=" ".join(text.split()),
    )
