"""Hostile load on the running compose stack (`make stress`, issue 12): floods of stalled
streams and of connections from the host, through the published ports, with the `client`
identity, while a legitimate real-time viewer and legitimate unary callers (identity
`viewer`) keep going. The excess must be refused with RESOURCE_EXHAUSTED, the legitimate
clients served in real time, no container restarted or OOM-killed, every server's memory
back near its baseline soon after, and every published port alive. Figures are one JSON
line per flood; run with -s to see them.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import pytest

from api import cheese_pb2, cheese_pb2_grpc, movie_pb2, movie_pb2_grpc, soccer_pb2, soccer_pb2_grpc
from client.common import PORTS
from grpckit.client.channel import ClientTls
from tests.chaos.conftest import MARTIAN
from tests.conftest import ROOT
from tests.stress.conftest import (
    SERVERS,
    WATCHED,
    MemoryWatch,
    Served,
    State,
    cpu_seconds,
    memory_mib,
    normal_priority,
    own_channel,
    report,
    states,
)

pytestmark = pytest.mark.stress

# How long each flood holds what it took before letting go; every flood ends by itself.
HOLD = float(os.environ.get("STRESS_HOLD_SECONDS", "20"))
# A server's memory is back "near" its baseline when it is within 32 MiB or a quarter of it
# (whichever is more: allocator slack, not what the flood took), within SETTLE seconds of the
# flood ending. Today (no fix) soccer stays at 1.5 GB and more for minutes.
NEAR_MIB, NEAR_FRACTION = 32.0, 0.25
SETTLE = float(os.environ.get("STRESS_SETTLE_SECONDS", "60"))
# The legitimate unary p99: unloaded, an Order is its 0.1 s preparation plus a few ms, a
# movie lookup a few ms. A quarter of a second on top of that still reads as instant to a
# person, and is far from the 10 s deadline a client gives a call; a starved server is
# seconds, not tenths. On a host other work keeps busy, the same clients with no flood at
# all (test_no_flood, run first) can exceed that: then a flood may at most double their p99.
P99_BOUND = {"cheese": 0.35, "movie": 0.25}
NO_FLOOD_P99: dict[str, float] = {}
MIN_FPS = 29.0
# A burst of refusals may cost the viewer a few frames in a second, never a visible stall:
# every whole second of the burst brings at least this many of its 30 frames.
MIN_SECOND_FPS = 25
# A new connection's call, made while the idle connections are held, must be answered within:
FRESH_CALL_SECONDS = 3.0

# The floods, as issue 12 measured them.
UNPACED_STREAMS = 200
START_FRAME_STREAMS = 150
# The mixed burst: this many Watch requests at once, half unpaced and half with a start frame
# of their own, over REFUSAL_CONNECTIONS connections; again as soon as a burst is answered,
# for HOLD seconds or REFUSAL_WAVES bursts, whichever ends first.
REFUSAL_BURST = 400
REFUSAL_CONNECTIONS = 4
REFUSAL_WAVES = 40
# Streams spread over this many connections, as separate clients would open them.
FLOOD_CONNECTIONS = 10
BURST_CONNECTIONS = 500
# Connections being opened at once in the burst: the flood runs on this same 2-core host, and
# 500 handshakes at once would measure the test's own CPU starvation, not the stack.
BURST_AT_ONCE = 100
IDLE_CONNECTIONS = 5000


async def one_call(service: str, channel: grpc.aio.Channel, deadline: float) -> None:
    if service == "cheese":
        await cheese_pb2_grpc.CheeseServiceStub(channel).Order(
            cheese_pb2.CheeseRequest(), timeout=deadline
        )
    elif service == "movie":
        await movie_pb2_grpc.MovieStub(channel).GetMovieByID(
            movie_pb2.MovieID(id=MARTIAN), timeout=deadline
        )
    else:
        stream = soccer_pb2_grpc.SoccerStub(channel).Watch(
            soccer_pb2.Match(id="demo", encoding=soccer_pb2.JPEG, max_frames=1), timeout=deadline
        )
        assert len([video async for video in stream]) == 1


async def ports_alive(tls: ClientTls) -> dict[str, str]:
    """One call per published port on a new connection: "OK" or what went wrong."""

    async def check(service: str) -> str:
        channel = own_channel(service, tls)
        try:
            await one_call(service, channel, deadline=5)
            return "OK"
        except grpc.aio.AioRpcError as error:
            return f"{error.code().name}: {error.details()}"
        finally:
            await channel.close(None)

    return dict(zip(SERVERS, await asyncio.gather(*map(check, SERVERS)), strict=True))


def near(used: float, baseline: float) -> bool:
    return used <= baseline + max(NEAR_MIB, NEAR_FRACTION * baseline)


async def settled(baseline: dict[str, float]) -> tuple[dict[str, float], float]:
    """Each server's memory once all are near their baseline, or at the deadline; and how
    long that took."""
    started = time.monotonic()
    while True:
        used = await asyncio.to_thread(memory_mib)
        elapsed = time.monotonic() - started
        if all(near(used[s], baseline[s]) for s in SERVERS) or elapsed > SETTLE:
            return used, elapsed
        await asyncio.sleep(1)


class Legitimate:
    """The legitimate clients' process (tests/stress/legitimate.py), served before the
    flood starts; `finish` hands it the flood's window and collects what it saw."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    @asynccontextmanager
    async def running(cls, tls: ClientTls) -> AsyncIterator[Legitimate]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.stress.legitimate", str(tls.ca), str(tls.cert),
            str(tls.key), cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            preexec_fn=normal_priority,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            ready = await asyncio.wait_for(process.stdout.readline(), timeout=60)
            assert ready == b"ready\n", f"the legitimate clients were never served: {ready!r}"
            yield cls(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def finish(self, window: tuple[float, float]) -> Served:
        out, _ = await asyncio.wait_for(
            self.process.communicate(f"stop {window[0]} {window[1]}\n".encode()), timeout=90
        )
        assert self.process.returncode == 0, out
        return Served.parse(window, out.decode())


Flood = Callable[[], Awaitable[dict[str, object]]]


async def under_flood(
    name: str, flood: Flood, baseline: dict[str, float], tls: ClientTls, *, control: bool = False
) -> None:
    """Runs `flood` among the legitimate clients, reports its figures and ours, then checks
    everything issue 12 asks after any flood (each test then checks its flood's own)."""
    before = await asyncio.to_thread(states)
    with MemoryWatch() as memory:
        async with Legitimate.running(tls) as legitimate:
            cpu_before = await asyncio.to_thread(cpu_seconds)
            started = time.monotonic()
            figures = await flood()
            ended = time.monotonic()
            cpu_after = await asyncio.to_thread(cpu_seconds)
            served = await legitimate.finish((started, ended))
    used, settle_seconds = await settled(baseline)
    after = await asyncio.to_thread(states)
    alive = await ports_alive(tls)
    report(
        name,
        **figures,
        **served.figures(),
        cpu_seconds={s: round(cpu_after[s] - cpu_before[s], 2) for s in WATCHED},
        memory_mib={
            s: {
                "baseline": round(baseline[s], 1),
                "peak": round(memory.peak[s], 1),
                "settled": round(used[s], 1),
            }
            for s in SERVERS
        },
        edge_peak_mib=round(memory.peak["edge"], 1),
        peak_pids=memory.peak_pids,
        settle_seconds=round(settle_seconds, 1),
        restarts={s: after[s].restarts - before[s].restarts for s in WATCHED},
        oom_killed={s: after[s].oom_killed for s in WATCHED},
        ports=alive,
    )
    if control:
        NO_FLOOD_P99.update({service: served.p99(service) for service in P99_BOUND})
    check_served(served)
    check_containers(before, after)
    assert all(near(used[s], baseline[s]) for s in SERVERS), (used, baseline)
    assert alive == dict.fromkeys(SERVERS, "OK")


def check_served(served: Served) -> None:
    assert served.viewer_errors == []
    assert served.rates, "no whole stream watched during the flood"
    assert min(served.rates) >= MIN_FPS, served.rates
    assert min(served.per_second) >= MIN_SECOND_FPS, served.per_second
    for service, bound in P99_BOUND.items():
        assert served.call_errors[service] == [], served.call_errors[service][:5]
        bound = max(bound, 2 * NO_FLOOD_P99.get(service, 0.0))
        assert served.p99(service) <= bound, (service, served.p99(service), bound)


def check_containers(before: dict[str, State], after: dict[str, State]) -> None:
    for service in WATCHED:
        assert after[service].id == before[service].id, f"{service} was recreated"
        assert after[service].restarts == before[service].restarts, f"{service} restarted"
        assert not after[service].oom_killed, f"{service} was OOM-killed"
        assert after[service].running, f"{service} is not running"


# ---- The floods ---------------------------------------------------------------------------


async def stalled_streams(requests: list[soccer_pb2.Match]) -> Counter[str]:
    """Opens every stream, reads one frame of each, then reads nothing for HOLD seconds, as
    a client that stopped reading would; then cancels them all. Returns each stream's fate
    at its first read: OK or the status code."""
    channels = [own_channel("soccer") for _ in range(FLOOD_CONNECTIONS)]
    stubs = [soccer_pb2_grpc.SoccerStub(channel) for channel in channels]
    calls = [
        stubs[i % len(stubs)].Watch(request, timeout=HOLD + 60)
        for i, request in enumerate(requests)
    ]

    async def first_frame(
        call: grpc.aio.UnaryStreamCall[soccer_pb2.Match, soccer_pb2.Video],
    ) -> str:
        try:
            await asyncio.wait_for(call.read(), timeout=30)
            return "OK"
        except grpc.aio.AioRpcError as error:
            return error.code().name
        except TimeoutError:
            return "no frame within 30 s"

    try:
        fates = Counter(await asyncio.gather(*map(first_frame, calls)))
        await asyncio.sleep(HOLD)  # the stall itself: a duration, not a wait for something
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close(None)
    return fates


async def test_no_flood(baseline: dict[str, float], viewer_tls: ClientTls) -> None:
    """The legitimate clients alone for HOLD seconds: what this host gives them at all."""

    async def flood() -> dict[str, object]:
        await asyncio.sleep(HOLD)  # nothing but the legitimate clients, for the same time
        return {}

    await under_flood("no-flood", flood, baseline, viewer_tls, control=True)


def check_refused(fates: Counter[str]) -> None:
    """The excess is refused, by code, and nothing fails any other way."""
    assert fates["RESOURCE_EXHAUSTED"] > 0, fates
    assert set(fates) <= {"OK", "RESOURCE_EXHAUSTED"}, fates


async def stalled_flood(
    name: str, requests: list[soccer_pb2.Match], baseline: dict[str, float], tls: ClientTls
) -> None:
    fates: Counter[str] = Counter()

    async def flood() -> dict[str, object]:
        fates.update(await stalled_streams(requests))
        return {"streams": len(requests), "fates": dict(fates)}

    await under_flood(name, flood, baseline, tls)
    check_refused(fates)


async def test_unpaced_streams_that_stop_reading(
    baseline: dict[str, float], viewer_tls: ClientTls
) -> None:
    # Each its own decoder, reading on only as frames are sent.
    requests = [soccer_pb2.Match(id="demo", unpaced=True) for _ in range(UNPACED_STREAMS)]
    await stalled_flood("unpaced-stalled", requests, baseline, viewer_tls)


async def test_streams_with_their_own_start_frame_that_stop_reading(
    baseline: dict[str, float], viewer_tls: ClientTls
) -> None:
    # Frames 1 to 150 of the 300, real time: a start still in a running hub's one-second
    # backlog joins that hub, any other needs a hub (a decoder) of its own.
    requests = [soccer_pb2.Match(id="demo", start_frame=i + 1) for i in range(START_FRAME_STREAMS)]
    await stalled_flood("start-frame-stalled", requests, baseline, viewer_tls)


async def test_mixed_refusal_burst(baseline: dict[str, float], viewer_tls: ClientTls) -> None:
    """Bursts of Watch requests that the budgets refuse nearly all of, one right after the
    other: a refusal must cost so little that the viewer beside them loses no second."""
    channels = [own_channel("soccer") for _ in range(REFUSAL_CONNECTIONS)]
    stubs = [soccer_pb2_grpc.SoccerStub(channel) for channel in channels]
    requests = [
        soccer_pb2.Match(id="demo", unpaced=True)
        if i % 2
        else soccer_pb2.Match(id="demo", start_frame=i // 2 + 1)
        for i in range(REFUSAL_BURST)
    ]
    fates: Counter[str] = Counter()

    async def fate(stub: soccer_pb2_grpc.SoccerAsyncStub, request: soccer_pb2.Match) -> str:
        """What a request's first read meets; an admitted stream is let go at once."""
        call = stub.Watch(request, timeout=30)
        try:
            await call.read()
            return "OK"
        except grpc.aio.AioRpcError as error:
            return error.code().name
        finally:
            call.cancel()

    async def flood() -> dict[str, object]:
        started, waves = time.monotonic(), 0
        while waves < REFUSAL_WAVES and time.monotonic() - started < HOLD:
            burst = (fate(stubs[i % len(stubs)], r) for i, r in enumerate(requests))
            fates.update(await asyncio.gather(*burst))
            waves += 1
        return {"requests": waves * len(requests), "waves": waves, "fates": dict(fates)}

    try:
        await under_flood("mixed-refusal-burst", flood, baseline, viewer_tls)
    finally:
        for channel in channels:
            await channel.close(None)
    check_refused(fates)
    assert fates["RESOURCE_EXHAUSTED"] >= 0.9 * sum(fates.values()), fates


async def test_connection_burst(baseline: dict[str, float], viewer_tls: ClientTls) -> None:
    """BURST_CONNECTIONS new connections to movie at once, each a lookup and the whole list."""

    fates: Counter[str] = Counter()

    at_once = asyncio.Semaphore(BURST_AT_ONCE)

    async def one_client() -> None:
        async with at_once:
            await calls()

    async def calls() -> None:
        channel = own_channel("movie")
        movies = movie_pb2_grpc.MovieStub(channel)
        try:
            await movies.GetMovieByID(movie_pb2.MovieID(id=MARTIAN), timeout=30)
            fates["OK"] += 1
            async for _ in movies.GetListMovies(movie_pb2.Empty(), timeout=30):
                pass
            fates["OK"] += 1
        except grpc.aio.AioRpcError as error:
            fates[error.code().name] += 1
        finally:
            await channel.close(None)

    async def flood() -> dict[str, object]:
        started = time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(BURST_CONNECTIONS)))
        return {
            "connections": BURST_CONNECTIONS,
            "seconds": round(time.monotonic() - started, 1),
            "fates": dict(fates),
        }

    await under_flood("connection-burst", flood, baseline, viewer_tls)
    # Refusing some of the burst is allowed; failing any other way is not.
    assert set(fates) <= {"OK", "RESOURCE_EXHAUSTED"}, fates


async def test_idle_connections_to_a_published_port(
    baseline: dict[str, float], viewer_tls: ClientTls
) -> None:
    """IDLE_CONNECTIONS TCP connections to the movie port that never send a byte. A new
    connection's call must still be answered promptly while they are held, and every idle
    one must be closed by the stack, not kept for ever."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE_CONNECTIONS + 1024
    assert hard >= wanted, f"this test needs {wanted} open files; the hard limit is {hard}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    port = int(os.environ.get("MOVIE_PORT", PORTS["movie"]))
    fresh: list[float | str] = []
    closed: list[float] = []

    async def flood() -> dict[str, object]:
        opening = asyncio.Semaphore(500)
        opened = 0

        async def idle() -> float | str:
            """Seconds until the stack closed this connection, or why it never did."""
            async with opening:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", port), timeout=10
                    )
                except (OSError, TimeoutError) as error:
                    return f"connect: {type(error).__name__}"
            nonlocal opened
            opened += 1
            since = time.monotonic()
            try:
                await asyncio.wait_for(reader.read(1), timeout=HOLD)
                return time.monotonic() - since
            except TimeoutError:
                return "still open"
            except OSError:
                return time.monotonic() - since
            finally:
                writer.close()

        idlers = [asyncio.create_task(idle()) for _ in range(IDLE_CONNECTIONS)]
        # The burst is under way once nine in ten are open (the first ones may already have
        # been closed by then): then a new client calls.
        deadline = time.monotonic() + 30
        while opened < IDLE_CONNECTIONS * 0.9:
            assert time.monotonic() < deadline, f"only {opened} connections opened in 30 s"
            await asyncio.sleep(0.05)
        burst_size = opened
        channel = own_channel("movie", viewer_tls)
        called = time.monotonic()
        try:
            await one_call("movie", channel, deadline=FRESH_CALL_SECONDS + 5)
            fresh.append(round(time.monotonic() - called, 2))
        except grpc.aio.AioRpcError as error:
            fresh.append(f"{error.code().name}: {error.details()}")
        finally:
            await channel.close(None)
        results = await asyncio.gather(*idlers)
        closed.extend(r for r in results if isinstance(r, float))
        return {
            "connections": IDLE_CONNECTIONS,
            "open_when_called": burst_size,
            "fresh_call_seconds": fresh[0],
            "closed_by_stack": len(closed),
            "closed_after_max_seconds": round(max(closed), 1) if closed else None,
            "other": dict(Counter(r for r in results if isinstance(r, str))),
        }

    await under_flood("idle-connections", flood, baseline, viewer_tls)
    [answered] = fresh
    assert isinstance(answered, float) and answered <= FRESH_CALL_SECONDS, answered
    assert len(closed) == IDLE_CONNECTIONS, f"{IDLE_CONNECTIONS - len(closed)} never closed"
