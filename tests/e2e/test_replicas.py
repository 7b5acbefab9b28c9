"""Three replicas of every service on the compose network: calls spread over all of them,
a replica killed under load fails no call, a viewer whose replica dies resumes elsewhere.

Clients in the client container dial dns:///<service>:<port> (round_robin over every
replica Docker's DNS returns); a client on the host dials the edge (localhost:<port>), one
channel, which balances each call over the replicas. Every response names its replica
(`served-by`), which is the container's host name.
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


def scale(counts: dict[str, int]) -> None:
    flags = [f"--scale={service}={count}" for service, count in counts.items()]
    compose("up", "--detach", "--wait", *flags, timeout=300)


def inspected(container: str, template: str) -> str:
    """`docker inspect --format TEMPLATE` of one container."""
    return subprocess.run(
        ["docker", "inspect", "--format", template, container],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def health_of(container: str) -> str:
    return inspected(container, "{{.State.Health.Status}}")


def revive(service: str, container: str) -> None:
    """Starts a killed replica again and waits until every replica is healthy: Docker does not
    restart a container that `docker kill` stopped (it counts as stopped by hand, whatever
    the restart policy), and the next test wants all of them."""
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    wait_all_healthy(service)
    wait_edge_sees_all(service)


def edge_healthy_hosts(service: str) -> int:
    """How many replicas of `service` the edge sends calls to (its admin interface, asked
    from inside its container)."""
    clusters = compose("exec", "-T", "edge", "curl", "-fsS", "http://127.0.0.1:9901/clusters")
    return sum(
        1 for line in clusters.stdout.splitlines()
        if line.startswith(f"{service}::") and line.endswith("::health_flags::healthy")
    )  # fmt: skip


def wait_edge_sees_all(service: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while (seen := edge_healthy_hosts(service)) != REPLICAS:
        assert time.monotonic() < deadline, f"the edge sees {seen} healthy {service} replicas"
        time.sleep(0.5)


def wait_all_healthy(service: str, within: float = 90) -> None:
    deadline = time.monotonic() + within
    for name, container in replicas(service).items():
        while (status := health_of(container)) != "healthy":
            assert time.monotonic() < deadline, f"{service} {name} still {status}"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def scaled() -> Iterator[Replicas]:
    scale(dict.fromkeys(SERVICES, REPLICAS))
    found = {service: replicas(service) for service in SERVICES}
    assert all(len(names) == REPLICAS for names in found.values()), found
    for service in SERVICES:
        wait_edge_sees_all(service)
    yield found
    scale(dict.fromkeys(SERVICES, 1))  # the other e2e modules expect one of each


def client(*args: str) -> list[str]:
    """`docker compose` arguments that run the client container with `args`.

    --no-deps: the services are up already, and compose must not touch their scale.
    """
    return ["run", "--rm", "--no-deps", "client", *args]


def popen(compose_args: list[str]) -> "subprocess.Popen[str]":
    return run_in_background(["docker", "compose", *compose_args])


def run_in_background(command: list[str]) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def first_server(watching: "subprocess.Popen[str]") -> str:
    """The replica a running `soccer watch` names first on its standard error."""
    assert watching.stderr is not None
    line = watching.stderr.readline()
    while line and not line.startswith("served by "):
        line = watching.stderr.readline()
    assert line, f"the watch ended before naming its server: {watching.communicate()}"
    return line.removeprefix("served by ").strip()


def summary(stdout: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary in {stdout!r}"
    record: dict[str, Any] = lines[-1]
    return record


def load(service: str, seconds: float) -> list[str]:
    return client("load", service, "--seconds", f"{seconds:g}", "--concurrency", "4")


def host_load(service: str, seconds: float) -> list[str]:
    """The client on the host, through the edge: one channel to localhost:<port>."""
    return [sys.executable, "-m", "client", "--target", target(service), "load", service,
            "--seconds", f"{seconds:g}", "--concurrency", "4"]  # fmt: skip


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


@pytest.mark.parametrize("via", ["network", "edge"])
@pytest.mark.parametrize("service", ["cheese", "movie"])
def test_killing_a_replica_under_load_fails_no_call(
    scaled: Replicas, service: str, via: str
) -> None:
    """From the client container (its channel balances and retries) and from the host
    through the edge (the edge balances, and retries what the dead replica never answered)."""
    victim, container = next(iter(scaled[service].items()))
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    command = (
        ["docker", "compose", *load(service, 8)] if via == "network" else host_load(service, 8)
    )
    with run_in_background(command) as running:
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
    revive(service, container)


@pytest.mark.parametrize(("via", "stop"), [("network", "kill"), ("edge", "stop"), ("edge", "kill")])
def test_a_viewer_resumes_on_another_replica_when_its_replica_dies(
    scaled: Replicas, via: str, stop: str
) -> None:
    """From the network or from the host through the edge, the replica killed or stopped
    (it drains): the viewer's next Watch, from the next frame, goes to another replica.
    Through the edge a killed replica's stream ends with Envoy's reset (INTERNAL), a
    stopped one's as without the edge."""
    watch = ["soccer", "watch", "demo", "--encoding", "jpeg"]
    if via == "network":
        command = ["docker", "compose", *client(*watch)]
    else:
        command = [sys.executable, "-m", "client", "--target", target("soccer"), *watch]
    with run_in_background(command) as running:
        victim = first_server(running)
        # Mid-match: the demo plays for 10 s in real time.
        time.sleep(3)
        subprocess.run(["docker", stop, scaled["soccer"][victim]], check=True)
        out, err = running.communicate(timeout=120)
    assert running.returncode == 0, err
    record = summary(out)
    assert record["served_by"][0] == victim, record
    assert victim not in record["served_by"][1:], record
    assert record["resumed"] >= 1, record
    # Every frame exactly once, in order, across the two replicas.
    assert (record["frames"], record["first_frame"], record["last_frame"]) == (
        DEMO_FRAMES, 0, DEMO_FRAMES - 1,
    ), record  # fmt: skip
    assert record["skipped"] == 0, record
    revive("soccer", scaled["soccer"][victim])


def test_a_frozen_replica_behind_the_edge_fails_no_call(scaled: Replicas) -> None:
    """A replica that stops answering but keeps its connections (`docker pause`): the edge
    hedges its read-only calls on another replica after 0.25 s and takes it out of the
    rotation when its health check times out, so a host client with a 1 s deadline loses
    no call."""
    victim, container = next(iter(scaled["movie"].items()))
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    command = host_load("movie", 8)
    command[command.index("--target") : command.index("--target")] = ["--timeout", "1"]
    with run_in_background(command) as running:
        deadline = time.monotonic() + 60
        while not served_a_call_since(container, "movie", since):
            assert running.poll() is None, running.communicate()
            assert time.monotonic() < deadline, f"{victim} served nothing"
            time.sleep(0.1)
        subprocess.run(["docker", "pause", container], check=True, capture_output=True)
        try:
            out, err = running.communicate(timeout=120)
        finally:
            subprocess.run(["docker", "unpause", container], check=True, capture_output=True)
    report = summary(out)
    print(json.dumps({"frozen": victim, **report}), file=sys.stderr)
    assert running.returncode == 0, err
    assert report["failed"] == 0, report
    assert victim in report["served_by"], report  # it did serve, before it froze
    wait_edge_sees_all("movie")


@pytest.mark.parametrize("service", SERVICES)
def test_one_host_channel_through_the_edge_spreads_its_calls_over_every_replica(
    scaled: Replicas, service: str
) -> None:
    result = subprocess.run(
        host_load(service, 2), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = summary(result.stdout)
    assert report["failed"] == 0, report
    assert set(report["served_by"]) == set(scaled[service]), report
