"""Soccer's budgets: decoders (hubs plus unpaced readers) and frame buffers. A viewer over a
budget is refused at once, before any decoder opens; viewers already served keep going."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import pytest

from api import soccer_pb2, soccer_pb2_grpc
from grpckit.calls.budgets import _FORGET_PAST, StartRate
from grpckit.calls.served_by import SERVED_BY
from grpckit.lifecycle.main import load_settings
from grpckit.lifecycle.server import Server, running
from soccer.buffers import Buffers, MiB
from soccer.hub import Published, Viewer
from soccer.server import PROGRAM, Soccer, SoccerSettings
from soccer.video import OpenCaptures
from tests.conftest import Connect, client_tls, server_settings
from tests.test_budgets import POLICY, mint_client, refused, until

if TYPE_CHECKING:  # the async stub exists only in the type stubs
    Stub: TypeAlias = soccer_pb2_grpc.SoccerAsyncStub


def soccer_budgets(pki: Path, videos: Path, **budgets: Any) -> Any:
    mint_client(pki, "other")
    settings = replace(server_settings(pki, "soccer", policy=POLICY), max_streams=50)
    return running(settings, [Soccer(SoccerSettings(videos, **budgets))])


def stub(connect: Connect, server: Server, pki: Path, identity: str = "client") -> Stub:
    return soccer_pb2_grpc.SoccerStub(connect(server.port, client_tls(pki, identity=identity)))


def decoders(server: Server) -> int:
    service = server.services[0]
    assert isinstance(service, Soccer)
    return service.hubs.decoders.total.in_use


def unpaced(match: str = "small", **fields: Any) -> soccer_pb2.Match:
    return soccer_pb2.Match(id=match, unpaced=True, encoding=soccer_pb2.JPEG, **fields)


async def started(soccer: Stub, match: soccer_pb2.Match, count: int = 1) -> list[Any]:
    """`count` viewers that got their first frame (and read no more unless told)."""
    calls = [soccer.Watch(match, timeout=60) for _ in range(count)]
    for call in calls:
        await call.read()
    return calls


async def ended(server: Server, calls: list[Any]) -> None:
    """Cancel `calls`; every decoder and capture comes back."""
    for call in calls:
        call.cancel()
    await until(lambda: decoders(server) == 0 and OpenCaptures.count == 0)


@pytest.fixture
async def one_decoder(pki: Path, videos: Path) -> AsyncIterator[Server]:
    async with soccer_budgets(pki, videos, max_decoders=1, max_decoders_per_client=1) as server:
        yield server


async def test_no_decoder_left_is_refused_before_one_opens_and_cancel_gives_it_back(
    one_decoder: Server, connect: Connect, pki: Path
) -> None:
    soccer = stub(connect, one_decoder, pki)
    first = await started(soccer, unpaced())  # then stops reading: its decoder stays taken
    assert (decoders(one_decoder), OpenCaptures.count) == (1, 1)
    expected = "soccer decoders of client 'client': 1 of 1 in use (SOCCER_MAX_DECODERS_PER_CLIENT)"
    for match in (unpaced(), soccer_pb2.Match(id="small")):  # unpaced, and a hub of its own
        call = soccer.Watch(match, timeout=30)
        assert await refused(call.read()) == expected
        # Trailers only: no headers went out before the refusal, and they name the replica.
        assert SERVED_BY not in dict(await call.initial_metadata())
        assert SERVED_BY in dict(await call.trailing_metadata())
    assert OpenCaptures.count == 1
    await ended(one_decoder, first)
    frames = [v async for v in soccer.Watch(unpaced(max_frames=3), timeout=60)]
    assert len(frames) == 3
    await until(lambda: decoders(one_decoder) == 0)


async def test_joining_a_running_broadcast_costs_no_decoder(
    one_decoder: Server, connect: Connect, pki: Path
) -> None:
    soccer = stub(connect, one_decoder, pki)
    live = soccer_pb2.Match(id="small", encoding=soccer_pb2.JPEG)
    viewers = await started(soccer, live, 4)
    assert decoders(one_decoder) == 1
    await ended(one_decoder, viewers)


async def test_a_second_identity_gets_a_decoder_a_greedy_one_cannot(
    pki: Path, videos: Path, connect: Connect
) -> None:
    async with soccer_budgets(pki, videos, max_decoders=3, max_decoders_per_client=2) as server:
        greedy, second = stub(connect, server, pki), stub(connect, server, pki, "other")
        taken = await started(greedy, unpaced(), 2)
        assert "SOCCER_MAX_DECODERS_PER_CLIENT" in await refused(
            greedy.Watch(unpaced(), timeout=30).read()
        )
        taken += await started(second, unpaced())
        # The server's budget is spent now: everyone is told so.
        assert await refused(second.Watch(unpaced(), timeout=30).read()) == (
            "soccer decoders: 3 of 3 in use (SOCCER_MAX_DECODERS)"
        )
        await ended(server, taken)


async def test_decoders_started_and_let_go_over_and_over_are_refused_past_the_start_rate(
    pki: Path, videos: Path, connect: Connect
) -> None:
    # Half a start a second: a burst of one, the next a good while later.
    async with soccer_budgets(pki, videos, decoder_starts_per_client=0.5) as server:
        greedy, second = stub(connect, server, pki), stub(connect, server, pki, "other")
        await ended(server, await started(greedy, unpaced()))
        for match in (unpaced(), soccer_pb2.Match(id="small", start_frame=5)):
            details = await refused(greedy.Watch(match, timeout=30).read())
            assert details.startswith(
                "soccer decoder starts of client 'client': more than 0.5 started a second "
                "(SOCCER_DECODER_STARTS_PER_CLIENT); the next in "
            ), details
        assert OpenCaptures.count == 0
        # Another identity's bucket is its own, and joining its running hub starts nothing.
        live = soccer_pb2.Match(id="small", encoding=soccer_pb2.JPEG)
        viewers = await started(second, live)
        viewers += await started(greedy, live)
        await ended(server, viewers)


def test_a_start_rate_refills_and_forgets_identities_whose_bucket_is_full() -> None:
    now = [0.0]
    rate = StartRate("starts", 2, 4, "STARTS", clock=lambda: now[0])
    assert [rate.take("a") for _ in range(5)] == [True] * 4 + [False]
    assert (
        rate.refusal("a")
        == "starts of client 'a': more than 2 started a second (STARTS); the next in 500 ms"
    )
    now[0] += 0.5
    assert rate.take("a") and not rate.take("a")
    for i in range(_FORGET_PAST):
        rate.take(f"id-{i}")
    now[0] += 2  # every bucket full again: the sweep forgets them all but the one it keeps
    rate.take("b")
    assert len(rate._buckets) == 1


async def test_a_viewer_already_served_keeps_every_frame_while_the_excess_is_refused(
    pki: Path, videos: Path, connect: Connect
) -> None:
    async with soccer_budgets(pki, videos, max_decoders=1, max_decoders_per_client=1) as server:
        viewer = stub(connect, server, pki, "other")
        flood = stub(connect, server, pki)
        live = soccer_pb2.Match(id="small", encoding=soccer_pb2.JPEG)
        watching = viewer.Watch(live, timeout=60).__aiter__()
        frames = [await anext(watching)]
        excess = await asyncio.gather(
            *(refused(flood.Watch(unpaced(start_frame=n), timeout=30).read()) for n in range(20))
        )
        assert all("(SOCCER_MAX_DECODERS)" in details for details in excess)
        frames += [v async for v in watching]
        indexes = [v.frame_index for v in frames]
        assert indexes == list(range(indexes[0], 30))
        assert all(v.skipped_frames == 0 for v in frames)


async def test_frame_buffers_refuse_a_stream_they_cannot_hold_and_are_all_given_back(
    pki: Path, videos: Path, connect: Connect
) -> None:
    # 1 MiB holds a few JPEG frames of `small` but not one raw 720p frame of `demo` (2.6 MiB).
    async with soccer_budgets(pki, videos, buffer_mib=1) as server:
        soccer = stub(connect, server, pki)
        details = await refused(soccer.Watch(soccer_pb2.Match(id="demo"), timeout=30).read())
        assert details.startswith("soccer frame buffers: ")
        assert details.endswith(" of 1 MiB in use (SOCCER_BUFFER_MIB)")
        assert OpenCaptures.count == 0
        live = soccer_pb2.Match(id="small", encoding=soccer_pb2.JPEG)
        watched = await asyncio.gather(
            *(_frames(soccer, live) for _ in range(3)), _frames(soccer, unpaced())
        )
        assert all(len(frames) >= 1 for frames in watched)
        service = server.services[0]
        assert isinstance(service, Soccer)
        await until(lambda: service.hubs.buffers.used == 0 and decoders(server) == 0)


async def test_one_client_holds_at_most_its_share_of_the_frame_buffers(
    pki: Path, videos: Path, connect: Connect
) -> None:
    """A raw 720p stream of `demo` reserves about 7.9 MiB: with a 10 MiB share, one client
    gets one such stream and another client still gets its own."""
    async with soccer_budgets(pki, videos, buffer_mib=100, client_buffer_mib=10) as server:
        soccer = stub(connect, server, pki)
        first = await started(soccer, soccer_pb2.Match(id="demo"))
        details = await refused(soccer.Watch(soccer_pb2.Match(id="demo"), timeout=30).read())
        assert details.startswith("soccer frame buffers: client 'client' holds 8 of its 10 MiB")
        assert details.endswith("(SOCCER_CLIENT_BUFFER_MIB)")
        other = await started(stub(connect, server, pki, "other"), soccer_pb2.Match(id="demo"))
        await ended(server, first + other)
        service = server.services[0]
        assert isinstance(service, Soccer)
        await until(lambda: service.hubs.buffers.used == 0)
        again = await started(soccer, soccer_pb2.Match(id="demo"))
        await ended(server, again)


async def _frames(soccer: Stub, match: soccer_pb2.Match) -> list[soccer_pb2.Video]:
    return [v async for v in soccer.Watch(match, timeout=60)]


def published(index: int, size: int) -> Published:
    return Published(index, {(soccer_pb2.JPEG, 80): b"x" * size})


async def test_a_viewers_queue_is_bounded_in_bytes_and_shared_frames_count_once() -> None:
    buffers = Buffers(100 * MiB)
    fmt = (soccer_pb2.JPEG, 80)
    viewers = [Viewer(fmt, 0, queue_frames=15, buffers=buffers, max_bytes=MiB) for _ in range(2)]
    frames = [published(index, 400 * 1024) for index in range(4)]
    for frame in frames[:2]:
        for viewer in viewers:
            viewer.offer(frame)
    assert buffers.used == 800 * 1024  # two frames held by two queues: counted once each
    for viewer in viewers:
        viewer.offer(frames[2])  # 1.2 MiB would not fit: the viewer skips to the newest
    assert [len(v.queue) for v in viewers] == [1, 1]
    assert buffers.used == 400 * 1024
    assert all(v.skipped == 2 for v in viewers)
    for viewer in viewers:
        viewer.close()
    assert buffers.used == 0


async def test_while_the_buffers_are_spent_a_viewer_keeps_only_the_newest_frames() -> None:
    buffers = Buffers(MiB)
    viewer = Viewer((soccer_pb2.JPEG, 80), 0, queue_frames=15, buffers=buffers, max_bytes=MiB)
    buffers.add(MiB)  # say, frames in flight to stalled viewers
    for index in range(5):
        viewer.offer(published(index, 1024))
    assert len(viewer.queue) <= 2


def test_decoders_per_client_cannot_exceed_the_servers(videos: Path) -> None:
    with pytest.raises(ValueError, match="SOCCER_MAX_DECODERS_PER_CLIENT"):
        SoccerSettings(videos, max_decoders=1, max_decoders_per_client=2)


def test_soccer_sizes_its_stream_budget_for_its_viewers() -> None:
    server, own = load_settings(PROGRAM, [])
    assert (server.max_streams, server.max_streams_per_client) == (500, 250)
    assert (own.max_decoders, own.max_decoders_per_client) == (3, 2)
    assert own.client_buffer_mib == 80
