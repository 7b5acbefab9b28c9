"""The legitimate clients of the stress suite, in a process of their own so that the floods'
work in the test process does not count against them: a real-time JPEG viewer of the demo
match and unary callers on cheese (20/s) and movie (50/s), each on its own connection,
under the identity whose certificate and key are given.

    python -m tests.stress.legitimate CA CERT KEY

Prints `ready` once every client has been served, then runs until a line
`stop FLOOD_START FLOOD_END` (time.monotonic(), the same clock in every process) arrives
on stdin; it goes on until a whole stream overlapping that window has been watched (30 s
at most), then prints one JSON line with everything it saw. It ends by itself after
MAX_SECONDS, or as soon as stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from api import cheese_pb2, cheese_pb2_grpc, movie_pb2, movie_pb2_grpc, soccer_pb2, soccer_pb2_grpc
from grpckit.client.channel import ClientTls, open_channel
from tests.chaos.conftest import MARTIAN, target

MAX_SECONDS = 900.0
CALL_DEADLINE = 10.0


@dataclass
class Viewer:
    """Watches the demo match in real time again and again. A viewer that falls behind
    loses frames (the hub skips them), so a whole stream's frames per second drop."""

    stub: soccer_pb2_grpc.SoccerAsyncStub
    # (started, ended, frames per second, frames skipped) of each whole stream.
    streams: list[tuple[float, float, float, int]] = field(default_factory=list)
    frames: int = 0
    # When each frame arrived: what a person sees second by second.
    arrivals: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stop.is_set():
            call = self.stub.Watch(soccer_pb2.Match(id="demo", encoding=soccer_pb2.JPEG))
            started, frames, skipped = time.monotonic(), 0, 0
            try:
                async for video in call:
                    frames += 1
                    self.frames += 1
                    self.arrivals.append(time.monotonic())
                    # The hub counts what this viewer lost since it joined.
                    skipped = video.skipped_frames
                    if self.stop.is_set():
                        call.cancel()
                        return
            except grpc.aio.AioRpcError as error:
                self.errors.append(f"{error.code().name}: {error.details()}")
                continue
            ended = time.monotonic()
            # The first frame leaves at once and the last 1/30 s before the end: intervals.
            if frames > 30:
                self.streams.append((started, ended, (frames - 1) / (ended - started), skipped))


@dataclass
class Caller:
    """Unary calls started on a clock (a slow server shows as latency, not as a lower rate)."""

    service: str
    channel: grpc.aio.Channel
    rate: float
    # (started, seconds) of each call that succeeded.
    calls: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _call(self) -> None:
        started = time.monotonic()
        try:
            if self.service == "cheese":
                await cheese_pb2_grpc.CheeseServiceStub(self.channel).Order(
                    cheese_pb2.CheeseRequest(), timeout=CALL_DEADLINE
                )
            else:
                await movie_pb2_grpc.MovieStub(self.channel).GetMovieByID(
                    movie_pb2.MovieID(id=MARTIAN), timeout=CALL_DEADLINE
                )
            self.calls.append((started, time.monotonic() - started))
        except grpc.aio.AioRpcError as error:
            elapsed = time.monotonic() - started
            self.errors.append(f"{error.code().name} after {elapsed:.2f} s: {error.details()}")

    async def run(self) -> None:
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


async def wait_until(condition: Callable[[], object], within: float) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def main(tls: ClientTls) -> None:
    channels = {name: open_channel(target(name), tls) for name in ("cheese", "movie", "soccer")}
    viewer = Viewer(soccer_pb2_grpc.SoccerStub(channels["soccer"]))
    callers = [Caller("cheese", channels["cheese"], 20.0), Caller("movie", channels["movie"], 50.0)]
    everyone: list[Viewer | Caller] = [viewer, *callers]
    running = [asyncio.create_task(client.run()) for client in everyone]
    served = await wait_until(lambda: viewer.frames and all(c.calls for c in callers), 30)
    print("ready" if served else "never served", flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        line = (await asyncio.wait_for(reader.readline(), MAX_SECONDS)).decode().split()
    except TimeoutError:
        line = []
    if line[:1] == ["stop"]:
        start, end = float(line[1]), float(line[2])
        await wait_until(
            lambda: any(s <= end and e >= start for s, e, *_ in viewer.streams), within=30
        )
    for client in everyone:
        client.stop.set()
    await asyncio.gather(*running)
    for channel in channels.values():
        await channel.close(None)
    print(
        json.dumps(
            {
                "streams": viewer.streams,
                "arrivals": [round(t, 4) for t in viewer.arrivals],
                "viewer_errors": viewer.errors,
                "calls": {c.service: c.calls for c in callers},
                "call_errors": {c.service: c.errors for c in callers},
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    ca, cert, key = map(Path, sys.argv[1:4])
    asyncio.run(main(ClientTls(ca, cert, key)))
