"""Every relative link in README.md and docs/*.md leads somewhere: the file or folder exists,
and a `#anchor` names a heading of the page it points into, as GitHub makes its anchors."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and [text](target "title"); images too.
INLINE = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
CODE_SPAN = re.compile(r"(`+).+?\1")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def _prose(text: str) -> Iterator[str]:
    """The lines of `text` outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: its inline markup's text, lower case, with every
    character but letters, digits, spaces, '-' and '_' dropped, and spaces made '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of `page`: its headings' slugs, repeats numbered as GitHub numbers them."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose(page.read_text(encoding="utf-8")):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if match:
            base = slug(match[2])
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> Iterator[str]:
    for line in _prose(page.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub("", line)
        yield from INLINE.findall(line)
        yield from REFERENCE.findall(line)


def _external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target) is not None


def dead_links(page: Path) -> list[str]:
    dead = []
    for target in links(page):
        if _external(target):
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            dead.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            dead.append(f"{target}: no heading with that anchor")
    return dead


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert dead_links(page) == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Start it", "start-it"),
        ("Failures that close no connection", "failures-that-close-no-connection"),
        ("Shutdown, restarts and clients", "shutdown-restarts-and-clients"),
        ("The `make docs` page (generated)", "the-make-docs-page-generated"),
        ("[Envoy](https://envoyproxy.io) & gRPC-Web", "envoy--grpc-web"),
        ("Idle and slow_connections: 2 kinds", "idle-and-slow_connections-2-kinds"),
    ],
)
def test_slugs_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_dead_file_a_dead_anchor_and_a_repeated_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n## Part\n## Part\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n"
        "[ok](other.md#part-1) [self](#page) [web](https://example.com/x#y) `[code](gone.md)`\n"
        "```\n[fenced](gone.md)\n```\n"
        "[no file](gone.md) [no anchor](other.md#part-2) [no own anchor](#nothing)\n"
        "[ref]: missing/\n",
        encoding="utf-8",
    )
    assert dead_links(page) == [
        "gone.md: no such file",
        "other.md#part-2: no heading with that anchor",
        "#nothing: no heading with that anchor",
        "missing/: no such file",
    ]
