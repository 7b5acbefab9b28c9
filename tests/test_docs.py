"""The generated reference pages are current: each is what `make docs` (docgen) writes from
the settings dataclasses and the Makefile, and what they say is what the code does."""

import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from docgen import make_targets
from docgen.markdown import begin, end, splice
from docgen.pages import PARTS, rendered
from grpckit.config import ServerSettings, TraceSettings
from soccer.server import SoccerSettings
from tests.conftest import ROOT


@pytest.mark.parametrize("page", sorted(PARTS))
def test_the_page_is_what_make_docs_writes(page: str) -> None:
    assert (ROOT / page).read_text(encoding="utf-8") == rendered(page), (
        f"{page} is out of date: run `make docs` and commit it"
    )


def test_every_variable_of_the_settings_is_on_the_configuration_page() -> None:
    page = (ROOT / "docs/configuration.md").read_text(encoding="utf-8")
    for kind in (ServerSettings, TraceSettings, SoccerSettings):
        for item in fields(kind):
            assert f"| `{item.metadata['setting'].env}` |" in page


def test_the_make_targets_are_those_make_help_lists() -> None:
    printed = subprocess.run(
        ["make", "-s", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = [line.split(None, 1) for line in printed.splitlines()]
    assert make_targets.targets(ROOT / "Makefile") == [(name, text) for name, text in listed]


def test_make_docs_rewrites_a_stale_table(tmp_path: Path) -> None:
    page = "docs/configuration.md"
    (tmp_path / "docs").mkdir()
    stale = rendered(page).replace("| `SHUTDOWN_GRACE` | `--grace` | `10.0` |", "| x | y | z |")
    assert stale != rendered(page)
    (tmp_path / page).write_text(stale, encoding="utf-8")
    assert rendered(page, tmp_path) == rendered(page)


def test_only_the_part_between_the_markers_is_rewritten() -> None:
    page = f"# Title\nby hand\n{begin('x')}\nold\n{end('x')}\nafter\n"
    assert splice(page, "x", "new\n") == f"# Title\nby hand\n{begin('x')}\nnew\n{end('x')}\nafter\n"


def test_a_page_without_its_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="no generated part 'x'"):
        splice("# Title\n", "x", "new")
