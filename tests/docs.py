"""The documentation the tests hold true to the code: README.md and the pages in
docs/, read by section."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
HEADING = re.compile(r"^(#{1,6}) (.*)$")


def page(name: str) -> str:
    """The text of a page in docs/."""
    return (DOCS / name).read_text()


def headings(text: str) -> list[tuple[int, int, str]]:
    """(line number, level, title) of each heading, outside fenced code (where a
    line starting with # is a shell comment)."""
    found = []
    fenced = False
    for number, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(line)):
            found.append((number, len(match[1]), match[2]))
    return found


def section(text: str, title: str) -> str:
    """The section with that heading, up to the next heading of its level or
    higher (its own subsections included)."""
    lines = text.splitlines()
    marks = headings(text)
    for index, (start, level, name) in enumerate(marks):
        if name == title:
            ends = [n for n, lv, _ in marks[index + 1 :] if lv <= level]
            return "\n".join(lines[start : ends[0] if ends else len(lines)]) + "\n"
    msg = f"no section {title!r}"
    raise AssertionError(msg)
