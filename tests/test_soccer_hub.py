"""The broadcast hub: one decoder per match shared by live viewers, and its skip policy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api import soccer_pb2, soccer_pb2_grpc
from grpckit.calls.budgets import Budget
from soccer import hub as hub_module
from soccer.hub import Hub, Hubs, Published, Viewer
from soccer.video import OpenCaptures
from tests.conftest import Connect, client_tls, eventually
from tests.test_soccer import soccer_server


@pytest.fixture
async def soccer(
    pki: Path, videos: Path, connect: Connect
) -> AsyncIterator[soccer_pb2_grpc.SoccerAsyncStub]:
    async with soccer_server(pki, videos) as server:
        yield soccer_pb2_grpc.SoccerStub(connect(server.port, client_tls(pki)))


async def no_captures() -> None:
    assert OpenCaptures.count == 0


async def test_live_viewers_of_a_match_share_one_decoder(
    soccer: soccer_pb2_grpc.SoccerAsyncStub,
) -> None:
    def match(start_frame: int | None = None) -> soccer_pb2.Match:
        return soccer_pb2.Match(id="small", encoding=soccer_pb2.JPEG, start_frame=start_frame)

    first = soccer.Watch(match(), timeout=30).__aiter__()
    early = [await anext(first) for _ in range(5)]
    # No start frame: joins the broadcast where it is.
    live = soccer.Watch(match(), timeout=30).__aiter__()
    # Start frame 0, still in the hub's backlog: gets the backlog first, then live frames.
    replay = soccer.Watch(match(start_frame=0), timeout=30).__aiter__()
    late = [await anext(live)]
    again = [await anext(replay)]
    assert OpenCaptures.count == 1
    early += [v async for v in first]
    late += [v async for v in live]
    again += [v async for v in replay]
    assert [v.frame_index for v in early] == [v.frame_index for v in again] == list(range(30))
    joined = late[0].frame_index
    assert joined >= 5
    assert [v.frame_index for v in late] == list(range(joined, 30))
    # One decoder, one encoding: every viewer got the very same bytes for a frame.
    assert [v.data for v in late] == [v.data for v in early[joined:]]
    await eventually(no_captures)


async def test_a_start_frame_outside_the_backlog_gets_its_own_decoder(
    soccer: soccer_pb2_grpc.SoccerAsyncStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test videos are a second long: a frame far enough ahead is none at all.
    monkeypatch.setattr(hub_module, "AHEAD_FRAMES", 0)
    first = soccer.Watch(soccer_pb2.Match(id="small", start_frame=0, max_frames=3), timeout=30)
    other = soccer.Watch(soccer_pb2.Match(id="small", start_frame=20, max_frames=3), timeout=30)
    assert [v.frame_index async for v in other] == [20, 21, 22]
    assert [v.frame_index async for v in first] == [0, 1, 2]
    await eventually(no_captures)


async def test_a_start_frame_a_little_ahead_of_a_hub_joins_it_and_starts_there(
    videos: Path,
) -> None:
    """Viewers resuming on a new replica, each from its own next frame: one decoder."""
    decoders = Budget.of("decoders", 1, "DECODERS", 1)
    hubs = Hubs(decoders)
    fmt = (soccer_pb2.JPEG, 80)
    first_hub, first = hubs.watch(videos / "small.mp4", fmt, 0, client="a")
    second_hub, second = hubs.watch(videos / "small.mp4", fmt, 20, client="a")
    assert second_hub is first_hub and decoders.total.in_use == 1
    assert soccer_pb2.Video.FromString(await first.next() or b"").frame_index == 0
    indexes = [
        soccer_pb2.Video.FromString(await second.next() or b"").frame_index for _ in range(3)
    ]
    assert indexes == [20, 21, 22]
    hubs.leave(second_hub, second)
    hubs.leave(first_hub, first)
    assert decoders.total.in_use == 0
    await eventually(no_captures)


async def test_a_live_viewer_never_joins_a_replay_started_for_a_start_frame(
    soccer: soccer_pb2_grpc.SoccerAsyncStub,
) -> None:
    """Where a live viewer is in the match must not depend on another client's start frame."""
    replay = soccer.Watch(soccer_pb2.Match(id="small", start_frame=20), timeout=30)
    first = await replay.read()
    assert isinstance(first, soccer_pb2.Video) and first.frame_index == 20
    live = soccer.Watch(soccer_pb2.Match(id="small", max_frames=1), timeout=30)
    assert [v.frame_index async for v in live] == [0]
    replay.cancel()
    await eventually(no_captures)


def published(index: int) -> Published:
    message = soccer_pb2.Video(frame_index=index).SerializeToString()
    return Published(index, {(soccer_pb2.RAW, 0): message})


async def test_a_viewer_that_stopped_reading_costs_its_hub_no_encoding(
    videos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of viewers that never read must not make the hub encode for them: that work
    would starve the viewers who do read. The reader still gets every frame."""
    monkeypatch.setattr(hub_module, "STALLED_SECONDS", 0.1)
    hub = Hub(videos / "small.mp4", 0, asyncio.get_running_loop())
    jpeg, raw = (soccer_pb2.JPEG, 80), (soccer_pb2.RAW, 0)
    reading = hub.join(jpeg, 0)
    stalled = hub.join(raw, 0)
    indexes = []
    while (message := await reading.next()) is not None:
        indexes.append(soccer_pb2.Video.FromString(message).frame_index)
    assert indexes == list(range(30))
    frames = [item for item in stalled.queue if isinstance(item, Published)]
    assert frames, "the stalled viewer was offered no frame"
    assert set(frames[-1].messages) == {jpeg}
    # Reading again makes its format wanted again from the next frame on.
    assert stalled.reading(float("inf")) is False
    stalled.queue.clear()
    assert stalled.reading(float("inf")) is True
    hub.stop()
    await eventually(no_captures)


async def test_a_hub_whose_viewers_all_stopped_reading_pauses_until_one_reads(
    videos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streams opened and never read must not keep decoders busy: the CPU is the readers'.
    Reading again resumes the match where the hub paused, with no frame lost to the pause."""
    monkeypatch.setattr(hub_module, "STALLED_SECONDS", 0.1)
    hub = Hub(videos / "small.mp4", 0, asyncio.get_running_loop())
    viewer = hub.join((soccer_pb2.RAW, 0), 0, queue_frames=2)

    async def paused() -> None:
        assert hub.paused_at is not None

    await eventually(paused)
    at = hub.paused_at
    assert at is not None and at < 30
    received = []
    while (message := await viewer.next()) is not None:
        received.append(soccer_pb2.Video.FromString(message))
    indexes = [video.frame_index for video in received]
    # What was queued when it stopped (the newest two), then every frame from the pause on.
    assert indexes[-(30 - at) :] == list(range(at, 30))
    assert hub.paused_at is None
    hub.stop()
    await eventually(no_captures)


async def test_a_finished_match_gives_its_decoder_back_though_a_viewer_stopped_reading(
    videos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Viewers that stop reading before the end must not keep the decoder of a hub whose
    match is over: another client would be refused a decoder nobody uses. (Another viewer
    that reads keeps such a hub going to the end; here the pause is put off instead.)"""
    monkeypatch.setattr(hub_module, "STALLED_SECONDS", 3600)
    decoders = Budget.of("decoders", 1, "DECODERS", 1)
    hubs = Hubs(decoders)
    hub, stalled = hubs.watch(videos / "small.mp4", (soccer_pb2.JPEG, 80), None, client="a")
    assert decoders.refusal("b") is not None

    async def match_over() -> None:
        assert hub.ended

    await eventually(match_over)
    assert stalled.queue, "the viewer read nothing, so its frames are still queued"
    assert decoders.refusal("b") is None
    hubs.leave(hub, stalled)  # leaving later gives nothing back twice
    assert decoders.refusal("b") is None and decoders.total.in_use == 0
    await eventually(no_captures)


async def test_a_viewer_that_falls_behind_skips_to_the_newest_frame() -> None:
    viewer = Viewer((soccer_pb2.RAW, 0), next_index=0, queue_frames=4)
    for index in range(4):
        viewer.offer(published(index))
    viewer.offer(published(4))  # the queue is full: frames 0-3 are dropped
    viewer.offer(published(5))
    received = [soccer_pb2.Video.FromString(await viewer.next() or b"") for _ in range(2)]
    assert [(v.frame_index, v.skipped_frames) for v in received] == [(4, 4), (5, 4)]
    assert not viewer.queue


async def test_viewers_that_fell_behind_together_share_each_stamped_frame() -> None:
    viewers = [Viewer((soccer_pb2.RAW, 0), next_index=0, queue_frames=2) for _ in range(2)]
    frames = [published(index) for index in range(4)]
    for frame in frames:
        for viewer in viewers:
            viewer.offer(frame)  # frames 0-1 dropped for both when 2 arrives
    first, second = [[await v.next() for _ in range(2)] for v in viewers]
    assert [soccer_pb2.Video.FromString(m or b"").skipped_frames for m in first] == [2, 2]
    assert all(a is b for a, b in zip(first, second, strict=True))  # one copy, not two
