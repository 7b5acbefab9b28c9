"""Memory comes back once a burst of calls is over.

Two things keep a server's memory high after a flood ends, both measured on soccer under
issue 12's start-frame flood (150 stalled raw streams, then cancelled), where it stayed at
116 MiB against a 35 MiB baseline for as long as it was watched:

- reference cycles: a cancelled call's exception holds its traceback, the traceback its
  frames, and the frames what the call was using (hubs, viewer queues, 2.7 MB raw frames).
  Only a full collection frees a cycle, and an idle process makes no allocations that would
  trigger one;
- glibc's arenas: memory freed by the decoder and gRPC threads stays in their arenas until
  `malloc_trim` gives it back.

So while the process is above its resident size at start-up by more than GROWTH and its
calls are not increasing, a full collection and a trim run, at most every CHECK_SECONDS.
Objects alive at start-up (modules, descriptors) are frozen out of the collector first, so
a collection walks only what calls created: a few milliseconds on the event loop.
"""

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("grpckit.memory")

CHECK_SECONDS = 5.0
COLLECT_SECONDS = 0.05
GROWTH = 32 * 1024 * 1024
STATM = Path("/proc/self/statm")


def resident_bytes() -> int:
    """This process's resident set size; 0 where /proc is not there."""
    try:
        pages = int(STATM.read_bytes().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim; None with another C library (musl has none)."""
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


async def reclaim(in_flight: Callable[[], int], every: float = CHECK_SECONDS) -> None:
    """Runs for the server's life (a background task); `in_flight` counts its calls."""
    trim = _malloc_trim()
    gc.freeze()
    start = resident_bytes()
    previous = in_flight()
    while True:
        await asyncio.sleep(every)
        calls = in_flight()
        falling = calls <= previous
        previous = calls
        before = resident_bytes()
        if not falling or before <= start + GROWTH:
            continue
        collected = gc.collect()
        if trim is not None:
            # ctypes lets go of the GIL for the call; the trim walks every arena.
            await asyncio.to_thread(trim, 0)
        log.debug(
            "memory reclaimed",
            extra={
                "collected": collected,
                "resident_mib_before": round(before / 2**20, 1),
                "resident_mib_after": round(resident_bytes() / 2**20, 1),
            },
        )


async def collect_on_loop(every: float = COLLECT_SECONDS) -> None:
    """The cyclic collector's work, done by this task on the event loop, with the automatic
    collector's thresholds and generations, for a process that has turned the automatic one
    off (grpckit/telemetry/metrics.py: with gRPC's metrics on, a collection must not run in gRPC's
    export thread)."""
    young, middle, old = gc.get_threshold()
    while True:
        await asyncio.sleep(every)
        counts = gc.get_count()
        if counts[0] >= young:
            gc.collect(2 if counts[2] >= old else 1 if counts[1] >= middle else 0)
