from __future__ import annotations

import ast
import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from api import soccer_pb2, soccer_pb2_grpc
from grpckit.lifecycle.server import Server
from grpckit.transport.options import SERVER_KEEPALIVE_SECONDS
from soccer import demo_video
from soccer.server import Soccer, SoccerSettings
from soccer.video import (
    InvalidMatchIdError,
    MatchNotFoundError,
    OpenCaptures,
    Probes,
    resolve,
)
from tests.conftest import (
    ROOT,
    Connect,
    cause_of_failed_start,
    client_tls,
    eventually,
    serving,
)


def soccer_server(pki: Path, videos: Path) -> AbstractAsyncContextManager[Server]:
    return serving(pki, "soccer", Soccer(SoccerSettings(videos)))


@pytest.fixture
async def server(pki: Path, videos: Path) -> AsyncIterator[Server]:
    async with soccer_server(pki, videos) as server:
        yield server


@pytest.fixture
def soccer(server: Server, connect: Connect, pki: Path) -> soccer_pb2_grpc.SoccerAsyncStub:
    return soccer_pb2_grpc.SoccerStub(connect(server.port, client_tls(pki)))


async def watch(soccer: soccer_pb2_grpc.SoccerAsyncStub, **match: object) -> list[soccer_pb2.Video]:
    return [v async for v in soccer.Watch(soccer_pb2.Match(**match), timeout=30)]  # type: ignore[arg-type]


async def test_default_watch_is_seed_compatible_raw_bgr_in_real_time(
    soccer: soccer_pb2_grpc.SoccerAsyncStub,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    frames = await watch(soccer, id="demo")
    elapsed = loop.time() - started
    assert len(frames) == 15
    for index, video in enumerate(frames):
        # Exactly what a client that knows only fields 1-3 does:
        frame = np.frombuffer(video.data, dtype=video.data_type).reshape(
            ast.literal_eval(video.data_shape)
        )
        assert video.data_shape == "(720, 1280, 3)"
        assert frame.dtype == np.uint8
        assert (video.frame_index, video.width, video.height) == (index, 1280, 720)
        assert video.timestamp == pytest.approx(index / 30)
    # Paced at the video's 30 fps: 15 frames span at least 14/30 s (a floor, not a benchmark).
    assert elapsed >= 14 / 30


async def test_jpeg_frames_decode_to_the_announced_size(
    soccer: soccer_pb2_grpc.SoccerAsyncStub,
) -> None:
    frames = await watch(
        soccer, id="small", encoding=soccer_pb2.JPEG, jpeg_quality=60, unpaced=True
    )
    assert len(frames) == 30
    raw = await watch(soccer, id="small", unpaced=True, max_frames=1)
    for video in frames:
        buffer = np.frombuffer(video.data, dtype=video.data_type).reshape(
            ast.literal_eval(video.data_shape)
        )
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        assert image is not None
        assert image.shape == (video.height, video.width, 3) == (180, 320, 3)
        assert video.encoding == soccer_pb2.JPEG
    assert len(frames[0].data) < len(raw[0].data) / 4


async def test_start_frame_and_frame_limit(soccer: soccer_pb2_grpc.SoccerAsyncStub) -> None:
    frames = await watch(soccer, id="small", start_frame=5, max_frames=3, unpaced=True)
    assert [v.frame_index for v in frames] == [5, 6, 7]
    whole = await watch(soccer, id="small", unpaced=True)
    # Seeking gives the same pixels as reading up to the frame.
    assert frames[0].data == whole[5].data


async def test_frames_over_the_default_4_mib_limit(
    tmp_path: Path, pki: Path, connect: Connect
) -> None:
    demo_video.generate(tmp_path / "hd.mp4", seconds=0.1, fps=30, width=1920, height=1080)
    async with soccer_server(pki, tmp_path) as server:
        soccer = soccer_pb2_grpc.SoccerStub(connect(server.port, client_tls(pki)))
        frames = await watch(soccer, id="hd", unpaced=True)
        assert len(frames) == 3
        assert all(len(v.data) == 1920 * 1080 * 3 > 4 * 1024 * 1024 for v in frames)


@pytest.mark.parametrize(
    ("match", "code"),
    [
        ({"id": ""}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "../etc/passwd"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "a/b"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "/etc/passwd"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "%2e%2e"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "demo.mp4"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "demo\x00"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "x" * 65}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "escape"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "missing"}, grpc.StatusCode.NOT_FOUND),
        ({"id": "broken"}, grpc.StatusCode.DATA_LOSS),
        ({"id": "small", "jpeg_quality": 101}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "small", "start_frame": -1}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "small", "max_frames": -1}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "small", "encoding": 7}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "small", "start_frame": 30}, grpc.StatusCode.OUT_OF_RANGE),
    ],
)
async def test_bad_matches_get_their_status_and_no_frame(
    soccer: soccer_pb2_grpc.SoccerAsyncStub,
    videos: Path,
    tmp_path: Path,
    match: dict[str, object],
    code: grpc.StatusCode,
) -> None:
    outside = tmp_path / "outside.mp4"
    demo_video.generate(outside, seconds=0.1, width=64, height=64)
    link = videos / "escape.mp4"
    if not link.is_symlink():
        link.symlink_to(outside)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for video in soccer.Watch(soccer_pb2.Match(**match), timeout=10):  # type: ignore[arg-type]
            received.append(video)
    assert error.value.code() == code, error.value.details()
    assert received == []


def test_a_match_is_its_file_or_a_symlink_that_stays_in_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    (root / "takes").mkdir(parents=True)
    (root / "takes" / "final.mp4").write_bytes(b"not decoded here")
    (root / "plain.mp4").write_bytes(b"not decoded here")
    (root / "linked.mp4").symlink_to(root / "takes" / "final.mp4")
    (tmp_path / "outside.mp4").write_bytes(b"")
    (root / "escape.mp4").symlink_to(tmp_path / "outside.mp4")
    (root / "dangling.mp4").symlink_to(root / "gone.mp4")
    (root / "folder.mp4").mkdir()
    assert resolve(root, "plain") == root / "plain.mp4"
    assert resolve(root, "linked") == root / "takes" / "final.mp4"
    with pytest.raises(InvalidMatchIdError, match="outside the videos directory"):
        resolve(root, "escape")
    for missing in ("gone", "dangling", "folder"):
        with pytest.raises(MatchNotFoundError, match=f"no match '{missing}'"):
            resolve(root, missing)


async def test_a_probe_is_reused_for_its_time_and_a_replaced_video_seen_after(
    tmp_path: Path,
) -> None:
    video = tmp_path / "match.mp4"
    demo_video.generate(video, seconds=0.1, width=64, height=64)
    reused, fresh = Probes(seconds=3600), Probes(seconds=0)
    assert (await reused.info(video)).width == (await fresh.info(video)).width == 64
    demo_video.generate(video, seconds=0.1, width=96, height=64)
    assert (await reused.info(video)).width == 64
    assert (await fresh.info(video)).width == 96


async def test_cancelling_a_watch_releases_the_capture(
    soccer: soccer_pb2_grpc.SoccerAsyncStub,
) -> None:
    call = soccer.Watch(soccer_pb2.Match(id="small"))
    stream = call.__aiter__()
    await stream.__anext__()
    await stream.__anext__()
    assert OpenCaptures.count == 1
    call.cancel()

    async def released() -> None:
        assert OpenCaptures.count == 0

    await eventually(released, within=5)


async def test_shutdown_ends_a_live_watch_with_a_resume_point(
    server: Server, soccer: soccer_pb2_grpc.SoccerAsyncStub
) -> None:
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for video in soccer.Watch(soccer_pb2.Match(id="small"), timeout=30):
            received.append(video.frame_index)
            if len(received) == 3:
                asyncio.get_running_loop().create_task(server.stop(5))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"start_frame={received[-1] + 1}" in (error.value.details() or "")


@pytest.mark.parametrize("start_frame", [None, 5])
async def test_a_watch_that_reaches_a_stopping_replica_gets_a_resume_point_not_an_end(
    pki: Path, videos: Path, connect: Connect, start_frame: int | None
) -> None:
    """A viewer resuming during a rollout can reach the old replica after it began to stop
    (the edge and DNS learn of the drain a moment later): before its first frame, its stream
    must end UNAVAILABLE with where to resume, never OK with no frames, which a viewer takes
    for the match's end."""
    service = Soccer(SoccerSettings(videos))
    async with serving(pki, "soccer", service) as server:
        stub = soccer_pb2_grpc.SoccerStub(connect(server.port, client_tls(pki)))
        await service.stop()
        request = soccer_pb2.Match(id="small", start_frame=start_frame, encoding=soccer_pb2.JPEG)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for _ in stub.Watch(request, timeout=30):
                pytest.fail("a frame from a replica that is stopping")
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value
    assert f"start_frame={start_frame or 0}" in (error.value.details() or "")


async def test_a_missing_videos_folder_fails_start_up(tmp_path: Path, pki: Path) -> None:
    missing = tmp_path / "no-videos"
    cause = await cause_of_failed_start(pki, "soccer", "--videos-dir", str(missing))
    assert str(missing) in cause


async def test_a_viewer_that_vanished_is_found_and_freed(pki: Path, tmp_path: Path) -> None:
    """A viewer process frozen mid-match (SIGSTOP) holds its connection open and answers
    nothing, as a host that vanished would: the server's keepalive ping goes unanswered, the
    connection ends, and the stream's place, hub and buffers are freed. The time it takes
    is printed (SERVER_KEEPALIVE_SECONDS bounds it at twice that)."""
    demo_video.generate(tmp_path / "long.mp4", seconds=20.0, fps=30, width=320, height=180)
    soccer = Soccer(SoccerSettings(tmp_path))
    async with serving(pki, "soccer", soccer) as server:
        viewer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "client", "--target", f"localhost:{server.port}",
            "--ca", str(pki / "ca.crt"), "--cert", str(pki / "client.crt"),
            "--key", str(pki / "client.key"), "soccer", "watch", "long",
            cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert viewer.stderr is not None
            assert (await asyncio.wait_for(viewer.stderr.readline(), 30)).startswith(b"served by")

            async def watched() -> None:
                assert any(hub.next_index >= 30 for hub in soccer.hubs.live())

            await eventually(watched, within=30)
            viewer.send_signal(signal.SIGSTOP)
            frozen = time.monotonic()

            async def freed() -> None:
                assert server.calls_in_flight == 0
                assert soccer.hubs.live() == []
                assert soccer.hubs.buffers.used == 0

            await eventually(freed, within=4 * SERVER_KEEPALIVE_SECONDS)
            print(f"vanished viewer freed in {time.monotonic() - frozen:.1f} s")
        finally:
            viewer.kill()
            await viewer.wait()
