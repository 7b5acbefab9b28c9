"""The stress suite's harness: the containers' state and memory, a second client identity, and
the legitimate clients that must keep being served while the floods run."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from api import cheese_pb2, cheese_pb2_grpc, movie_pb2, movie_pb2_grpc, soccer_pb2, soccer_pb2_grpc
from grpckit.channel import ClientTls
from grpckit.options import CHANNEL_OPTIONS
from grpckit.tls import channel_credentials
from tests.chaos.conftest import MARTIAN, target
from tests.conftest import ROOT
from tests.e2e.test_compose import compose

SERVERS = ("cheese", "movie", "soccer")
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
    ids = {service: container(service) for service in SERVERS}
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


def memory_mib() -> dict[str, float]:
    """What `docker stats` calls the containers' memory use (page cache excluded), one call
    for all three: about a second, so it is also the sampling period of MemoryWatch."""
    ids = {container(service): service for service in SERVERS}
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
        found[service] = number * {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / MiB}[unit]
    return found


class MemoryWatch:
    """Samples every server's memory on a thread until stopped; keeps the peak of each."""

    def __init__(self) -> None:
        self.peak: dict[str, float] = dict.fromkeys(SERVERS, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for service, used in memory_mib().items():
                self.peak[service] = max(self.peak[service], used)

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


# ---- The legitimate clients -----------------------------------------------------------------


@dataclass
class Viewer:
    """Watches the demo match in real time (JPEG) again and again; each whole stream's frames
    per second is recorded. A viewer that falls behind loses frames, so its rate drops."""

    stub: soccer_pb2_grpc.SoccerAsyncStub
    rates: list[float] = field(default_factory=list)
    frames: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stop.is_set():
            call = self.stub.Watch(soccer_pb2.Match(id="demo", encoding=soccer_pb2.JPEG))
            started, frames, whole = time.monotonic(), 0, True
            try:
                async for video in call:
                    frames += 1
                    self.frames += 1
                    self.skipped += video.skipped_frames
                    if self.stop.is_set():
                        whole = False
                        call.cancel()
                        break
            except grpc.aio.AioRpcError as error:
                self.errors.append(f"{error.code().name}: {error.details()}")
                continue
            # The first frame leaves at once and the last 1/30 s before the end: intervals.
            if whole and frames > 30:
                self.rates.append((frames - 1) / (time.monotonic() - started))


@dataclass
class Caller:
    """Unary calls at a steady rate; every latency is kept, every failure is an error."""

    service: str
    channel: grpc.aio.Channel
    rate: float
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _call(self) -> None:
        started = time.monotonic()
        try:
            if self.service == "cheese":
                await cheese_pb2_grpc.CheeseServiceStub(self.channel).Order(
                    cheese_pb2.CheeseRequest(), timeout=10
                )
            else:
                await movie_pb2_grpc.MovieStub(self.channel).GetMovieByID(
                    movie_pb2.MovieID(id=MARTIAN), timeout=10
                )
            self.latencies.append(time.monotonic() - started)
        except grpc.aio.AioRpcError as error:
            self.errors.append(f"{error.code().name}: {error.details()}")

    async def run(self) -> None:
        # Calls start on the clock, not after the previous answer: a slow server shows up as
        # latency rather than as a lower rate.
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()
        next_call = loop.time()
        while not self.stop.is_set():
            task = asyncio.create_task(self._call())
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_call += 1 / self.rate
            await asyncio.sleep(max(0.0, next_call - loop.time()))
        await asyncio.gather(*pending)

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98]


@dataclass
class Legitimate:
    viewer: Viewer
    callers: list[Caller]

    def figures(self) -> dict[str, object]:
        return {
            "viewer_streams": len(self.viewer.rates),
            "viewer_worst_fps": round(min(self.viewer.rates), 2) if self.viewer.rates else None,
            "viewer_skipped": self.viewer.skipped,
            "viewer_errors": self.viewer.errors[:3],
            "p99_ms": {c.service: round(c.p99 * 1000, 1) for c in self.callers},
            "calls": {c.service: len(c.latencies) for c in self.callers},
            "call_errors": {c.service: c.errors[:3] for c in self.callers},
        }


@pytest.fixture(scope="module")
def baseline() -> dict[str, float]:
    """Each server's memory before any flood, after the smoke (every RPC, a match watched) so
    that what every server allocates once and keeps is in it."""
    compose("--profile", "tools", "run", "--rm", "client", "smoke", timeout=120)
    return memory_mib()
