"""The runtime gives memory back after a burst: cycles left by cancelled calls are collected."""

import asyncio
import gc
import weakref

from grpckit.lifecycle import memory
from tests.conftest import eventually


class _Cycle:
    """What a cancelled call leaves behind: objects that only refer to each other."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.me = self


async def test_cycles_left_by_a_burst_are_collected_once_calls_stop_growing() -> None:
    # Only the reclaimer may collect: an automatic collection would pass this test by luck.
    # (It is off already once gRPC's metrics are on in this process: grpckit/telemetry/metrics.py.)
    automatic = gc.isenabled()
    gc.disable()
    task = asyncio.create_task(memory.reclaim(lambda: 0, every=0.01))
    await asyncio.sleep(0)  # it has taken the start-up size and frozen what exists
    try:
        # A burst's leftovers: a cycle, and resident memory well above the start.
        cycle = _Cycle(b"x" * 1024 * 1024)
        alive = weakref.ref(cycle)
        del cycle
        burst = b"x" * (memory.GROWTH + 16 * 1024 * 1024)

        async def collected() -> None:
            assert alive() is None, "the cycle is still alive"

        await eventually(collected)
        del burst
    finally:
        task.cancel()
        gc.unfreeze()
        if automatic:
            gc.enable()


async def test_collections_run_on_the_loop_when_the_automatic_collector_is_off() -> None:
    automatic = gc.isenabled()
    gc.disable()
    task = asyncio.create_task(memory.collect_on_loop(every=0.01))
    try:
        cycle = _Cycle(b"")
        alive = weakref.ref(cycle)
        del cycle
        # Enough new objects for the youngest generation's threshold.
        garbage: list[list[int]] = [[] for _ in range(gc.get_threshold()[0] + 1)]

        async def collected() -> None:
            assert alive() is None, "the cycle is still alive"

        await eventually(collected)
        del garbage
    finally:
        task.cancel()
        if automatic:
            gc.enable()
