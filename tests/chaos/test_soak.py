"""A soak on the running compose stack (`make soak`, 5 minutes by default): mixed unary load
on cheese and movie and 50 real-time viewers on soccer. No call may fail, no viewer may fall
below 29 fps, and no service's memory may grow by 10% or more after the warm-up.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import grpc
import pytest

from api import soccer_pb2, soccer_pb2_grpc
from tests.chaos.conftest import Load, report, unary_call
from tests.e2e.test_compose import compose

pytestmark = pytest.mark.soak

SECONDS = float(os.environ.get("SOAK_SECONDS", "300"))
# Memory is compared from the end of the first minute: allocators and caches grow until then.
WARM_UP = min(60.0, SECONDS / 5)
# A steady mix, not a stress test: the soak is about what holds over time.
UNARY_RATE = 200.0
VIEWERS = 50
SERVICES = ("cheese", "movie", "soccer")


def memory_mib(service: str) -> float:
    container = compose("ps", "--quiet", service).stdout.strip()
    stats = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{json .}}", container],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    used = json.loads(stats)["MemUsage"].split("/")[0].strip()
    number, unit = float(used.rstrip("KMGiB")), used.lstrip("0123456789.")
    return number * {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 2**20}[unit]


async def viewer(stub: soccer_pb2_grpc.SoccerAsyncStub, until: float, rates: list[float]) -> None:
    """Watches the demo match again and again; records each stream's frames per second."""
    while time.monotonic() < until:
        started, frames = time.monotonic(), 0
        async for _ in stub.Watch(soccer_pb2.Match(id="demo", encoding=soccer_pb2.JPEG)):
            frames += 1
        # The first frame leaves at once and the last 1/30 s before the end: count intervals.
        elapsed = time.monotonic() - started
        if frames > 30:
            rates.append((frames - 1) / elapsed)


async def test_soak(channels: dict[str, grpc.aio.Channel]) -> None:
    until = time.monotonic() + SECONDS
    loads = {name: Load(unary_call(name, channels[name])) for name in ("cheese", "movie")}
    running = [asyncio.create_task(load.run(rate=UNARY_RATE)) for load in loads.values()]
    soccer = soccer_pb2_grpc.SoccerStub(channels["soccer"])
    rates: list[float] = []
    watching = [asyncio.create_task(viewer(soccer, until, rates)) for _ in range(VIEWERS)]
    await asyncio.sleep(WARM_UP)
    before = {s: await asyncio.to_thread(memory_mib, s) for s in SERVICES}
    await asyncio.gather(*watching)
    after = {s: await asyncio.to_thread(memory_mib, s) for s in SERVICES}
    for load in loads.values():
        load.stop.set()
    await asyncio.gather(*running)
    growth = {s: round((after[s] - before[s]) / before[s] * 100, 1) for s in SERVICES}
    report(
        "soak",
        seconds=SECONDS,
        calls={n: load.ok for n, load in loads.items()},
        errors={n: len(load.errors) for n, load in loads.items()},
        streams=len(rates),
        min_fps=round(min(rates), 2),
        below_29=sum(rate < 29 for rate in rates),
        memory_mib={s: (round(before[s], 1), round(after[s], 1)) for s in SERVICES},
        growth_percent=growth,
    )
    assert all(load.errors == [] for load in loads.values())
    assert rates and min(rates) >= 29
    assert all(g < 10 for g in growth.values()), growth
