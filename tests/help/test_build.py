"""`alacop help build` records a playable tutorial; the committed index lists every tutorial with its files.

The WebM is checked with a small EBML reader written here (no new dependency): the EBML header and its
DocType, then the duration from Segment → Info → Duration, or else from the clusters' timecodes.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from alacop.help import build

pytestmark = pytest.mark.browser

STATIC_VIDEOS = Path(build.__file__).resolve().parent / "static" / "videos"
EBML, DOCTYPE, SEGMENT, INFO, TIMECODE_SCALE, DURATION = 0x1A45DFA3, 0x4282, 0x18538067, 0x1549A966, 0x2AD7B1, 0x4489
CLUSTER, CLUSTER_TIMECODE, SIMPLE_BLOCK, BLOCK_GROUP, BLOCK = 0x1F43B675, 0xE7, 0xA3, 0xA0, 0xA1
UNKNOWN = -1
CUE = re.compile(r"^(\d{2,}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2,}):(\d{2}):(\d{2})\.(\d{3})")


def _vint(data: bytes, pos: int, *, marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at `pos`: (value, next position); sizes of all ones are UNKNOWN."""
    first, length = data[pos], 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    assert length <= 8, f"invalid EBML variable-length integer at byte {pos}"
    value = first if marker else first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = value << 8 | byte
    if not marker and value == (1 << (7 * length)) - 1:
        value = UNKNOWN
    return value, pos + length


def _elements(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The (id, body start, body end) of each element in data[start:end]; an unknown size runs to `end`."""
    found, pos = [], start
    while pos < end:
        element, pos = _vint(data, pos, marker=True)
        size, pos = _vint(data, pos, marker=False)
        stop = end if size == UNKNOWN else pos + size
        assert stop <= len(data), f"element {element:#x} runs past the end of the file"
        found.append((element, pos, stop))
        pos = stop
    return found


def _uint(body: bytes) -> int:
    return int.from_bytes(body, "big")


def webm_facts(data: bytes) -> tuple[str, float]:
    """(DocType, duration in seconds) of a WebM file."""
    top = _elements(data, 0, len(data))
    assert top and top[0][0] == EBML, "the file does not start with the EBML header 0x1A45DFA3"
    header = {e: data[s:t] for e, s, t in _elements(data, top[0][1], top[0][2])}
    doctype = header.get(DOCTYPE, b"").decode("ascii")
    segment = next((s, t) for e, s, t in top if e == SEGMENT)
    scale, duration, last_ms = 1_000_000, None, 0
    for element, start, end in _elements(data, *segment):
        if element == INFO:
            for child, s, t in _elements(data, start, end):
                if child == TIMECODE_SCALE:
                    scale = _uint(data[s:t])
                elif child == DURATION:
                    duration = struct.unpack(">f" if t - s == 4 else ">d", data[s:t])[0]
        elif element == CLUSTER:
            cluster_ms = 0
            for child, s, t in _elements(data, start, end):
                if child == CLUSTER_TIMECODE:
                    cluster_ms = _uint(data[s:t])
                blocks = [(s, t)] if child == SIMPLE_BLOCK else []
                if child == BLOCK_GROUP:
                    blocks = [(bs, bt) for b, bs, bt in _elements(data, s, t) if b == BLOCK]
                for block_start, _ in blocks:
                    _, pos = _vint(data, block_start, marker=False)  # the track number
                    (relative,) = struct.unpack(">h", data[pos : pos + 2])
                    last_ms = max(last_ms, cluster_ms + relative)
    seconds = duration * scale / 1e9 if duration else last_ms * scale / 1e9
    return doctype, seconds


def vtt_cues(text: str) -> list[tuple[float, float, str]]:
    lines = text.splitlines()
    assert lines and lines[0].startswith("WEBVTT"), "a WebVTT file starts with WEBVTT"
    cues = []
    for number, line in enumerate(lines):
        if match := CUE.match(line):
            h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(g) for g in match.groups())
            start, end = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
            caption = lines[number + 1].strip() if number + 1 < len(lines) else ""
            cues.append((start, end, caption))
    return cues


@pytest.fixture
def chromium_available() -> None:
    if not build.CHROMIUM.exists():
        reason = f"{build.CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.mark.usefixtures("chromium_available")
def test_build_records_a_playable_tutorial(tmp_path: Path) -> None:
    # A child process, as `alacop help build` runs: the browser tests' own Playwright holds this thread's loop.
    cmd = [
        sys.executable,
        "-m",
        "alacop.help.build",
        "--only",
        "signing-in",
        "--no-screenshots",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"the build failed:\n{done.stdout}\n{done.stderr}"
    videos = tmp_path / "videos"
    assert "signing-in.webm" in done.stdout

    data = (videos / "signing-in.webm").read_bytes()
    assert data[:4] == bytes.fromhex("1A45DFA3"), "no EBML magic at the start of the WebM"
    doctype, duration = webm_facts(data)
    assert doctype == "webm"
    assert duration > 5, f"the video lasts only {duration:.2f}s"

    cues = vtt_cues((videos / "signing-in.vtt").read_text(encoding="utf-8"))
    assert len(cues) >= 3, f"too few captions: {cues}"
    for (start, end, caption), (next_start, _, _) in zip(cues, [*cues[1:], (cues[-1][1], 0, "")], strict=True):
        assert 0 <= start < end <= next_start, f"caption times out of order at {caption!r}"
        assert caption, "a caption without text"
    assert cues[-1][1] <= duration + 1, f"the last caption ends at {cues[-1][1]}s, after the video ({duration:.2f}s)"
    transcript = (videos / "signing-in.txt").read_text(encoding="utf-8")
    assert "1. " in transcript and transcript.strip()

    index = json.loads((videos / "index.json").read_text(encoding="utf-8"))
    assert [v["slug"] for v in index["videos"]] == ["signing-in"]
    assert index["missing"] == []


def test_committed_index_lists_every_tutorial_with_its_files() -> None:
    index = json.loads((STATIC_VIDEOS / "index.json").read_text(encoding="utf-8"))
    entries = {entry["slug"]: entry for entry in index["videos"]}
    assert set(entries) == {"signing-in", "first-sign-in", "registering", "recovering-an-account"}
    for slug, entry in entries.items():
        for key in ("webm", "vtt", "transcript"):
            assert (STATIC_VIDEOS / entry[key]).is_file(), f"{slug}: {entry[key]} is missing"
        assert entry["title"] and entry["summary"] and entry["steps"]
        assert entry["duration_seconds"] > 5
    assert index["missing"] == [] and index["missing_reasons"] == {}
