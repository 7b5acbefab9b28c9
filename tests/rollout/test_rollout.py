"""`make rollout-test`: every service upgraded under the client's load, at 1 and 3 replicas,
with compose's own force-recreate (the behaviour before scripts/rollout.sh: figures only)
and with the rollout (no call may fail at a 1 s deadline, inside the network or through the
edge; a viewer across it gets every frame, 2 s of stall at most, the client's and the page's).
The edge, replaced stop-first, and a refused rollout too. Every case's figures are printed
and kept in build/artifacts/rollout-figures.json (docs/operations.md quotes them).
"""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.e2e.test_browsers import browser  # noqa: F401  (the fixture)
from tests.e2e.test_edge import CERTS
from tests.e2e.test_observability import ARTIFACTS
from tests.rollout.harness import Case, at_scale, refused_rollout, run_case
from tests.rollout.viewer import viewer_page

pytestmark = pytest.mark.rollout

# A match that outlasts the slowest rollout (soccer at 3 replicas, under load): 75 s at
# 30 fps, small frames so that it is written in seconds.
MATCH = "rollout"
MATCH_SECONDS = 75
MATCH_FRAMES = MATCH_SECONDS * 30
LONGEST_STALL = 2.0
FIGURES: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def match() -> Iterator[str]:
    from soccer import demo_video

    path = ROOT / "videos" / f"{MATCH}.mp4"
    demo_video.generate(path, seconds=MATCH_SECONDS, fps=30, width=640, height=360)
    yield MATCH
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[None]:
    yield
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "rollout-figures.json").write_text(json.dumps(FIGURES, indent=1) + "\n")
    print(json.dumps(FIGURES, indent=1))


CASES = [
    (service, count, how)
    for service in ("cheese", "movie", "soccer")
    for count in (1, 3)
    for how in ("recreate", "rollout")
]


def load_seconds(count: int) -> float:
    """Long enough for the rollout to end inside it: about 10 s per replica here."""
    return 30 if count == 1 else 60


def assert_no_failed_call(figures: dict[str, Any], *via: str) -> None:
    for name in via:
        record = figures[name]
        assert (record["exit"], record["failed"]) == (0, 0), (name, record)


def assert_every_frame(record: dict[str, Any], stall: float | None = LONGEST_STALL) -> None:
    assert record["exit"] == 0, record
    assert (record["frames"], record["first_frame"], record["last_frame"], record["skipped"]) == (
        MATCH_FRAMES, 0, MATCH_FRAMES - 1, 0,
    ), record  # fmt: skip
    if stall is not None:
        assert record["longest_gap_s"] <= stall, record


def assert_page_every_frame(page: dict[str, Any], stall: float | None = LONGEST_STALL) -> None:
    assert (page["status"], page["shown"], page["lost"]) == ("ended", MATCH_FRAMES, 0), page
    if stall is not None:
        assert page["gap_ms"] <= stall * 1000, page


@pytest.mark.parametrize(("service", "count", "how"), CASES)
def test_an_upgrade_under_load(
    service: str,
    count: int,
    how: str,
    match: str,
    browser: Any,  # noqa: F811
) -> None:
    viewers = service == "soccer"
    page: Callable[[], Callable[[], dict[str, Any]]] | None = None
    if viewers:
        page = viewer_page(browser, match, CERTS)
    case = run_case(
        Case(service, count, how),
        load_seconds=MATCH_SECONDS - 10 if viewers else load_seconds(count),
        match=match if viewers else None,
        page=page,
    )
    FIGURES.append({"service": service, "replicas": count, "how": how, **case.figures})
    if how == "rollout":
        assert_no_failed_call(case.figures, "network", "edge")
        if viewers:
            assert_every_frame(case.figures["viewer_network"])
            assert_every_frame(case.figures["viewer_edge"])
            assert_page_every_frame(case.figures["viewer_page"])
    at_scale(service, 1)


@pytest.mark.parametrize("how", ["recreate", "rollout"])
def test_the_edge_replaced_under_load(how: str, match: str, browser: Any) -> None:  # noqa: F811
    """The edge holds the published ports, so it goes stop-first (both ways): what the
    rollout adds is Envoy's drain first. Clients on the network never pass it and must lose
    nothing; host clients see a gap of a few seconds, which the viewers resume across (every
    frame) and which unary calls at a 1 s deadline do not outlast (figures only)."""
    page = viewer_page(browser, match, CERTS)
    case = run_case(Case("edge", 1, how), load_seconds=30, match=match, page=page)
    FIGURES.append({"service": "edge", "replicas": 1, "how": how, **case.figures})
    assert_no_failed_call(case.figures, "network")
    assert_every_frame(case.figures["viewer_network"])
    assert_every_frame(case.figures["viewer_edge"], stall=None)
    assert_page_every_frame(case.figures["viewer_page"], stall=None)


@pytest.mark.parametrize("count", [1, 3])
def test_a_rollout_whose_new_replica_never_becomes_healthy_is_refused(count: int) -> None:
    at_scale("movie", count)
    report = refused_rollout("movie", Path("tests/rollout/broken.yml"))
    FIGURES.append({"service": "movie", "replicas": count, "how": "refused", **report})
    at_scale("movie", 1)
