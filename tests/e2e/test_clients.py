"""Clients in other languages, written from proto/ alone, on the running stack: every block
of docs/clients.md that names an e2e step runs exactly as printed (from the repository's
root). The Go client (clients/go) calls every method of every service and checks status
codes, health, reflection v1 and a whole match, through the edge and on the compose
network; Node and Python make the calls a first client makes."""

import json
import os
import re
import subprocess
import time
from functools import cache
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

DOCS = ROOT / "docs" / "clients.md"


@cache
def steps() -> dict[str, str]:
    """The docs' shell blocks marked `<!-- e2e: NAME -->`, by name."""
    found = re.findall(r"<!-- e2e: ([\w-]+) -->\n```sh\n(.*?)```", DOCS.read_text(), re.DOTALL)
    return dict(found)


def run(step: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    # Go lives in /usr/local/go on many hosts without being on PATH (as scripts/go-tool.sh).
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/local/go/bin"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", steps()[step]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return result, time.monotonic() - started


def checks(stdout: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert lines, stdout
    return lines[:-1], lines[-1]


def test_the_docs_mark_every_step_the_job_runs() -> None:
    assert set(steps()) == {"go-build", "go-edge", "go-network", "node", "python"}


@pytest.fixture(scope="module")
def go_client() -> None:
    # Minutes only on a machine with empty Go caches (modules and build).
    result, seconds = run("go-build", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"go client built in {seconds:.1f} s")


# What the Go client must have checked, per service: a missing check fails as a failed one.
EXPECTED = [
    *(f"{s} health {json.dumps(n)}" for s, n in [
        ("cheese", ""), ("cheese", "cheesefarm.CheeseService"), ("movie", ""), ("movie", "Movie"),
        ("soccer", ""), ("soccer", "stream.Soccer"),
    ]),
    *(f"{s} reflection v1 {what}" for s in ("cheese", "movie", "soccer") for what in ("list", "describe")),
    *(f"cheese Order {t}" for t in ("EMMENTAL", "BRIE", "PECORINO", "ROQUEFORT", "CANASTRA")),
    "cheese Order unknown type", "cheese Order 1 ms deadline", "cheese Order after the deadline",
    "cheese Order by an identity the policy refuses",
    "movie GetMovieByID", "movie GetMovieByID unknown", "movie GetMovieByID empty",
    "movie GetListMovies", "movie GetMovieByTitle", "movie GetMovieByTitle unknown",
    "movie GetMoviesByDirector", "movie GetMoviesByDirector unknown",
    "movie GetMovieByID by an identity the policy refuses",
    "soccer Watch raw frames", "soccer Watch path outside the videos", "soccer Watch unknown match",
    "soccer Watch start past the end", "soccer Watch by an identity the policy refuses",
    "soccer Watch whole match",
]  # fmt: skip


@pytest.mark.parametrize("where", ["go-edge", "go-network"])
def test_the_go_client_passes_every_check(go_client: None, where: str) -> None:
    result, seconds = run(where, timeout=120)
    done, summary = checks(result.stdout)
    failed = [c for c in done if not c["ok"]]
    assert result.returncode == 0 and not failed, (failed, result.stderr[-2000:])
    names = [c["check"] for c in done]
    missing = [name for name in EXPECTED if name not in names]
    assert not missing, missing
    # The denied identity may still ask health: it is refused by the policy, not the TLS.
    assert {'cheese-denied health ""', 'soccer-denied health "stream.Soccer"'} <= set(names)
    [whole] = [c for c in done if c["check"] == "soccer Watch whole match"]
    print(f"{where}: {summary['checks']} checks in {seconds:.1f} s; whole match: {whole['detail']}")


def test_the_node_client_calls_every_service() -> None:
    result, _ = run("node", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    done = json.loads(result.stdout.strip().splitlines()[-1])
    assert done["Order"] == "BRIE" and done["GetMovieByID unknown"] == "NOT_FOUND", done
    assert done["Watch"] == 3 and done["Health"] == "SERVING", done


def test_the_python_client_calls_every_service() -> None:
    result, _ = run("python", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    done = json.loads(result.stdout.strip().splitlines()[-1])
    assert done["GetMovieByID"] == "The Martian" and done["GetListMovies"] == 7, done
