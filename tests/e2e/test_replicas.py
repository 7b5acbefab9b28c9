"""Three replicas of every service on the compose network: calls spread over all of them,
a replica killed under load fails no call, a viewer whose replica dies resumes elsewhere.

Clients in the client container dial dns:///<service>:<port> (round_robin over every
replica Docker's DNS returns); every response names its replica (`served-by`), which is
the container's host name.
"""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.chaos.conftest import target
from tests.conftest import ROOT
from tests.e2e.test_compose import compose

pytestmark = pytest.mark.e2e

SERVICES = ("cheese", "movie", "soccer")
REPLICAS = 3
DEMO_FRAMES = 300  # videos/demo.mp4: 10 s at 30 fps
METHODS = {
    "cheese": "/cheesefarm.CheeseService/Order",
    "movie": "/Movie/GetMovieByID",
    "soccer": "/stream.Soccer/Watch",
}

Replicas = dict[str, dict[str, str]]  # service -> host name -> container id


def replicas(service: str) -> dict[str, str]:
    ids = compose("ps", "--quiet", service).stdout.split()
    output = subprocess.run(
        ["docker", "inspect", "--format", "{{.Config.Hostname}} {{.Id}}", *ids],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(line.split() for line in output.splitlines())


def scale(count: int) -> None:
    flags = [f"--scale={service}={count}" for service in SERVICES]
    compose("up", "--detach", "--wait", *flags, timeout=300)


def health_of(container: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Health.Status}}", container],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def wait_all_healthy(service: str, within: float = 90) -> None:
    deadline = time.monotonic() + within
    for name, container in replicas(service).items():
        while (status := health_of(container)) != "healthy":
            assert time.monotonic() < deadline, f"{service} {name} still {status}"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def scaled() -> Iterator[Replicas]:
    scale(REPLICAS)
    found = {service: replicas(service) for service in SERVICES}
    assert all(len(names) == REPLICAS for names in found.values()), found
    yield found
    scale(1)  # the other e2e modules expect the default, one of each


def client(*args: str) -> list[str]:
    """`docker compose` arguments that run the client container with `args`.

    --no-deps: the services are up already, and compose must not touch their scale.
    """
    return ["run", "--rm", "--no-deps", "client", *args]


def popen(compose_args: list[str]) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        ["docker", "compose", *compose_args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def summary(stdout: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary in {stdout!r}"
    record: dict[str, Any] = lines[-1]
    return record


def load(service: str, seconds: float) -> list[str]:
    return client("load", service, "--seconds", f"{seconds:g}", "--concurrency", "4")


@pytest.mark.parametrize("service", SERVICES)
def test_calls_spread_over_every_replica(scaled: Replicas, service: str) -> None:
    result = compose(*load(service, 3), timeout=120)
    report = summary(result.stdout)
    assert report["failed"] == 0, report
    assert set(report["served_by"]) == set(scaled[service]), report


def served_a_call_since(container: str, service: str, since: str) -> bool:
    logs = subprocess.run(
        ["docker", "logs", "--since", since, container],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return METHODS[service] in logs.stderr + logs.stdout


@pytest.mark.parametrize("service", ["cheese", "movie"])
def test_killing_a_replica_under_load_fails_no_call(scaled: Replicas, service: str) -> None:
    victim, container = next(iter(scaled[service].items()))
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    with popen(load(service, 8)) as running:
        # Kill it once it is known to be carrying part of the load.
        deadline = time.monotonic() + 60
        while not served_a_call_since(container, service, since):
            assert running.poll() is None, running.communicate()
            assert time.monotonic() < deadline, f"{victim} served nothing"
            time.sleep(0.1)
        subprocess.run(["docker", "kill", container], check=True, capture_output=True)
        out, err = running.communicate(timeout=120)
    report = summary(out)
    print(json.dumps({"killed": victim, **report}), file=sys.stderr)
    assert running.returncode == 0, err
    assert report["failed"] == 0, report
    assert victim in report["served_by"], report  # it did serve, before it died
    assert len(report["served_by"]) >= REPLICAS - 1, report
    wait_all_healthy(service)  # Docker restarts it (restart: unless-stopped)


def test_a_viewer_resumes_on_another_replica_when_its_replica_dies(scaled: Replicas) -> None:
    watch = client("soccer", "watch", "demo", "--encoding", "jpeg")
    with popen(watch) as running:
        assert running.stderr is not None
        line = running.stderr.readline()
        while line and not line.startswith("served by "):
            line = running.stderr.readline()
        assert line, f"the watch ended before naming its server: {running.communicate()}"
        victim = line.removeprefix("served by ").strip()
        # Mid-match: the demo plays for 10 s in real time.
        time.sleep(3)
        subprocess.run(["docker", "kill", scaled["soccer"][victim]], check=True)
        out, err = running.communicate(timeout=120)
    record = summary(out)
    assert running.returncode == 0, err
    assert record["served_by"][0] == victim, record
    assert victim not in record["served_by"][1:], record
    assert record["resumed"] >= 1, record
    # Every frame exactly once, in order, across the two replicas.
    assert (record["frames"], record["first_frame"], record["last_frame"]) == (
        DEMO_FRAMES, 0, DEMO_FRAMES - 1,
    ), record  # fmt: skip
    assert record["skipped"] == 0, record
    wait_all_healthy("soccer")


def test_the_host_reaches_the_replicas_through_the_edge(scaled: Replicas) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "client", "--target", target("movie"), "load", "movie",
         "--seconds", "1", "--concurrency", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = summary(result.stdout)
    assert report["failed"] == 0, report
    # One connection through the edge: one replica, whichever it picked.
    assert set(report["served_by"]) <= set(scaled["movie"]), report
