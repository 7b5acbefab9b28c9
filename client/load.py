"""Steady load for a while, then one line: how many calls, how they ended, who served them.

Made for replicas: with `dns:///movie:50052` every call may land on another server, and
each response names its server in the `served-by` metadata (see grpckit/calls/served_by.py),
so the summary shows the spread, and a replica killed during the run shows as failed calls
or, when retries and health checking do their job, as none. For soccer a call is a short
live Watch (one frame), so viewers' spread and failover show the same way.
"""

import argparse
import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from api import cheese_pb2, cheese_pb2_grpc, movie_pb2, movie_pb2_grpc, soccer_pb2, soccer_pb2_grpc
from client.common import Settings, emit, served_by
from grpckit.client.channel import open_channel

# One call of the service under load, given its deadline; returns the server that answered.
Caller = Callable[[float], Awaitable[str]]


class WrongAnswerError(Exception):
    """The call succeeded but its answer is not what was asked for: a failed call too."""


def _unary(start: Callable[[float], Any]) -> Caller:
    """A Caller of a unary method: `start` begins the call, given its deadline."""

    async def one(deadline: float) -> str:
        call = start(deadline)
        await call
        return served_by(await call.trailing_metadata())

    return one


async def _cheese_caller(channel: grpc.aio.Channel, args: argparse.Namespace) -> Caller:
    stub = cheese_pb2_grpc.CheeseServiceStub(channel)
    request = cheese_pb2.CheeseRequest(type=cheese_pb2.BRIE)
    return _unary(lambda deadline: stub.Order(request, timeout=deadline))


async def _movie_caller(channel: grpc.aio.Channel, args: argparse.Namespace) -> Caller:
    stub = movie_pb2_grpc.MovieStub(channel)
    # A real id from the catalogue, so every call is a hit, whatever the catalogue holds.
    first = await anext(aiter(stub.GetListMovies(movie_pb2.Empty(), timeout=10)))
    request = movie_pb2.MovieID(id=first.id)
    return _unary(lambda deadline: stub.GetMovieByID(request, timeout=deadline))


async def _soccer_caller(channel: grpc.aio.Channel, args: argparse.Namespace) -> Caller:
    stub = soccer_pb2_grpc.SoccerStub(channel)
    request = soccer_pb2.Match(id=args.match, encoding=soccer_pb2.JPEG, max_frames=1)

    async def view(deadline: float) -> str:
        call = stub.Watch(request, timeout=deadline)
        replica = served_by(await call.initial_metadata())
        frames = [video async for video in call]
        if len(frames) != 1:
            raise WrongAnswerError(f"asked for one frame, got {len(frames)}")
        return replica

    return view


CALLERS: dict[str, Callable[[grpc.aio.Channel, argparse.Namespace], Awaitable[Caller]]] = {
    "cheese": _cheese_caller,
    "movie": _movie_caller,
    "soccer": _soccer_caller,
}


async def run_load(settings: Settings, args: argparse.Namespace) -> int:
    """Exits 0 only when every call succeeded."""
    codes: collections.Counter[str] = collections.Counter()
    servers: collections.Counter[str] = collections.Counter()
    # When calls failed (time.monotonic(), the host's clock in every container, so that a
    # test can lay them beside what it did), the first of them.
    failed_at: list[float] = []
    async with open_channel(settings.target_for(args.service), settings.tls) as channel:
        call = await CALLERS[args.service](channel, args)
        started = time.monotonic()
        end = started + args.seconds

        async def worker() -> None:
            while time.monotonic() < end:
                try:
                    servers[await call(settings.deadline)] += 1
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    codes[error.code().name] += 1
                    _note(failed_at)
                except WrongAnswerError:
                    codes["WRONG_ANSWER"] += 1
                    _note(failed_at)

        workers = asyncio.gather(*(worker() for _ in range(args.concurrency)))
        if args.every:
            await _report_every(args.every, started, codes, workers)
        await workers
        seconds = time.monotonic() - started
    calls = sum(codes.values())
    failed = calls - codes["OK"]
    emit(
        {
            "service": args.service,
            "calls": calls,
            "failed": failed,
            "seconds": round(seconds, 3),
            "calls_per_s": round(calls / seconds, 1),
            "codes": dict(codes),
            "served_by": dict(servers),
            "failed_at": failed_at,
        }
    )
    return 0 if failed == 0 else 1


def _note(failed_at: list[float], keep: int = 50) -> None:
    if len(failed_at) < keep:
        failed_at.append(round(time.monotonic(), 3))


async def _report_every(
    every: float,
    started: float,
    codes: collections.Counter[str],
    workers: "asyncio.Future[list[None]]",
) -> None:
    """A line per interval while the workers run: what the rate did when, say, a replica
    froze (the summary only tells the whole run)."""
    last_time, last_calls, last_ok = started, 0, 0
    while True:
        # Early when the workers are done: the last line counts their last calls.
        await asyncio.wait([workers], timeout=max(0.0, last_time + every - time.monotonic()))
        now = time.monotonic()
        calls, ok = sum(codes.values()), codes["OK"]
        emit(
            {
                "at": round(now - started, 3),
                "calls": calls - last_calls,
                "failed": (calls - ok) - (last_calls - last_ok),
                "calls_per_s": round((calls - last_calls) / max(now - last_time, 1e-9), 1),
            }
        )
        last_time, last_calls, last_ok = now, calls, ok
        if workers.done():
            return
