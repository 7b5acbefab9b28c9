"""The event loop every server runs on: uvloop by default (EVENT_LOOP, grpckit/config.py).

grpc.aio does its I/O in gRPC's own threads and hands each completion to the event loop,
so a server's per-message cost includes the loop's own: scheduling callbacks, waking tasks,
resolving futures. uvloop does that in C. Measured on one CPU over mutual TLS (bench,
issue #4), GetListMovies streamed 15-25% more messages per second on uvloop, with health,
reflection, streams and graceful shutdown on SIGTERM unchanged. The standard loop stays one
setting away, for debugging or a grpcio release that disagrees.
"""

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

from grpckit.config import EventLoop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], loop: EventLoop = EventLoop.UVLOOP) -> T:
    """`asyncio.run(main)` on the named loop."""
    return uvloop.run(main) if loop is EventLoop.UVLOOP else asyncio.run(main)
