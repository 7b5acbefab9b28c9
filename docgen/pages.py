"""Which generated part goes into which page, and writing them."""

from collections.abc import Callable
from pathlib import Path

from docgen import configuration, make_targets
from docgen.markdown import splice

ROOT = Path(__file__).resolve().parent.parent

# Page -> its generated parts, by name, and what writes each.
PARTS: dict[str, dict[str, Callable[[], str]]] = {
    "docs/configuration.md": {"settings": configuration.render},
    "docs/make-targets.md": {"targets": lambda: make_targets.render(ROOT / "Makefile")},
}


def rendered(page: str, root: Path = ROOT) -> str:
    """`page` (relative to `root`) as `make docs` would leave it."""
    text = (root / page).read_text(encoding="utf-8")
    for name, render in PARTS[page].items():
        text = splice(text, name, render())
    return text


def write_all(root: Path = ROOT) -> list[Path]:
    written = []
    for page in PARTS:
        path = root / page
        path.write_text(rendered(page, root), encoding="utf-8")
        written.append(path)
    return written
