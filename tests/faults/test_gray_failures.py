"""Failures that close no connection, on the compose stack while the project's client runs
inside the compose network (`make faults`; run with -s for the figures).

A replica frozen (`docker pause`) or blackholed for 20 s under `client --timeout 1 load
movie --concurrency 8` fails no call, and the rate during the fault stays at least 0.6 of
the rate before (the service config of grpckit/transport/options.py). A viewer whose replica freezes
mid-match resumes on the other one without losing a frame (client/stall.py). A host
viewer behind a 1 MB/s link stays within 1 s of live, skipping frames; one 100 ms away
(each way, +- 20 ms) gets every frame.
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from statistics import mean
from typing import Any

import pytest

from tests.chaos.conftest import target
from tests.conftest import ROOT
from tests.e2e.test_replicas import (
    DEMO_FRAMES,
    client,
    first_server,
    popen,
    replicas,
    summary,
    wait_all_healthy,
)
from tests.faults.conftest import Toxiproxy, blackholed, paused, report

Replicas = dict[str, dict[str, str]]
Fault = Callable[[str], AbstractContextManager[None]]

# As the issue measured it: 30 s of load, the fault from 5 s to 25 s.
LOAD_SECONDS, FAULT_AT, FAULT_SECONDS = 30, 5, 20
MIN_RATE_RATIO = 0.6


def load_across(
    fault: Fault, container: str, seconds: float, fault_at: float, fault_seconds: float
) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """`client --timeout 1 load movie` with a line a second; `fault` on `container` from
    `fault_at` for `fault_seconds` of the client's own clock. Returns the summary, the
    per-second lines and the client's time when the fault began."""
    args = ["--timeout", "1", "load", "movie", "--seconds", f"{seconds:g}", "--concurrency", "8"]
    with popen(client(*args, "--every", "1")) as running, ExitStack() as injected:
        assert running.stdout is not None
        lines: list[dict[str, Any]] = []
        began = None
        # Bounded: one line a second for `seconds`, then the summary.
        for text in running.stdout:
            line = json.loads(text)
            lines.append(line)
            if "at" not in line:
                break
            if began is None and line["at"] >= fault_at:
                began = line["at"]
                injected.enter_context(fault(container))
            elif began is not None and line["at"] >= began + fault_seconds:
                injected.close()
        injected.close()
        _, err = running.communicate(timeout=60)
    assert began is not None, (lines, err)
    return lines[-1], lines[:-1], began


def rates(lines: list[dict[str, Any]], began: float, fault_seconds: float) -> tuple[float, float]:
    """Calls per second before the fault (after the first second, which connects) and
    during it (whole seconds inside it)."""
    before = [x["calls_per_s"] for x in lines if 1.5 < x["at"] <= began]
    during = [x["calls_per_s"] for x in lines if began + 1 <= x["at"] <= began + fault_seconds]
    assert before and during, lines
    return mean(before), mean(during)


@pytest.mark.faults
@pytest.mark.parametrize(("name", "fault"), [("frozen", paused), ("blackholed", blackholed)])
def test_a_replica_that_answers_nothing_fails_no_call(
    scaled: Replicas, name: str, fault: Fault
) -> None:
    victim, container = next(iter(scaled["movie"].items()))
    record, lines, began = load_across(fault, container, LOAD_SECONDS, FAULT_AT, FAULT_SECONDS)
    before, during = rates(lines, began, FAULT_SECONDS)
    failures = {line["at"] - began: line["failed"] for line in lines if line["failed"]}
    report(name, replica=victim, rate_before=round(before), rate_during=round(during),
           ratio=round(during / before, 2), failed_at=failures, **record)  # fmt: skip
    assert record["failed"] == 0, record
    assert during >= MIN_RATE_RATIO * before, (before, during)
    wait_all_healthy("movie")


@pytest.mark.e2e
def test_a_frozen_replica_fails_no_call_short(scaled: Replicas) -> None:
    """The case above in a few seconds, in `make test` (e2e) so that CI keeps it alive."""
    victim, container = next(iter(scaled["movie"].items()))
    record, _, _ = load_across(paused, container, 8, 2, 4)
    report("frozen-short", replica=victim, **record)
    assert record["failed"] == 0, record
    assert victim in record["served_by"], record  # it served before it froze
    wait_all_healthy("movie")


@pytest.mark.faults
def test_a_viewer_resumes_elsewhere_when_its_replica_freezes(scaled: Replicas) -> None:
    with popen(client("soccer", "watch", "demo", "--encoding", "jpeg")) as running:
        victim = first_server(running)
        # 4 s into the 10 s match, as the issue measured it.
        time.sleep(4)
        with paused(scaled["soccer"][victim]):
            out, err = running.communicate(timeout=120)
    record = summary(out)
    report("viewer-frozen", replica=victim, **record)
    assert running.returncode == 0, err
    assert record["stalled"] >= 1, record
    assert record["served_by"][0] == victim and victim not in record["served_by"][1:], record
    assert (record["frames"], record["first_frame"], record["last_frame"], record["skipped"]) == (
        DEMO_FRAMES, 0, DEMO_FRAMES - 1, 0,
    ), record  # fmt: skip
    wait_all_healthy("soccer")


@pytest.mark.e2e
def test_readme_commands_keep_the_replica_count(scaled: Replicas) -> None:
    """`docker compose run --rm client smoke`, exactly as the README prints it, after
    `--scale`: compose no longer starts the client's servers at their default scale."""
    chosen = {service: len(names) for service, names in scaled.items()}
    result = subprocess.run(
        ["docker", "compose", "run", "--rm", "client", "smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {service: len(replicas(service)) for service in scaled} == chosen
    # Chosen in the environment (or .env) instead, they hold for `up` too.
    env = {**os.environ, **{f"{s.upper()}_REPLICAS": str(n) for s, n in chosen.items()}}
    subprocess.run(
        ["docker", "compose", "up", "-d", "--wait"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert {service: len(replicas(service)) for service in scaled} == chosen


def host_viewer(target: str) -> "subprocess.Popen[str]":
    """`client soccer watch demo --encoding jpeg` on this machine, through `target`."""
    return subprocess.Popen(
        [sys.executable, "-m", "client", "--target", target,
         "soccer", "watch", "demo", "--encoding", "jpeg"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def watched(viewer: "subprocess.Popen[str]") -> dict[str, Any]:
    out, err = viewer.communicate(timeout=120)
    assert viewer.returncode == 0, err
    return summary(out)


@pytest.mark.faults
def test_a_viewer_on_a_slow_link_stays_near_live_and_others_are_unaffected(
    scaled: Replicas, toxiproxy: Toxiproxy
) -> None:
    """1 MB/s to a viewer of the 1.5 MB/s JPEG stream, through the edge: it skips frames
    instead of falling behind in buffers; a viewer of the same match on a fast link skips
    none. (Raw viewers take another path through the edge. At 83 MB/s through TLS twice the
    raw stream is CPU-bound on this 2-core host, 24-28 fps unpaced, so a check of it beside
    these viewers would measure the host.)"""
    # 1,000 KB/s from the stack to the viewer.
    slow_link = {"type": "bandwidth", "stream": "downstream", "attributes": {"rate": 1000}}
    upstream = "127.0.0.1:" + target("soccer").rpartition(":")[2]
    with toxiproxy.proxy(upstream, slow_link) as address:
        slow = host_viewer(address)
        fast = host_viewer(target("soccer"))
        slow_record, fast_record = watched(slow), watched(fast)
    report("slow-link", slow=slow_record, fast=fast_record)
    assert slow_record["skipped"] > 0, slow_record
    # Every frame from where it joined to the end, received or counted as skipped.
    first, last = slow_record["first_frame"], slow_record["last_frame"]
    assert last == DEMO_FRAMES - 1, slow_record
    assert slow_record["frames"] + slow_record["skipped"] == last - first + 1, slow_record
    # Live is where a viewer on a fast link is: the lag this busy host gives any viewer at
    # times (a few tenths of a second) is not the slow link's.
    assert slow_record["lag_s"] - fast_record["lag_s"] <= 1.0, (slow_record, fast_record)
    assert fast_record["skipped"] == 0, fast_record


@pytest.mark.faults
def test_a_viewer_100_ms_away_gets_every_frame(scaled: Replicas, toxiproxy: Toxiproxy) -> None:
    latency = {"latency": 100, "jitter": 20}
    toxics = [
        {"type": "latency", "stream": stream, "attributes": latency}
        for stream in ("downstream", "upstream")
    ]
    upstream = "127.0.0.1:" + target("soccer").rpartition(":")[2]
    with toxiproxy.proxy(upstream, *toxics) as address:
        record = watched(host_viewer(address))
    report("latency", **record)
    assert (record["frames"], record["skipped"]) == (DEMO_FRAMES, 0), record
