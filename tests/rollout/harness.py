"""Rolling upgrades under the project's client's load, shared by `make rollout-test`
(tests/rollout) and the short case of `make e2e` (tests/e2e/test_rollout.py).

A case: the service at its replica count, every replica in the edge's rotation; load (and,
for soccer, viewers) started, inside the compose network and from the host through the
edge; once every one of them is under way, the upgrade (scripts/rollout.sh, or compose's
own force-recreate: the behaviour before it); then every client's own summary, which counts
its calls and how they ended, or a viewer's frames and longest gap between two of them.
"""

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.conftest import target
from tests.conftest import ROOT
from tests.e2e.test_compose import compose
from tests.e2e.test_replicas import replicas, scale

SCRIPT = ROOT / "scripts" / "rollout.sh"
# The load: 8 calls in flight, each with a 1 s deadline.
DEADLINE = "1"
CONCURRENCY = "8"


class Running:
    """A command in the background whose output lines are read as they come (by threads, so
    neither pipe fills up and blocks it)."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.command = command
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
            for pipe, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(pipe: Any, lines: list[str]) -> None:
        for line in pipe:
            lines.append(line.rstrip("\n"))

    def wait_for(self, prefix: str, within: float, stream: str = "out") -> None:
        """Until a line starting with `prefix` came, or fail at the deadline."""
        lines = self.out if stream == "out" else self.err
        deadline = time.monotonic() + within
        while not any(line.startswith(prefix) for line in list(lines)):
            self.still_running(f"{self.command} ended before {prefix!r}")
            assert time.monotonic() < deadline, f"{self.command}: no {prefix!r} in {within:g} s"
            time.sleep(0.1)

    def still_running(self, what: str) -> None:
        """Fails, saying `what` with the command's exit code and its last output, once the
        command has ended."""
        if self.process.poll() is not None:
            code, out, err = self.finish(5)
            raise AssertionError(f"{what} ({code}): {out[-1500:]}\n{err[-1500:]}")

    def finish(self, within: float) -> tuple[int, str, str]:
        returncode = self.process.wait(timeout=within)
        for reader in self._readers:
            reader.join(timeout=5)
        return returncode, "\n".join(self.out), "\n".join(self.err)

    def summary(self, within: float) -> dict[str, Any]:
        """The client's last JSON line (its summary), with its exit code."""
        returncode, out, err = self.finish(within)
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert lines, f"{self.command}: no summary (exit {returncode}): {out}\n{err}"
        record: dict[str, Any] = {**lines[-1], "exit": returncode}
        if returncode and "calls" not in record and "frames" not in record:
            record["stderr"] = err[-2000:]
        return record


def in_network(*args: str) -> list[str]:
    """The client container on the compose network (its channel balances over every replica
    Docker's DNS returns); --no-deps: compose must not touch the services' scale."""
    return ["docker", "compose", "run", "--rm", "--no-deps", "client", *args]


def from_host(service: str, *args: str) -> list[str]:
    """The client on the host, one channel to the edge's published port."""
    return [sys.executable, "-m", "client", "--target", target(service), *args]


def load(service: str, seconds: float) -> list[str]:
    return ["--timeout", DEADLINE, "load", service, "--seconds", f"{seconds:g}",
            "--concurrency", CONCURRENCY, "--every", "1"]  # fmt: skip


def watch(match: str) -> list[str]:
    return ["soccer", "watch", match, "--encoding", "jpeg"]


def edge_healthy(service: str) -> int:
    clusters = compose("exec", "-T", "edge", "curl", "-fsS", "http://127.0.0.1:9901/clusters")
    return sum(
        1 for line in clusters.stdout.splitlines()
        if line.startswith(f"{service}::") and line.endswith("::health_flags::healthy")
    )  # fmt: skip


def at_scale(service: str, count: int, within: float = 120) -> None:
    """`count` replicas of `service`, all healthy and all in the edge's rotation."""
    scale({service: count})
    deadline = time.monotonic() + within
    while len(replicas(service)) != count or edge_healthy(service) != count:
        assert time.monotonic() < deadline, f"{service}: not {count} replicas in the edge"
        time.sleep(0.5)


def rollout_command(service: str) -> list[str]:
    return [str(SCRIPT), service]


def recreate_command(service: str, count: int) -> list[str]:
    """What main did: compose replaces every replica at once, stop-first (the count given
    again, or compose would go back to the file's)."""
    return ["docker", "compose", "up", "--detach", "--force-recreate", "--no-deps", "--wait",
            "--scale", f"{service}={count}", service]  # fmt: skip


@dataclass
class Case:
    service: str
    replicas: int
    how: str  # "rollout" or "recreate"
    figures: dict[str, Any] = field(default_factory=dict)


def run_case(
    case: Case, *, load_seconds: float, match: str | None = None, page: Any = None
) -> Case:
    """Runs one upgrade under load; `case.figures` holds every client's summary.

    `match`: viewers of that match on the network and from the host, which must outlast
    the upgrade. `page`: a callable that starts the viewer page and returns another that
    waits for its figures (tests/rollout/test_rollout.py)."""
    if case.service != "edge":
        at_scale(case.service, case.replicas)
    loaded = "movie" if case.service == "edge" else case.service
    clients: dict[str, Running] = {
        "network": Running(in_network(*load(loaded, load_seconds))),
        "edge": Running(from_host(loaded, *load(loaded, load_seconds))),
    }
    if match is not None:
        clients["viewer_network"] = Running(in_network(*watch(match)))
        clients["viewer_edge"] = Running(from_host("soccer", *watch(match)))
    try:
        for name, running in clients.items():
            if name.startswith("viewer"):
                running.wait_for("served by ", 60, stream="err")
            else:
                running.wait_for('{"at"', 60)  # the first second of calls is over
        page_figures = page() if page is not None else None
        command = (
            rollout_command(case.service)
            if case.how == "rollout"
            else recreate_command(case.service, case.replicas)
        )
        started = time.monotonic()
        upgrade = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={**_environment(), "ROLLOUT_NO_BUILD": "1"},
        )  # fmt: skip
        case.figures["upgrade_seconds"] = round(time.monotonic() - started, 1)
        # On the clock of the clients' failed_at, to lay failures beside the steps.
        case.figures["upgrade_at"] = [round(started, 3), round(time.monotonic(), 3)]
        case.figures["steps"] = upgrade.stderr.splitlines()
        assert upgrade.returncode == 0, f"{command}: {upgrade.stdout}\n{upgrade.stderr}"
        # The upgrade must have happened while the clients were still at it.
        for name, running in clients.items():
            running.still_running(f"{name} ended before the upgrade did")
        for name, running in clients.items():
            case.figures[name] = running.summary(within=300)
        if page_figures is not None:
            case.figures["viewer_page"] = page_figures()
    finally:
        for running in clients.values():
            if running.process.poll() is None:
                running.process.kill()
    print(json.dumps({"rollout_case": case.how, "service": case.service,
                      "replicas": case.replicas, **case.figures}), file=sys.stderr)  # fmt: skip
    return case


def _environment() -> dict[str, str]:
    return dict(os.environ)


def refused_rollout(service: str, override: Path, within: float = 120) -> dict[str, Any]:
    """A rollout whose new replica never becomes healthy (`override`, a compose file that
    makes the server refuse to start): the script exits 1, saying why, the broken replica is
    removed and every old one still serves, under load through the edge all along."""
    before = replicas(service)
    loading = Running(from_host(service, *load(service, 25)))
    try:
        loading.wait_for('{"at"', 60)
        environment = {
            **_environment(),
            "COMPOSE_FILE": f"{os.environ.get('COMPOSE_FILE', 'docker-compose.yml')}:{override}",
            "ROLLOUT_NO_BUILD": "1",
            "ROLLOUT_TIMEOUT": "60",
        }
        result = subprocess.run(
            rollout_command(service), cwd=ROOT, capture_output=True, text=True,
            timeout=within, env=environment,
        )  # fmt: skip
        figures = loading.summary(within=120)
    finally:
        if loading.process.poll() is None:
            loading.process.kill()
    after = replicas(service)
    every = compose("ps", "--all", "--quiet", service).stdout.split()
    report = {"exit": result.returncode, "reason": _refusal(result.stderr), "load": figures}
    print(json.dumps({"rollout_case": "refused", "service": service, **report}), file=sys.stderr)
    assert result.returncode == 1, result.stderr
    assert "REFUSED" in result.stderr, result.stderr
    assert after == before, (before, after)
    assert len(every) == len(before), f"the broken replica is still there: {every}"
    assert figures["failed"] == 0, figures
    return report


def _refusal(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "REFUSED" in line]
    return lines[-1] if lines else stderr[-500:]
