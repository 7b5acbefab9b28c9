"""Fixtures: a throwaway PKI, small generated videos, and servers on ephemeral ports."""

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from grpckit.channel import ClientTls, open_channel
from grpckit.config import ServerConfig, TlsFiles
from soccer import demo_video

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


def server_config(pki: Path, service: str, *, tls: bool = True, grace: float = 2.0) -> ServerConfig:
    files = TlsFiles(pki / f"{service}.crt", pki / f"{service}.key", pki / "ca.crt")
    return ServerConfig("127.0.0.1", 0, files if tls else None, grace, "DEBUG")


def client_tls(pki: Path, *, with_cert: bool = True) -> ClientTls:
    if not with_cert:
        return ClientTls(ca=pki / "ca.crt")
    return ClientTls(ca=pki / "ca.crt", cert=pki / "client.crt", key=pki / "client.key")


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
