"""The make targets and what each does, read from the Makefile's `## ` comments with the
pattern `make help` greps for, so that the page lists what `make help` prints."""

import re
from pathlib import Path

from docgen.markdown import table

# The same pattern as the Makefile's `help` target: a target, a colon, and `## ` text.
TARGET = re.compile(r"^([a-zA-Z0-9_-]+):.*?## (.*)$")


def targets(makefile: Path) -> list[tuple[str, str]]:
    found = []
    for line in makefile.read_text(encoding="utf-8").splitlines():
        match = TARGET.match(line)
        if match:
            found.append((match[1], match[2].strip()))
    return found


def render(makefile: Path) -> str:
    return table(["target", "what it does"], [[f"`make {n}`", d] for n, d in targets(makefile)])
