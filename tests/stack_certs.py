"""What the running stack's peers present in their handshakes, and the edge's SDS counter:
the e2e renewal test and the rotation test read the stack through these."""

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from api import cheese_pb2, cheese_pb2_grpc, movie_pb2, movie_pb2_grpc, soccer_pb2, soccer_pb2_grpc
from grpckit.client.channel import ClientTls, RenewingChannel, open_channel
from tests.certs_util import presented
from tests.conftest import ROOT

CERTS = ROOT / "certs"
SERVERS = {"cheese": 50051, "movie": 50052, "soccer": 50053}
# The host's client identity, trusting every CA (two during a CA rotation).
HOST_TLS = ClientTls(
    ca=CERTS / "ca-bundle.crt", cert=CERTS / "client.crt", key=CERTS / "client.key"
)

# Run inside the client image on the compose network: for each line read, one handshake
# with each server by name, with the client identity its volume holds at that moment.
_PROBE = """
import json, socket, ssl, sys
from cryptography import x509
for _ in sys.stdin:
    seen = {}
    for name, port in SERVERS.items():
        try:
            context = ssl.create_default_context(cafile="/run/secrets/ca.crt")
            context.load_cert_chain("/run/secrets/client.crt", "/run/secrets/client.key")
            context.set_alpn_protocols(["h2"])
            with socket.create_connection((name, port), timeout=5) as raw:
                with context.wrap_socket(raw, server_hostname=name) as tls:
                    der = tls.getpeercert(binary_form=True)
            seen[name] = format(x509.load_der_x509_certificate(der).serial_number, "X")
        except (OSError, ssl.SSLError, ValueError) as error:
            seen[name] = "error: " + str(error)
    print(json.dumps(seen), flush=True)
""".replace("SERVERS", repr(SERVERS))


def edge_serial(within: float = 15) -> str:
    """The serial of the certificate the edge shows the host on cheese's port, or the last
    handshake's error if none succeeds within `within` seconds. The renewer renames a
    leaf's key and certificate into certs/ one after the other, so a read between the two
    renames meets a pair that does not match: that is the host's reading, not the edge."""
    assert HOST_TLS.cert and HOST_TLS.key
    deadline = time.monotonic() + within
    while True:
        try:
            certificate = presented("127.0.0.1", 50051, HOST_TLS.ca, HOST_TLS.cert, HOST_TLS.key)
            return format(certificate.serial_number, "X")
        except (OSError, ValueError) as error:
            if time.monotonic() >= deadline:
                return f"error: {type(error).__name__}: {error}"
        time.sleep(0.2)


def sds_updates() -> dict[str, int]:
    """Envoy's ssl_context_update_by_sds counters, by listener and cluster."""
    text = subprocess.run(
        ["docker", "compose", "exec", "-T", "edge", "curl", "-fsS",
         "http://127.0.0.1:9901/stats?filter=ssl_context_update_by_sds"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    counters = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        counters[name] = int(value)
    return counters


def started(services: list[str]) -> dict[str, Any]:
    """Each service's containers: StartedAt and RestartCount, to prove nothing restarted."""
    ids = subprocess.run(
        ["docker", "compose", "ps", "--quiet", *services],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    output = subprocess.run(
        ["docker", "inspect", "--format",
         "{{.Name}} {{.State.StartedAt}} {{.RestartCount}}", *ids],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {
        name: (at, int(count)) for name, at, count in (line.split() for line in output.splitlines())
    }


class Probe:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    async def serials(self) -> dict[str, str]:
        """What each server presents now (a serial, or the error of the handshake)."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin and stdout
        stdin.write(b"\n")
        await stdin.drain()
        line = await asyncio.wait_for(stdout.readline(), 60)
        assert line, "the probe container exited"
        answer: dict[str, str] = json.loads(line)
        return answer


@asynccontextmanager
async def server_probe() -> AsyncIterator[Probe]:
    """A client container on the compose network that handshakes with every server on
    request (a container start costs a second or more; this is one for the whole test)."""
    process = await asyncio.create_subprocess_exec(
        "docker", "compose", "run", "--rm", "-T", "--no-deps", "--entrypoint", "python",
        "client", "-u", "-c", _PROBE,
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield Probe(process)
    finally:
        assert process.stdin
        process.stdin.close()
        await asyncio.wait_for(process.wait(), 60)


class StackLoad:
    """Calls through the edge from the host, on channels that follow certs/ as the renewer
    renews it: cheese Order and movie GetMovieByID, and short soccer Watch streams. Each
    call has a deadline; every caller stops at `stop()` or after `limit` calls in all."""

    def __init__(self, callers: int = 3, limit: int = 1_000_000) -> None:
        self.channels = {
            name: open_channel(f"127.0.0.1:{port}", HOST_TLS, watch_health=False)
            for name, port in SERVERS.items()
        }
        cheese = cheese_pb2_grpc.CheeseServiceStub(self.channels["cheese"])
        movie = movie_pb2_grpc.MovieStub(self.channels["movie"])
        soccer = soccer_pb2_grpc.SoccerStub(self.channels["soccer"])

        async def order() -> None:
            await cheese.Order(cheese_pb2.CheeseRequest(type=cheese_pb2.BRIE), timeout=10)

        async def get() -> None:
            await movie.GetMovieByID(
                movie_pb2.MovieID(id="a8034f44-aee4-44cf-b32c-74cf452aaaae"), timeout=10
            )

        async def watch() -> None:
            # A viewer joins the live broadcast where it is: near the match's end it gets
            # fewer than three frames, and the stream still ends OK.
            match = soccer_pb2.Match(id="demo", encoding=soccer_pb2.JPEG, max_frames=3)
            async for _ in soccer.Watch(match, timeout=10):
                self.frames += 1

        self.calls = {"cheese": order, "movie": get, "soccer": watch}
        self.ok = dict.fromkeys(SERVERS, 0)
        self.frames = 0
        self.failed: list[str] = []
        self._limit = limit
        self._stop = asyncio.Event()
        self._progress = asyncio.Condition()
        self._tasks = [
            asyncio.create_task(self._caller(name)) for name in SERVERS for _ in range(callers)
        ]

    @property
    def made(self) -> int:
        return sum(self.ok.values()) + len(self.failed)

    async def _caller(self, name: str) -> None:
        call = self.calls[name]
        while not self._stop.is_set() and self.made < self._limit:
            try:
                await call()
                self.ok[name] += 1
            except grpc.aio.AioRpcError as error:
                self.failed.append(f"{name}: {error.code().name}: {error.details()}")
            async with self._progress:
                self._progress.notify_all()

    async def calls_done(self, more: int, *, within: float = 60) -> None:
        """Returns once `more` calls have ended (any way); fails after `within` seconds."""
        target = self.made + more
        async with self._progress:
            await asyncio.wait_for(self._progress.wait_for(lambda: self.made >= target), within)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        for channel in self.channels.values():
            await channel.close(None)

    def renewals(self) -> int:
        return min(c.renewals for c in self.channels.values() if isinstance(c, RenewingChannel))
