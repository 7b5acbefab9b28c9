"""The short case of `make rollout-test` (tests/rollout) in the e2e job: movie at 2
replicas rolled out (scripts/rollout.sh) under the client's load at a 1 s deadline, inside
the compose network and from the host through the edge, with no call failed; then a rollout
whose new replica never becomes healthy, refused with the old replicas left serving."""

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rollout.harness import Case, at_scale, refused_rollout, run_case

pytestmark = pytest.mark.e2e


@pytest.fixture
def two_movies() -> Iterator[None]:
    at_scale("movie", 2)
    yield
    at_scale("movie", 1)  # the other e2e modules expect one of each


def test_a_rollout_of_two_replicas_under_load_fails_no_call(two_movies: None) -> None:
    case = run_case(Case("movie", 2, "rollout"), load_seconds=40)
    for via in ("network", "edge"):
        record = case.figures[via]
        assert (record["exit"], record["failed"]) == (0, 0), (via, record)
        assert record["calls"] > 0, record


def test_a_rollout_whose_new_replica_never_becomes_healthy_is_refused(two_movies: None) -> None:
    report = refused_rollout("movie", Path("tests/rollout/broken.yml"))
    print(json.dumps(report), file=sys.stderr)
    # The script names the state it saw: "restarting", or "restarted N times", or "exited".
    assert "restart" in report["reason"] or "exited" in report["reason"], report
