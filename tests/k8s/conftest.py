"""The overlays deployed on a real cluster (make k8s-e2e): the one kubectl reaches.

Each overlay in turn (demo, then production with three replicas of each server) is applied
to a clean namespace the way deploy/k8s/README.md tells users, after scripts/k8s-secrets.sh;
the tests then act on it with kubectl and call the servers from a client pod inside the
cluster (toolbox.yaml), with the client's own commands. Every wait has a deadline.
"""

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NAMESPACE = "grpcdemo"
SERVERS = ("cheese", "movie", "soccer")
OVERLAYS = {
    "demo": ROOT / "deploy/k8s/overlays/demo",
    "production": HERE / "production",
}
T = TypeVar("T")


def figure(name: str, **values: object) -> None:
    """A measured figure, on a line of its own in the run's output (make k8s-e2e shows it)."""
    print(f"k8s-e2e figure: {name} {json.dumps(values, sort_keys=True)}", flush=True)


def kubectl(*args: str, timeout: float = 180, check: bool = True) -> str:
    result = subprocess.run(
        ["kubectl", "--namespace", NAMESPACE, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: exit {result.returncode}\n{result.stderr}")
    return result.stdout


def get(*args: str) -> Any:
    return json.loads(kubectl("get", *args, "--output", "json"))


def until(check: Callable[[], T | None], *, within: float, what: str) -> T:
    """Polls `check` until it returns a true value; fails naming `what` at the deadline."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {within:g} s: {what}"
        time.sleep(0.5)


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@dataclass
class Cluster:
    overlay: str
    replicas: int
    # Seconds from `kubectl apply` until every Deployment was Available.
    available_after: float

    def pods(self, app: str) -> list[dict[str, Any]]:
        """The pods of `app` that are not being deleted."""
        items = get("pods", "--selector", f"app.kubernetes.io/name={app}")["items"]
        return [p for p in items if "deletionTimestamp" not in p["metadata"]]

    def ready_pods(self, app: str) -> list[str]:
        return sorted(p["metadata"]["name"] for p in self.pods(app) if ready(p))

    def client(self, *args: str, timeout: float = 120) -> list[dict[str, Any]]:
        """`python -m client ARGS` in the toolbox pod: its JSON lines (it must exit 0)."""
        out = kubectl("exec", "toolbox", "--", "python", "-m", "client", *args, timeout=timeout)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def start_client(self, *args: str) -> subprocess.Popen[str]:
        """The same, left running: its stdout and stderr are pipes."""
        return subprocess.Popen(
            ["kubectl", "--namespace", NAMESPACE, "exec", "toolbox", "--",
             "python", "-m", "client", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def wait_available(self, within: float = 300) -> None:
        for server in SERVERS:
            kubectl("rollout", "status", f"deployment/{server}", f"--timeout={within:g}s",
                    timeout=within + 10)  # fmt: skip
        for server in SERVERS:
            until(
                lambda s=server: len(self.ready_pods(s)) == self.replicas,  # type: ignore[misc]
                within=within,
                what=f"{self.replicas} ready {server} pods",
            )


def delete_namespace() -> None:
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
            "--timeout=300s", timeout=320)  # fmt: skip
    kubectl("delete", "persistentvolume", "grpcdemo-soccer-videos", "--ignore-not-found",
            "--wait=true", "--timeout=120s", timeout=140)  # fmt: skip


def wait_job(name: str, within: float) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = get("job", name)
        status = job.get("status", {})
        return job if status.get("succeeded") or status.get("failed") else None

    return until(finished, within=within, what=f"job {name} finished")


def deploy(overlay: str) -> Cluster:
    delete_namespace()
    subprocess.run([ROOT / "scripts/k8s-secrets.sh", "--namespace", NAMESPACE], check=True)
    replicas = 1 if overlay == "demo" else 3
    if overlay == "production":
        kubectl("apply", "--server-side", "--filename", str(HERE / "videos.yaml"))
        job = wait_job("soccer-videos-fill", 300)
        assert job["status"].get("succeeded") == 1, kubectl("logs", "job/soccer-videos-fill")
    started = time.monotonic()
    kubectl("apply", "--server-side", "--kustomize", str(OVERLAYS[overlay]))
    cluster = Cluster(overlay, replicas, 0.0)
    cluster.wait_available()
    cluster.available_after = round(time.monotonic() - started, 1)
    kubectl("apply", "--server-side", "--filename", str(HERE / "toolbox.yaml"))
    kubectl("wait", "--for=condition=Ready", "pod/toolbox", "--timeout=180s", timeout=190)
    figure("deployed", overlay=overlay, replicas=replicas, available_s=cluster.available_after)
    return cluster


@pytest.fixture(scope="session", params=list(OVERLAYS))
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    deployed = deploy(request.param)
    yield deployed
    failed = request.session.testsfailed
    if failed:
        # What a reader needs to see why, before the namespace goes.
        print(kubectl("get", "all,pdb,pvc,events", "--output", "wide", check=False))
    delete_namespace()


def multi_replica(cluster: Cluster) -> None:
    if cluster.replicas < 2:
        pytest.skip(f"{cluster.overlay}: one replica of each server, none to fail over to")
