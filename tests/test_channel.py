"""The channels' service config (grpckit/transport/options.py): gRPC accepts it, and with it a frozen
replica costs no read-only call.

A service config gRPC rejects does not raise where the channel is made: every call on the
channel fails at once with INVALID_ARGUMENT instead, so acceptance is proven by a real call.
"""

import asyncio
import collections
import dataclasses
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from api import movie_pb2, movie_pb2_grpc
from client.common import served_by
from grpckit.client.channel import open_channel
from grpckit.transport.options import CHANNEL_OPTIONS, SERVICE_CONFIG
from grpckit.transport.tls import channel_credentials
from movie.server import DEFAULT_CATALOGUE, Movies, MovieSettings
from tests.conftest import Connect, client_tls, eventually, replica_processes, serving

MARTIAN = "a8034f44-aee4-44cf-b32c-74cf452aaaae"


async def test_the_service_config_is_accepted(pki: Path, connect: Connect) -> None:
    async with serving(pki, "movie", Movies(MovieSettings(DEFAULT_CATALOGUE, 0))) as server:
        movies = movie_pb2_grpc.MovieStub(connect(server.port, client_tls(pki)))
        # Not waiting for ready: a rejected config would fail this at once.
        movie = await movies.GetMovieByID(
            movie_pb2.MovieID(id=MARTIAN), timeout=10, wait_for_ready=False
        )
        assert movie.title == "The Martian"


async def test_a_config_grpc_rejects_fails_every_call(pki: Path) -> None:
    """The control for the test above: the same options with one field of the wrong type."""
    config = json.loads(SERVICE_CONFIG)
    config["methodConfig"][1]["retryPolicy"]["perAttemptRecvTimeout"] = "soon"
    options = [(k, v) for k, v in CHANNEL_OPTIONS if k != "grpc.service_config"]
    options.append(("grpc.service_config", json.dumps(config)))
    tls = client_tls(pki)
    credentials = channel_credentials(tls.ca, tls.cert, tls.key)
    async with serving(pki, "movie", Movies(MovieSettings(DEFAULT_CATALOGUE, 0))) as server:
        target = f"localhost:{server.port}"
        async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
            movies = movie_pb2_grpc.MovieStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await movies.GetMovieByID(movie_pb2.MovieID(id=MARTIAN), timeout=10)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "service config" in (error.value.details() or "").lower()


async def test_a_frozen_replica_fails_no_read_only_call(pki: Path) -> None:
    """One of three replicas stops (SIGSTOP: its connections stay open, nothing answers)
    under load at a 1 s deadline: per-attempt timeouts send its calls to the others, and
    outlier detection stops sending it any."""
    async with replica_processes(pki, "movie", 3) as replicas:
        addresses = ",".join(f"127.0.0.1:{replica.port}" for replica in replicas)
        tls = dataclasses.replace(client_tls(pki), server_name="localhost")
        async with open_channel(f"ipv4:{addresses}", tls) as channel:
            movies = movie_pb2_grpc.MovieStub(channel)
            served: collections.Counter[str] = collections.Counter()
            errors: list[str] = []
            stop = asyncio.Event()

            async def caller() -> None:
                # Bounded: the test stops it, and each call has a 1 s deadline.
                for _ in range(100_000):
                    if stop.is_set():
                        return
                    call = movies.GetMovieByID(movie_pb2.MovieID(id=MARTIAN), timeout=1)
                    try:
                        await call
                        served[served_by(await call.trailing_metadata())] += 1
                    except grpc.aio.AioRpcError as error:
                        errors.append(f"{error.code().name}: {error.details()}")

            def served_at_least(counts: dict[str, int]) -> Callable[[], Awaitable[None]]:
                async def check() -> None:
                    assert all(served[name] >= count for name, count in counts.items()), served

                return check

            callers = [asyncio.create_task(caller()) for _ in range(8)]
            try:
                frozen, *others = replicas
                await eventually(served_at_least({r.name: 50 for r in replicas}), within=30)
                frozen.process.send_signal(signal.SIGSTOP)
                before = dict(served)
                # A few seconds of calls while it is frozen: the others serve them all.
                wanted = {r.name: before[r.name] + 2000 for r in others}
                await eventually(served_at_least(wanted), within=60)
                during = {name: served[name] - before[name] for name in served}
            finally:
                stop.set()
                await asyncio.gather(*callers)
            frozen.process.send_signal(signal.SIGCONT)
    assert errors == [], (len(errors), errors[:5])
    # At most the calls it had answered when the signal landed, one per caller.
    assert during.get(frozen.name, 0) <= len(callers), during
