"""The documentation points at what exists: every relative link in README.md and
docs/*.md at a file (and a heading, when it names one), every path it names in
code at a file or folder of the repository, and the layout in docs/architecture.md
at every module and test folder, and at nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.docs import DOCS, README, ROOT, headings, page, section

PAGES = [README, *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A path of the repository named in code: `pocket/web/errors.py`, `tests/e2e/`.
NAMED_PATH = re.compile(r"`((?:pocket|tests|tools|docs|\.ci)/[\w./-]*)`")


def prose(text: str) -> str:
    """The text outside fenced code blocks (where brackets are code, not links)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, markup and punctuation
    dropped (hyphens and underscores kept), spaces made hyphens."""
    text = re.sub(r"[`*]", "", title).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a page (a repeated one gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for _, _, title in headings(path.read_text()):
        base = slug(title)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path.read_text()))
        if not re.match(r"[a-z]+:", target)  # https:, mailto:
    ]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(
    path: Path,
) -> None:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no such heading")
    assert broken == []


def test_the_links_are_read_and_their_anchors_made_as_github_makes_them() -> None:
    assert slug("Where an `add_money` goes") == "where-an-add_money-goes"
    assert slug("Changing the projection's shape, live") == (
        "changing-the-projections-shape-live"
    )
    assert slug("In a browser: the wallet page and the operator console") == (
        "in-a-browser-the-wallet-page-and-the-operator-console"
    )
    assert "operations.md#metrics" in relative_links(DOCS / "api.md")
    # A link broken on purpose is found broken.
    assert "no-such-heading" not in anchors(DOCS / "operations.md")


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_named_in_code_exists(path: Path) -> None:
    named = set(NAMED_PATH.findall(path.read_text()))
    assert [name for name in sorted(named) if not (ROOT / name).exists()] == []


def test_the_readme_links_every_page_of_the_docs() -> None:
    linked = {target.partition("#")[0] for target in relative_links(README)}
    pages = {f"docs/{path.name}" for path in DOCS.glob("*.md")}
    assert pages - linked == set()


def layout_names() -> set[str]:
    """Every path the layout names: an entry is a name (or names, separated by
    commas) at the indentation of its folder's entries; deeper lines go on
    describing the entry above."""
    block = re.findall(
        r"```\n(.*?)```", section(page("architecture.md"), "Layout"), re.S
    )
    assert len(block) == 1, "the layout is one code block"
    folders: list[str] = []
    named: set[str] = set()
    for line in block[0].splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if indent % 2 or indent // 2 > len(folders):
            continue  # a description going on
        folders = folders[: indent // 2]
        entry = re.match(r"((?:[\w./-]+)(?:, [\w./-]+)*)(?:  |$)", line.lstrip(" "))
        assert entry is not None, line
        names = entry[1].split(", ")
        named.update("".join(folders) + name for name in names)
        if len(names) == 1 and names[0].endswith("/"):
            folders.append(names[0])
    return named


def test_the_layout_names_every_module_and_test_folder() -> None:
    files = [*ROOT.glob("pocket/**/*.py"), *ROOT.glob("tools/**/*.py")]
    files += ROOT.glob("tests/*.py")
    modules = {str(f.relative_to(ROOT)) for f in files if f.name != "__init__.py"}
    folders = {
        f"{d.relative_to(ROOT)}/"
        for d in ROOT.glob("tests/*")
        if d.is_dir() and (d / "__init__.py").exists()
    }
    named = layout_names()
    assert {"pocket/web/auth.py", "tests/e2e/", "tools/bench/wrk.py"} <= named
    assert (modules | folders) - named == set()


def test_everything_the_layout_names_exists() -> None:
    assert [name for name in sorted(layout_names()) if not (ROOT / name).exists()] == []
