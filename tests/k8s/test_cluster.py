"""The servers on a real cluster: ready through their probes, balanced over every replica,
and no call lost to the disruptions a cluster brings (a pod deleted, a rollout, a drain)."""

import collections
import json
import queue
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from tests.k8s.conftest import (
    SERVERS,
    Cluster,
    figure,
    get,
    kubectl,
    multi_replica,
    ready,
    until,
    wait_job,
)

pytestmark = pytest.mark.k8s

T = TypeVar("T")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
MAINTENANCE_PORT = 8081
# Each round of load is one `client load` process; rounds go on until the disruption is over
# and one more has run, at most this many.
MAX_ROUNDS = 30


@dataclass
class Load:
    rounds: int = 0
    calls: int = 0
    failed: int = 0
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    served_by: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, summary: dict[str, Any]) -> None:
        self.rounds += 1
        self.calls += summary["calls"]
        self.failed += summary["failed"]
        self.codes.update(summary["codes"])
        self.served_by.update(summary["served_by"])

    def record(self) -> dict[str, Any]:
        return {"calls": self.calls, "failed": self.failed, "codes": dict(self.codes),
                "served_by": dict(self.served_by), "rounds": self.rounds}  # fmt: skip


def summary_of(out: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines, f"no summary in {out!r}"
    last: dict[str, Any] = lines[-1]
    return last


def under_load(
    cluster: Cluster, service: str, disruption: Callable[[], T], *, seconds: int = 6,
    concurrency: int = 4,
) -> tuple[Load, T]:  # fmt: skip
    """`disruption()` while the toolbox calls `service` round after round; the calls of
    every round, up to the one that was running when the disruption ended."""
    load = Load()
    over = threading.Event()
    started = threading.Event()
    errors: list[str] = []

    def rounds() -> None:
        for _ in range(MAX_ROUNDS):
            process = cluster.start_client(
                "load", service, "--seconds", str(seconds), "--concurrency", str(concurrency)
            )
            started.set()
            out, err = process.communicate(timeout=seconds + 120)
            try:
                load.add(summary_of(out))
            except AssertionError:
                errors.append(err)
                return
            if over.is_set():
                return

    thread = threading.Thread(target=rounds, name=f"load-{service}")
    thread.start()
    try:
        started.wait(30)
        result = disruption()
    finally:
        over.set()
        thread.join(timeout=(seconds + 120) * 2)
    assert not errors, errors
    assert load.calls > 0
    return load, result


def wait_serving(pod: str, method: str) -> None:
    """Until `pod` has logged a call of `method` in the last seconds (its access log): the
    load has reached it, so a disruption now falls among calls."""
    until(
        lambda: method in kubectl("logs", pod, "--since=3s"),
        within=60,
        what=f"{pod} serving {method}",
    )


def test_every_pod_is_ready_through_native_grpc_probes(cluster: Cluster) -> None:
    for server in SERVERS:
        pods = cluster.pods(server)
        assert len(pods) == cluster.replicas
        for pod in pods:
            assert ready(pod), pod["metadata"]["name"]
            [container] = pod["spec"]["containers"]
            for probe in PROBES:
                assert container[probe]["grpc"]["port"] == MAINTENANCE_PORT, probe
            [status] = pod["status"]["containerStatuses"]
            assert status["restartCount"] == 0, pod["metadata"]["name"]
    figure("ready", overlay=cluster.overlay, available_s=cluster.available_after)


def test_smoke_job_passes_on_its_first_pod(cluster: Cluster) -> None:
    job = wait_job("client-smoke", 300)
    logs = kubectl("logs", "job/client-smoke")
    assert job["status"].get("succeeded") == 1, logs
    assert not job["status"].get("failed"), f"a pod of the smoke failed first:\n{logs}"
    pods = get("pods", "--selector", "job-name=client-smoke")["items"]
    assert len(pods) == 1
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert lines[-1] == {"check": "all", "ok": True, "detail": "0 failed"}
    waited = {line["check"]: line["detail"] for line in lines if line["check"].endswith(" ready")}
    assert set(waited) == {f"{server} ready" for server in SERVERS}
    figure("smoke", overlay=cluster.overlay, checks=len(lines), waited=waited)


@pytest.mark.parametrize("service", SERVERS)
def test_calls_spread_over_every_replica(cluster: Cluster, service: str) -> None:
    [summary] = cluster.client("load", service, "--seconds", "4", "--concurrency", "6")
    assert summary["failed"] == 0, summary
    assert set(summary["served_by"]) == set(cluster.ready_pods(service))
    figure("spread", overlay=cluster.overlay, service=service, calls=summary["calls"],
           served_by=summary["served_by"])  # fmt: skip


def test_a_pod_deleted_under_unary_load_fails_no_call(cluster: Cluster) -> None:
    multi_replica(cluster)
    victim = cluster.ready_pods("movie")[0]

    def delete() -> None:
        wait_serving(victim, "GetMovieByID")
        kubectl("delete", "pod", victim)

    load, _ = under_load(cluster, "movie", delete)
    cluster.wait_available()
    figure("pod deleted", overlay=cluster.overlay, victim=victim, **load.record())
    assert load.failed == 0, load.record()
    assert victim in load.served_by
    assert len(load.served_by) >= cluster.replicas


@pytest.mark.parametrize("service", ["cheese", "movie"])
def test_a_rollout_restart_under_load_fails_no_call(cluster: Cluster, service: str) -> None:
    before = set(cluster.ready_pods(service))

    def restart() -> None:
        wait_serving(min(before), "Order" if service == "cheese" else "GetMovieByID")
        kubectl("rollout", "restart", f"deployment/{service}")
        kubectl("rollout", "status", f"deployment/{service}", "--timeout=300s", timeout=310)

    load, _ = under_load(cluster, service, restart)
    cluster.wait_available()
    after = set(cluster.ready_pods(service))
    figure("rollout restart", overlay=cluster.overlay, service=service, **load.record())
    assert not before & after
    assert load.failed == 0, load.record()
    assert set(load.served_by) & before, "no call before the rollout"
    assert set(load.served_by) & after, "no call reached a new pod"


def test_a_viewer_resumes_on_another_replica(cluster: Cluster) -> None:
    multi_replica(cluster)
    viewer = cluster.start_client("soccer", "watch", "demo", "--encoding", "jpeg")
    notes: queue.Queue[str] = queue.Queue()
    assert viewer.stderr is not None

    def read() -> None:
        for line in viewer.stderr or ():
            notes.put(line)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        first = ""
        while not first.startswith("served by "):
            first = notes.get(timeout=60)
        server = first.removeprefix("served by ").strip()
        # Killed a second after SIGTERM, as a pod lost with its node: a graceful stop would
        # let the stream run on for the server's 10 s grace, the rest of the demo match.
        kubectl("delete", "pod", server, "--grace-period=1")
        out, _ = viewer.communicate(timeout=180)
    finally:
        viewer.kill()
        reader.join(timeout=10)
    summary = summary_of(out)
    figure("viewer resumed", overlay=cluster.overlay, **{k: summary[k] for k in (
        "frames", "first_frame", "last_frame", "skipped", "resumed", "served_by")})  # fmt: skip
    assert viewer.returncode == 0
    assert summary["resumed"] >= 1
    assert summary["served_by"][0] == server
    assert summary["served_by"][-1] != server
    assert summary["skipped"] == 0
    assert summary["frames"] == summary["last_frame"] - summary["first_frame"] + 1
    cluster.wait_available()


def test_a_drain_is_held_by_the_disruption_budgets(cluster: Cluster) -> None:
    multi_replica(cluster)
    nodes = [n["metadata"]["name"] for n in get("nodes")["items"]]
    if len(nodes) != 1:
        pytest.skip("pods evicted from one node of several start on another: nothing holds")
    [node] = nodes

    def drain() -> subprocess.CompletedProcess[str]:
        wait_serving(cluster.ready_pods("movie")[0], "GetMovieByID")
        # The servers only: the toolbox is a bare pod, which drain would refuse to delete.
        return subprocess.run(
            ["kubectl", "drain", node, "--pod-selector",
             f"app.kubernetes.io/name in ({','.join(SERVERS)})",
             "--delete-emptydir-data", "--ignore-daemonsets", "--timeout=40s"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    try:
        load, drained = under_load(cluster, "movie", drain)
        ready_left = {server: len(cluster.ready_pods(server)) for server in SERVERS}
        budgets = {
            pdb["metadata"]["name"]: pdb["status"]["disruptionsAllowed"]
            for pdb in get("poddisruptionbudgets")["items"]
        }
    finally:
        kubectl("uncordon", node)
    cluster.wait_available()
    figure("drain", overlay=cluster.overlay, exit=drained.returncode, ready_left=ready_left,
           disruptions_allowed=budgets, **load.record())  # fmt: skip
    assert drained.returncode != 0, drained.stdout
    assert "disruption budget" in drained.stdout + drained.stderr
    # One pod of each server evicted, its replacement unschedulable on the cordoned node.
    assert ready_left == {server: cluster.replicas - 1 for server in SERVERS}
    assert budgets == {server: 0 for server in SERVERS}
    assert load.failed == 0, load.record()


MEMORY = """
import pathlib
v1 = pathlib.Path("/sys/fs/cgroup/memory")
files = ("memory.limit_in_bytes", "memory.max_usage_in_bytes") if v1.is_dir() else \
    ("memory.max", "memory.peak")
base = v1 if v1.is_dir() else pathlib.Path("/sys/fs/cgroup")
print(*(int((base / name).read_text()) for name in files))
"""
UNITS = {"Mi": 2**20, "Gi": 2**30}


def test_memory_limits_hold_under_a_bounded_flood(cluster: Cluster) -> None:
    floods = {
        "cheese": ("--concurrency", "100"),
        "movie": ("--concurrency", "200"),
        "soccer": ("--concurrency", "24"),
    }
    running = {
        service: cluster.start_client("load", service, "--seconds", "10", *args)
        for service, args in floods.items()
    }
    results = {service: summary_of(p.communicate(timeout=180)[0]) for service, p in running.items()}
    figure("flood", overlay=cluster.overlay, **{
        s: {"calls": r["calls"], "codes": r["codes"]} for s, r in results.items()})  # fmt: skip
    peaks = {}
    for server in SERVERS:
        for pod in cluster.pods(server):
            name = pod["metadata"]["name"]
            [container] = pod["spec"]["containers"]
            [status] = pod["status"]["containerStatuses"]
            assert status["restartCount"] == 0, name
            assert "terminated" not in status.get("lastState", {}), status["lastState"]
            text = container["resources"]["limits"]["memory"]
            limit = int(text[:-2]) * UNITS[text[-2:]]
            out = kubectl("exec", name, "--", "python", "-c", MEMORY)
            enforced, peak = (int(x) for x in out.split())
            assert enforced == limit, name
            assert peak < limit, name
            peaks[name] = f"{peak / 2**20:.0f} of {text}"
    figure("memory peaks", overlay=cluster.overlay, **peaks)
    # Every server still answers every call.
    for service in SERVERS:
        [after] = cluster.client("load", service, "--seconds", "2", "--concurrency", "2")
        assert after["failed"] == 0, after


FETCH = """
import sys, urllib.request
print(urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/metrics", timeout=10).read().decode())
"""


def test_every_server_serves_metrics_where_its_annotations_say(cluster: Cluster) -> None:
    for server in SERVERS:
        for pod in cluster.pods(server):
            name = pod["metadata"]["name"]
            annotations = pod["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/path"] == "/metrics"
            port = annotations["prometheus.io/port"]
            text = kubectl("exec", "toolbox", "--", "python", "-c", FETCH, pod["status"]["podIP"],
                           port)  # fmt: skip
            assert "# TYPE" in text
            target = [line for line in text.splitlines() if line.startswith("target_info{")]
            assert target and name in target[0], target
    figure("metrics", overlay=cluster.overlay, pods=cluster.replicas * len(SERVERS))
