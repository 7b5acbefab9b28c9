"""Fixtures: a throwaway PKI, small generated videos, and servers on ephemeral ports."""

import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from cheese.server import Cheese, CheeseSettings
from grpckit.client.channel import ClientTls, open_channel
from grpckit.config import LogLevel, ServerSettings
from grpckit.lifecycle.server import Server, running
from grpckit.lifecycle.service import Service
from movie.server import DEFAULT_CATALOGUE, Movies, MovieSettings
from soccer import demo_video
from soccer.server import Soccer, SoccerSettings

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def make_pki(directory: Path, *options: str) -> Path:
    subprocess.run([str(ROOT / "certs" / "gen-certs.sh"), str(directory), *options], check=True)
    return directory


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, unrelated CA: its client certificates must be refused."""
    return make_pki(tmp_path_factory.mktemp("foreign-pki"))


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo: 720p like the real one but short; small: 1 s at 320x180; broken: not a video."""
    directory = tmp_path_factory.mktemp("videos")
    demo_video.generate(directory / "demo.mp4", seconds=0.5, fps=30)
    demo_video.generate(directory / "small.mp4", seconds=1.0, fps=30, width=320, height=180)
    (directory / "broken.mp4").write_bytes(b"this is not an mp4 file" * 100)
    return directory


def server_settings(
    pki: Path, service: str, *, tls: bool = True, grace: float = 2.0, policy: Path | None = None
) -> ServerSettings:
    """A server on a free loopback port, with the certificate of `service` from `pki` and
    the authorization policy `service` ships (another with `policy`)."""
    return ServerSettings(
        host="127.0.0.1",
        port=0,
        tls_cert=pki / f"{service}.crt",
        tls_key=pki / f"{service}.key",
        tls_ca=pki / "ca.crt",
        authz_policy=policy or ROOT / service / "authz.json",
        insecure=not tls,
        grace=grace,
        log_level=LogLevel.DEBUG,
    )


def client_tls(pki: Path, *, with_cert: bool = True, identity: str = "client") -> ClientTls:
    """The CA, and the certificate and key of `identity` from `pki` (client, monitor, or a
    server's, which the PKI issues for serving only)."""
    if not with_cert:
        return ClientTls(ca=pki / "ca.crt")
    return ClientTls(ca=pki / "ca.crt", cert=pki / f"{identity}.crt", key=pki / f"{identity}.key")


Connect = Callable[..., grpc.aio.Channel]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Opens channels to localhost:port (mutual TLS by default) and closes them after the test."""
    channels: list[grpc.aio.Channel] = []

    def _connect(
        port: int, tls: ClientTls | None, *, watch_health: bool = True
    ) -> grpc.aio.Channel:
        channel = open_channel(f"localhost:{port}", tls, watch_health=watch_health)
        channels.append(channel)
        return channel

    yield _connect
    for channel in channels:
        await channel.close(None)


async def eventually(check: Callable[[], Awaitable[T]], *, within: float = 10.0) -> T:
    """Retry `check` until it returns without raising, or re-raise its error at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await check()
        except (AssertionError, grpc.aio.AioRpcError):
            if loop.time() > deadline:
                raise
        await asyncio.sleep(0.02)


def serving(pki: Path, name: str, service: Service) -> AbstractAsyncContextManager[Server]:
    """`service` on a free loopback port, with the certificate of `name` from `pki`."""
    return running(server_settings(pki, name), [service])


async def cause_of_failed_start(pki: Path, service: str, *args: str) -> str:
    """Runs `python -m <service> *args`, which must not start: the cause it names."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", service, "--port", "0",
        "--tls-cert", str(pki / f"{service}.crt"), "--tls-key", str(pki / f"{service}.key"),
        "--tls-ca", str(pki / "ca.crt"), *args,
        cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    return assert_cannot_start(stderr)


def assert_cannot_start(stderr: bytes) -> str:
    """The process's last words are one JSON line that names why it could not start, with no
    traceback anywhere; returns that cause."""
    text = stderr.decode()
    assert "Traceback" not in text
    last = json.loads(text.strip().splitlines()[-1])
    assert (last["severity"], last["message"]) == ("CRITICAL", "cannot start")
    assert "exception" not in last
    cause: str = last["error"]
    return cause


@asynccontextmanager
async def every_service(pki: Path, videos: Path) -> AsyncIterator[dict[str, Server]]:
    """cheese (no preparation time), movie (the default catalogue) and soccer (`videos`)."""
    services: dict[str, Service] = {
        "cheese": Cheese(CheeseSettings(0.0)),
        "movie": Movies(MovieSettings(DEFAULT_CATALOGUE, 0)),
        "soccer": Soccer(SoccerSettings(videos)),
    }
    async with AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(serving(pki, name, service))
            for name, service in services.items()
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def read_logs_until(
    stream: asyncio.StreamReader, message: str, count: int
) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    while sum(line["message"] == message for line in lines) < count:
        line = await asyncio.wait_for(stream.readline(), 30)
        assert line, f"exited early: {lines}"
        lines.append(json.loads(line))
    return [line for line in lines if line["message"] == message]


@dataclass
class Replica:
    name: str
    process: asyncio.subprocess.Process
    port: int = 0


@asynccontextmanager
async def replica_processes(
    pki: Path, service: str, count: int, *args: str
) -> AsyncIterator[list[Replica]]:
    """`count` servers of `service`, each a process of its own (so that a test can freeze
    one), on free loopback ports, named <service>-<n> in `served-by`; `args` go to each."""
    replicas: list[Replica] = []
    readers: list[asyncio.Task[bytes]] = []
    try:
        for number in range(count):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", service, "--host", "127.0.0.1", "--port", "0",
                "--tls-cert", str(pki / f"{service}.crt"), "--tls-key", str(pki / f"{service}.key"),
                "--tls-ca", str(pki / "ca.crt"), "--access-log", "off",
                "--replica", f"{service}-{number}", *args,
                cwd=ROOT, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            replicas.append(Replica(f"{service}-{number}", process))
        for replica in replicas:
            stderr = replica.process.stderr
            assert stderr is not None
            [listening] = await read_logs_until(stderr, "listening", 1)
            replica.port = listening["port"]
            # Read on, so that its logs never fill the pipe and block it.
            readers.append(asyncio.create_task(stderr.read()))
        yield replicas
    finally:
        for replica in replicas:
            if replica.process.returncode is None:
                replica.process.send_signal(signal.SIGCONT)
                replica.process.kill()
                await replica.process.wait()
        await asyncio.gather(*readers)
