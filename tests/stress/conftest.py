"""The stress suite's harness: the containers' state and memory, a second client identity, and
the legitimate clients that must keep being served while the floods run."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from grpckit.client.channel import ClientTls
from grpckit.transport.options import CHANNEL_OPTIONS
from grpckit.transport.tls import channel_credentials
from tests.chaos.conftest import target
from tests.conftest import ROOT
from tests.e2e.test_compose import compose

SERVERS = ("cheese", "movie", "soccer")
# Watched for peaks too (its limit comes from them), never held to a baseline.
WATCHED = (*SERVERS, "edge")
# The floods' identity: the one every user of the stack has (certs/client.crt).
FLOOD_TLS = ClientTls(ROOT / "certs/ca.crt", ROOT / "certs/client.crt", ROOT / "certs/client.key")
MiB = 1024 * 1024


def report(name: str, **figures: object) -> None:
    print(json.dumps({"stress": name, **figures}), flush=True)


# ---- The containers -----------------------------------------------------------------------


def container(service: str) -> str:
    found = compose("ps", "--quiet", service).stdout.split()
    assert len(found) == 1, f"expected one {service} container, found {found}"
    return found[0]


@dataclass(frozen=True)
class State:
    id: str
    restarts: int
    oom_killed: bool
    running: bool


def states() -> dict[str, State]:
    ids = {service: container(service) for service in WATCHED}
    out = subprocess.run(
        ["docker", "inspect", *ids.values()], capture_output=True, text=True, check=True
    ).stdout
    by_id = {item["Id"]: item for item in json.loads(out)}
    found = {}
    for service, short in ids.items():
        [item] = [v for k, v in by_id.items() if k.startswith(short)]
        found[service] = State(
            item["Id"],
            item["RestartCount"],
            item["State"]["OOMKilled"],
            item["State"]["Running"],
        )
    return found


def cpu_seconds() -> dict[str, float]:
    """CPU time each container has used so far, from its cgroup (v1 or v2): the difference
    over a flood is what the flood cost each part of the stack."""
    ids = {service: container(service) for service in WATCHED}
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{.Id}}", *ids.values()],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    found = {}
    for service, full in zip(ids, out, strict=True):
        v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{full}/cpuacct.usage")
        v2 = Path(f"/sys/fs/cgroup/system.slice/docker-{full}.scope/cpu.stat")
        if v1.exists():
            found[service] = int(v1.read_text()) / 1e9
        else:
            usage_usec = v2.read_text().split()[1]  # "usage_usec N" comes first
            found[service] = int(usage_usec) / 1e6
    return found


def memory_mib() -> dict[str, float]:
    return {s: used for s, (used, _) in usage().items() if s in SERVERS}


def usage() -> dict[str, tuple[float, int]]:
    """What `docker stats` calls the containers' memory use (page cache excluded) and their
    process count, one call for all three: about a second, so it is also the sampling
    period of MemoryWatch."""
    ids = {container(service): service for service in WATCHED}
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{json .}}", *ids],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    found = {}
    for line in out.splitlines():
        stats = json.loads(line)
        [service] = [s for short, s in ids.items() if stats["ID"].startswith(short[:12])]
        used = stats["MemUsage"].split("/")[0].strip()
        number, unit = float(used.rstrip("KMGiB")), used.lstrip("0123456789.")
        scale = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / MiB}[unit]
        found[service] = (number * scale, int(stats["PIDs"]))
    return found


class MemoryWatch:
    """Samples every server's memory and process count (threads included) on a thread until
    stopped; keeps the peak of each."""

    def __init__(self) -> None:
        self.peak: dict[str, float] = dict.fromkeys(WATCHED, 0.0)
        self.peak_pids: dict[str, int] = dict.fromkeys(WATCHED, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for service, (used, pids) in usage().items():
                self.peak[service] = max(self.peak[service], used)
                self.peak_pids[service] = max(self.peak_pids[service], pids)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def mint_identity(directory: Path, name: str) -> ClientTls:
    """A client certificate for `name` (CN and DNS SAN), signed by the stack's CA with the
    same extensions as certs/gen-certs.sh gives `client`."""
    key, csr, crt, ext = (directory / f"{name}.{x}" for x in ("key", "csr", "crt", "ext"))
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = clientAuth\n"
        f"subjectAltName = DNS:{name}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    ca = ROOT / "certs"
    for command in (
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key],
        ["openssl", "req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca / "ca.crt", "-CAkey", ca / "ca.key",
         "-days", "2", "-sha256", "-set_serial", str(int(time.time() * 1000)), "-extfile", ext,
         "-out", crt],
    ):  # fmt: skip
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return ClientTls(ca / "ca.crt", crt, key)


# The floods run in this process, on the same 2-core host as the stack and the legitimate
# clients. A real attacker's CPU is not the stack's: the flood yields the host's CPU to
# everything else, so what is measured is what the stack does with the flood, not the
# flood's own client work (decrypting hundreds of MB of frames) starving the others.
FLOOD_NICENESS = 19


@pytest.fixture(scope="session", autouse=True)
def flood_yields_the_cpu() -> None:
    """Every thread of this process at FLOOD_NICENESS (Linux sets it per thread; threads
    made later inherit it)."""
    for task in Path("/proc/self/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), FLOOD_NICENESS)


def normal_priority() -> None:
    """The legitimate clients' process runs at the usual priority, which takes the
    privilege to lower a niceness (root, as `make stress` runs); without it, at the flood's."""
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)


@pytest.fixture(scope="session")
def viewer_tls(tmp_path_factory: pytest.TempPathFactory) -> ClientTls:
    """The legitimate clients' own identity, so that per-identity budgets spent by the floods
    (identity `client`) are not theirs."""
    return mint_identity(tmp_path_factory.mktemp("viewer-pki"), "viewer")


def own_channel(service: str, tls: ClientTls = FLOOD_TLS) -> grpc.aio.Channel:
    """A channel on a connection of its own, with open_channel's options otherwise.

    gRPC shares one connection between every channel with the same target and arguments;
    `open_channel` channels would all ride one, and a flood of connections would be none.
    """
    options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    credentials = channel_credentials(tls.ca, tls.cert, tls.key)
    return grpc.aio.secure_channel(target(service), credentials, options=options)


# ---- The legitimate clients (tests/stress/legitimate.py) ---------------------------------


@dataclass
class Served:
    """What the legitimate clients saw, judged over the flood's window only."""

    window: tuple[float, float]
    # (started, ended, frames per second, frames skipped) of each whole stream watched.
    streams: list[tuple[float, float, float, int]]
    # When each of the viewer's frames arrived.
    arrivals: list[float]
    viewer_errors: list[str]
    # (started, seconds) of each unary call that succeeded, per service.
    calls: dict[str, list[tuple[float, float]]]
    call_errors: dict[str, list[str]]

    @classmethod
    def parse(cls, window: tuple[float, float], line: str) -> Served:
        seen = json.loads(line)
        return cls(
            window,
            [(s, e, fps, skipped) for s, e, fps, skipped in seen["streams"]],
            seen["arrivals"],
            seen["viewer_errors"],
            {name: [(s, d) for s, d in calls] for name, calls in seen["calls"].items()},
            seen["call_errors"],
        )

    @property
    def rates(self) -> list[float]:
        """Frames per second of every whole stream that overlapped the flood."""
        start, end = self.window
        return [fps for s, e, fps, _ in self.streams if s <= end and e >= start]

    @property
    def per_second(self) -> list[int]:
        """Frames the viewer received in each whole second of the flood's window: a stall a
        whole stream's average hides shows here."""
        start, end = self.window
        seconds = [0] * int(end - start)
        for arrived in self.arrivals:
            second = int(arrived - start)
            if 0 <= second < len(seconds):
                seconds[second] += 1
        return seconds

    @property
    def skipped(self) -> int:
        start, end = self.window
        return sum(skipped for s, e, _, skipped in self.streams if s <= end and e >= start)

    def p99(self, service: str) -> float:
        """Of the calls started while the flood ran."""
        start, end = self.window
        during = [d for s, d in self.calls[service] if start <= s <= end]
        return statistics.quantiles(during, n=100)[98] if len(during) > 1 else float("nan")

    def figures(self) -> dict[str, object]:
        start, end = self.window
        return {
            "viewer_streams": len(self.rates),
            "viewer_worst_fps": round(min(self.rates), 2) if self.rates else None,
            "viewer_worst_second": min(self.per_second, default=None),
            "viewer_frames_each_second": self.per_second,
            "viewer_skipped": self.skipped,
            "viewer_errors": self.viewer_errors[:3],
            "p99_ms": {s: round(self.p99(s) * 1000, 1) for s in self.calls},
            "calls": {s: sum(start <= t <= end for t, _ in c) for s, c in self.calls.items()},
            "call_errors": {s: e[:3] for s, e in self.call_errors.items()},
        }


@pytest.fixture(scope="module")
def baseline() -> dict[str, float]:
    """Each server's memory before any flood, after the smoke (every RPC, a match watched) so
    that what every server allocates once and keeps is in it."""
    # --no-deps: compose must not recreate the servers it runs against.
    compose("--profile", "tools", "run", "--rm", "--no-deps", "client", "smoke", timeout=120)
    # The least of three samples: a server may still be giving back what the smoke took.
    samples = [memory_mib() for _ in range(3)]
    return {s: min(sample[s] for sample in samples) for s in SERVERS}
