"""Shared by the fault and soak runs: the project's own channels and a unary load."""

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import pytest

from api import cheese_pb2, cheese_pb2_grpc, movie_pb2, movie_pb2_grpc
from client.common import PORTS
from grpckit.client.channel import ClientTls, open_channel
from tests.conftest import ROOT

MARTIAN = "a8034f44-aee4-44cf-b32c-74cf452aaaae"
TLS = ClientTls(ROOT / "certs/ca.crt", ROOT / "certs/client.crt", ROOT / "certs/client.key")
CALL_DEADLINE = 60.0


def target(service: str) -> str:
    port = os.environ.get(f"{service.upper()}_PORT", str(PORTS[service]))
    return f"localhost:{port}"


def report(name: str, **figures: object) -> None:
    print(json.dumps({"chaos": name, **figures}))


@dataclass
class Load:
    """Unary calls in a loop, each counted as an error if it fails for any reason."""

    call: Callable[[], Awaitable[object]]
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, concurrency: int = 4, rate: float | None = None) -> None:
        """`concurrency` callers, each as fast as it can or at `rate` calls per second."""

        async def worker() -> None:
            loop = asyncio.get_running_loop()
            next_call = loop.time()
            while not self.stop.is_set():
                if rate is not None:
                    next_call += concurrency / rate
                    await asyncio.sleep(max(0.0, next_call - loop.time()))
                try:
                    await self.call()
                    self.ok += 1
                except grpc.aio.AioRpcError as error:
                    self.errors.append(f"{error.code().name}: {error.details()}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


@pytest.fixture
async def channels() -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    opened = {name: open_channel(target(name), TLS) for name in PORTS}
    yield opened
    for channel in opened.values():
        await channel.close(None)


def unary_call(service: str, channel: grpc.aio.Channel) -> Callable[[], Awaitable[object]]:
    if service == "cheese":
        stub = cheese_pb2_grpc.CheeseServiceStub(channel)
        return lambda: stub.Order(cheese_pb2.CheeseRequest(), timeout=CALL_DEADLINE)
    movies = movie_pb2_grpc.MovieStub(channel)
    return lambda: movies.GetMovieByID(movie_pb2.MovieID(id=MARTIAN), timeout=CALL_DEADLINE)
