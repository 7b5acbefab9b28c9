"""Watching a match: rebuild and check every frame, show progress, optionally save an mp4."""

import argparse
import ast
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import cv2
import grpc
import numpy as np
import numpy.typing as npt

from api import soccer_pb2, soccer_pb2_grpc
from client.common import DEFAULT_TIMEOUT, ClientError, Settings, emit, served_by
from client.stall import StallDetector
from grpckit.client.channel import open_channel

Frame = npt.NDArray[np.uint8]
FALLBACK_FPS = 30.0


def decode_frame(video: soccer_pb2.Video) -> Frame:
    """Rebuild a frame exactly as the original clients do, and refuse one that contradicts
    its own header, so a server bug shows up here rather than as a garbled picture."""
    where = f"frame {video.frame_index}"
    try:
        shape = ast.literal_eval(video.data_shape)
        array = np.frombuffer(video.data, dtype=video.data_type).reshape(shape)
    except (ValueError, TypeError, SyntaxError) as error:
        raise ClientError(f"{where}: cannot rebuild {video.data_shape!r}: {error}") from error
    if video.encoding == soccer_pb2.JPEG:
        image = cv2.imdecode(array, cv2.IMREAD_COLOR)
        if image is None:
            raise ClientError(f"{where}: JPEG data does not decode")
    else:
        image = array
    # A server on the original contract sends no width and height: then any BGR frame will do.
    expected = (video.height, video.width, 3) if video.width or video.height else None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ClientError(f"{where}: not a BGR uint8 image: {image.dtype} {image.shape}")
    if expected is not None and image.shape != expected:
        raise ClientError(f"{where}: decodes to {image.shape}, header says {expected}")
    # A no-op once the checks above passed; it tells the type checker what they proved.
    return image.astype(np.uint8, copy=False)


class Recorder:
    """Writes frames to an mp4. The writer needs the frame rate up front, so the first frame
    waits for the second one: their timestamps tell the rate."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self._first: tuple[Frame, int, float] | None = None

    def add(self, frame: Frame, index: int, timestamp: float) -> None:
        if self._writer is None and self._first is None:
            self._first = (frame, index, timestamp)
            return
        if self._first is not None:
            first, first_index, first_time = self._first
            self._first = None
            self._open(first, _fps(index - first_index, timestamp - first_time))
            self._write(first)
        self._write(frame)

    def close(self) -> None:
        if self._first is not None:
            self._open(self._first[0], FALLBACK_FPS)
            self._write(self._first[0])
            self._first = None
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def _open(self, frame: Frame, fps: float) -> None:
        height, width = frame.shape[:2]
        self._size = (width, height)
        fourcc = cv2.VideoWriter.fourcc(*"mp4v")
        self._writer = cv2.VideoWriter(str(self.path), fourcc, fps, self._size)
        if not self._writer.isOpened():
            raise ClientError(f"cannot write {self.path}")

    def _write(self, frame: Frame) -> None:
        # VideoWriter silently drops frames of another size; better to stop and say so.
        if (frame.shape[1], frame.shape[0]) != self._size:
            raise ClientError(f"frame size changed to {frame.shape}: cannot save to one mp4")
        self._writer.write(frame)


def _fps(frames: int, seconds: float) -> float:
    """Frames over the time they cover; frame indexes count the ones skipped in between."""
    if frames <= 0 or seconds <= 0:
        return FALLBACK_FPS
    fps = frames / seconds
    return fps if 0 < fps <= 1000 else FALLBACK_FPS


@dataclass
class Summary:
    match: str
    encoding: str
    frames: int = 0
    bytes: int = 0
    first_frame: int | None = None
    last_frame: int | None = None
    skipped: int = 0
    # Times the stream broke and was resumed from the next frame.
    resumed: int = 0
    # Of those, times it stalled: no frame came for a few frame intervals.
    stalled: int = 0
    # How far behind the stream's own clock the frames came, at worst: a frame's arrival
    # against the first frame's, less the time between their timestamps. A viewer that
    # keeps up stays near 0 however long the match; buffers filling up on a slow link
    # show here.
    lag: float = 0.0
    # The longest time between two frames' arrivals: what a viewer saw as a stall (a
    # resumed stream's gap included, from the last frame before the break to the first after).
    longest_gap: float = 0.0
    _clock: tuple[float, float] | None = None
    _arrived: float | None = None
    # The server of each attempt, in order: with replicas, a resumed stream moves on.
    served_by: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, video: soccer_pb2.Video) -> None:
        """Count a frame; skipped frames come from gaps in the indexes, whatever the server says."""
        if self.last_frame is not None and video.frame_index > self.last_frame:
            self.skipped += video.frame_index - self.last_frame - 1
        if self.first_frame is None:
            self.first_frame = video.frame_index
        self.last_frame = video.frame_index
        self.frames += 1
        self.bytes += len(video.data)
        now = time.monotonic()
        if self._arrived is not None:
            self.longest_gap = max(self.longest_gap, now - self._arrived)
        self._arrived = now
        if self._clock is None:
            self._clock = (now, video.timestamp)
        else:
            self.lag = max(self.lag, (now - self._clock[0]) - (video.timestamp - self._clock[1]))

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        seconds = max(self.seconds, 1e-9)
        return (
            f"frames {self.frames}  {self.frames / seconds:.1f} fps  "
            f"{self.bytes / seconds / 1e6:.1f} MB/s  skipped {self.skipped}"
        )

    def record(self) -> dict[str, Any]:
        seconds = self.seconds
        return {
            "match": self.match,
            "frames": self.frames,
            "seconds": round(seconds, 3),
            "fps": round(self.frames / seconds, 2) if seconds > 0 else 0.0,
            "bytes": self.bytes,
            "encoding": self.encoding,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "skipped": self.skipped,
            "resumed": self.resumed,
            "stalled": self.stalled,
            "lag_s": round(self.lag, 3),
            "longest_gap_s": round(self.longest_gap, 3),
            "served_by": self.served_by,
        }


class Progress:
    """A live line on a terminal only: carriage returns would garble a log file."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self._shown = 0.0
        self._width = 0

    def update(self, summary: Summary) -> None:
        now = time.monotonic()
        if self.live and now - self._shown >= 0.2:
            self._shown = now
            line = summary.line()
            self.stream.write(f"\r{line.ljust(self._width)}")
            self.stream.flush()
            self._width = len(line)

    def finish(self, summary: Summary, note: str = "") -> None:
        """The summary line, shown always, over the live line if there is one."""
        prefix = "\r" if self.live else ""
        line = f"{summary.line()}  in {summary.seconds:.1f}s{note}"
        self.stream.write(f"{prefix}{line.ljust(self._width)}\n")
        self.stream.flush()
        self._width = 0

    def note(self, message: str) -> None:
        self.close()
        self.stream.write(f"{message}\n")
        self.stream.flush()

    def close(self) -> None:
        """End a live line left unfinished, so an error message starts on a line of its own."""
        if self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def match_request(args: argparse.Namespace) -> soccer_pb2.Match:
    return soccer_pb2.Match(
        id=args.match,
        encoding=soccer_pb2.JPEG if args.encoding == "jpeg" else soccer_pb2.RAW,
        jpeg_quality=args.quality,
        start_frame=args.start,
        max_frames=args.frames,
        unpaced=args.unpaced,
    )


async def wait_connected(channel: grpc.aio.Channel, target: str) -> None:
    """Without a deadline a wait-for-ready call would wait forever for a server that is not
    there, so a watch without --timeout still gives up on connecting after a while."""
    try:
        await asyncio.wait_for(channel.channel_ready(), DEFAULT_TIMEOUT)
    except TimeoutError:
        raise ClientError(
            f"UNAVAILABLE: no connection to {target} within {DEFAULT_TIMEOUT:g}s"
        ) from None


RESUME_ATTEMPTS = 5
# Bytes in flight at most (the stream's fixed HTTP/2 window, grpckit/client/channel.py): a quarter
# second of the 720p JPEG stream (about 1.5 MB/s). Behind a 1 MB/s link the viewer stays
# within 0.8 s of live; 100 ms +- 20 ms each way (a 200 ms round trip carries 1.9 MB/s in
# this window) costs no frame (`make faults`).
WINDOW_KIB = 384


def resumed_request(match: soccer_pb2.Match, summary: Summary) -> soccer_pb2.Match | None:
    """The request that continues where the stream broke off; None when nothing is left."""
    request = soccer_pb2.Match()
    request.CopyFrom(match)
    if summary.last_frame is not None:
        request.start_frame = summary.last_frame + 1
    if match.max_frames:
        request.max_frames = match.max_frames - summary.frames
        if request.max_frames <= 0:
            return None
    return request


def encoding_header(match: soccer_pb2.Match) -> tuple[tuple[str, str], ...]:
    """The encoding the request asks for, as a header the edge routes on
    (deploy/edge/envoy.yaml): JPEG streams go through a path that reads little ahead of the
    viewer, so that on a slow link the replica, not the edge, holds back what the viewer
    cannot take, and skips it. A replica ignores the header."""
    return (("soccer-encoding", soccer_pb2.Encoding.Name(match.encoding).lower()),)


def broke_in_transit(error: grpc.aio.AioRpcError) -> bool:
    """Whether the stream ended because a connection on its way broke, not by the server's
    answer: UNAVAILABLE (the server shut down or died), or the HTTP/2 reset a proxy sends
    when its connection to the replica breaks after the stream started (Envoy, the edge;
    gRPC 1.85 reports it as INTERNAL "Stream removed (RST_STREAM (Received RST_STREAM with
    error code 2))"). Either way the next call, from the next frame, may go to another
    replica."""
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    details = error.details() or ""
    return code == grpc.StatusCode.INTERNAL and "RST_STREAM" in details


class StalledError(Exception):
    """No frame came within the stall detector's limit: the replica stopped sending."""


async def watch(
    channel: grpc.aio.Channel, match: soccer_pb2.Match, deadline: float | None, save: Path | None
) -> Summary:
    """Receive the whole stream, resuming elsewhere from the next frame when it breaks.

    A stream that breaks in transit (broke_in_transit: the server shut down or died, or the
    edge lost its connection to it), or that stalls (no frame for a few frame intervals,
    client/stall.py: the replica froze or the network to it went dark, which closes
    nothing), is called again with `start_frame` set to the first frame not received, so no
    frame is lost; round_robin sends the new call to the next replica. Each call is
    cancelled however this ends.
    """
    stub = soccer_pb2_grpc.SoccerStub(channel)
    summary = Summary(match.id, soccer_pb2.Encoding.Name(match.encoding).lower())
    recorder = Recorder(save) if save else None
    progress = Progress(sys.stderr)
    stalls = StallDetector()
    request: soccer_pb2.Match | None = match
    failures = 0
    try:
        while request is not None:
            call = stub.Watch(request, timeout=deadline, metadata=encoding_header(request))
            stalls.restart()
            try:
                async with asyncio.timeout(stalls.answer_limit):
                    summary.served_by.append(served_by(await call.initial_metadata()))
                progress.note(f"served by {summary.served_by[-1]}")
                while True:
                    try:
                        async with asyncio.timeout(stalls.limit):
                            video = await call.read()
                    except TimeoutError:
                        raise StalledError(f"no frame for {stalls.limit:.1f}s") from None
                    if not isinstance(video, soccer_pb2.Video):  # grpc.aio.EOF
                        break
                    frame = decode_frame(video)
                    summary.add(video)
                    stalls.frame(video.frame_index, video.timestamp)
                    failures = 0
                    if recorder:
                        recorder.add(frame, video.frame_index, video.timestamp)
                    progress.update(summary)
                request = None
            except (grpc.aio.AioRpcError, StalledError, TimeoutError) as error:
                failures += 1
                if isinstance(error, grpc.aio.AioRpcError):
                    if not broke_in_transit(error) or failures > RESUME_ATTEMPTS:
                        raise
                    why = error.details()
                elif failures > RESUME_ATTEMPTS:
                    raise ClientError(f"UNAVAILABLE: stream stalled {failures} times") from None
                else:
                    summary.stalled += 1
                    why = str(error) or f"no answer for {stalls.limit:.1f}s"
                request = resumed_request(match, summary)
                summary.resumed += 1
                progress.note(f"stream broke ({why}); resuming")
            finally:
                call.cancel()
        progress.finish(summary)
    except asyncio.CancelledError:
        progress.finish(summary, "  (interrupted)")
        raise
    finally:
        progress.close()
        if recorder:
            recorder.close()
    return summary


async def run_watch(settings: Settings, args: argparse.Namespace) -> int:
    target = settings.target_for("soccer")
    window = args.window * 1024
    async with open_channel(target, settings.tls, receive_window=window) as channel:
        if settings.timeout is None:
            await wait_connected(channel, target)
        summary = await watch(channel, match_request(args), settings.timeout, args.save)
    record = summary.record()
    if args.save:
        record["saved"] = str(args.save)
    emit(record)
    return 0
