"""Matches on disk: safe id resolution and a decoder that owns its OpenCV capture.

Every call on a capture runs on the reader's own single thread: OpenCV captures are not
thread-safe, and the event loop must never wait on decoding or encoding.

An unpaced viewer's reader decodes and encodes for that viewer alone, so its work shows in
the viewer's trace: soccer/server.py runs the reader's calls in the call's context, and with
its span recording the reader adds span events to it: "soccer.decoder.opened" (how long
opening and seeking took) and "soccer.frame" (decode and encode times, bytes) for the first
`TRACED_FRAMES` frames. Those are the start-up a trace is read for; the steady state is
in the metrics (soccer_encode_duration_seconds), and a stream of thousands of events would
be cut by the SDK's limit (128 a span) anyway. Past them, or untraced, a frame costs one
integer comparison more. The hubs' shared decodes and encodes serve many viewers at once and
are no one viewer's: they are in no trace.
"""

import asyncio
import contextlib
import functools
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias, cast

import cv2
import numpy as np
import numpy.typing as npt
from opentelemetry import trace

from api import soccer_pb2

MATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_JPEG_QUALITY = 80
# Frames of an unpaced viewer that get a span event each (see the module's docstring).
TRACED_FRAMES = 30

Frame = npt.NDArray[np.uint8]
Encoding: TypeAlias = soccer_pb2.Encoding.ValueType
# Told the encoding and the seconds of every frame encoded: soccer/metrics.py registers its
# histogram here, so that the reader needs to know nothing of metrics.
EncodeObserver: TypeAlias = Callable[[Encoding, float], None]
_encode_observers: list[EncodeObserver] = []


def observe_encodes(observer: EncodeObserver) -> None:
    """Have `observer` called with (encoding, seconds) after every frame `encode` makes."""
    _encode_observers.append(observer)


class InvalidMatchIdError(ValueError):
    pass


class MatchNotFoundError(LookupError):
    pass


class VideoUnreadableError(OSError):
    pass


def resolve(root: Path, match_id: str) -> Path:
    """The video file for `match_id` in `root`, the videos directory resolved (no symlink in
    it), never a path outside it.

    Every Watch asks, refused ones too, so the usual case is one system call: the pattern
    keeps '/' and '..' out, so only the file itself can be a symlink, and only then is the
    path resolved (36 us a call when every component was, the root included)."""
    if not MATCH_ID.fullmatch(match_id):
        raise InvalidMatchIdError(
            f"match id must be 1-64 letters, digits, '-' or '_', got {match_id[:80]!r}"
        )
    path = root / f"{match_id}.mp4"
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        raise MatchNotFoundError(f"no match {match_id!r}") from None
    if stat.S_ISLNK(mode):
        path = path.resolve()
        if not path.is_relative_to(root):
            raise InvalidMatchIdError(f"match {match_id!r} points outside the videos directory")
        if not path.is_file():
            raise MatchNotFoundError(f"no match {match_id!r}")
    elif not stat.S_ISREG(mode):
        raise MatchNotFoundError(f"no match {match_id!r}")
    return path


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frame_count: int
    width: int
    height: int


class OpenCaptures:
    """How many captures are open right now: lets tests see that cancelling releases them."""

    count = 0
    _lock = threading.Lock()

    @classmethod
    def add(cls, delta: int) -> None:
        with cls._lock:
            cls.count += delta


@functools.lru_cache(maxsize=256)
def _probe(path: Path, _stamp: tuple[int, int]) -> VideoInfo:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoUnreadableError(f"video {path.name!r} cannot be decoded")
        return VideoInfo(
            fps=capture.get(cv2.CAP_PROP_FPS) or 30.0,
            frame_count=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()


def probe(path: Path) -> VideoInfo:
    """The video's properties, read once per version of the file (blocking: call off-loop)."""
    status = path.stat()
    return _probe(path, (status.st_mtime_ns, status.st_size))


class Probes:
    """`probe`'s answers, reused on the event loop for `seconds`: a burst of viewers joining
    a match then takes no thread hop each (the hop was a quarter of the Python a Watch's
    start ran, 256 viewers joining at once); a file replaced meanwhile is seen within that
    time."""

    REMEMBERED = 256  # as many as `_probe` keeps

    def __init__(self, seconds: float = 1.0) -> None:
        self._seconds = seconds
        self._recent: dict[Path, tuple[float, VideoInfo]] = {}

    async def info(self, path: Path) -> VideoInfo:
        now = time.monotonic()
        recent = self._recent.get(path)
        if recent is not None and now - recent[0] < self._seconds:
            return recent[1]
        info = await asyncio.to_thread(probe, path)
        if len(self._recent) >= self.REMEMBERED:
            self._recent.clear()
        self._recent[path] = (now, info)
        return info


def open_capture(path: Path, start_frame: int) -> cv2.VideoCapture:
    """An open capture positioned at `start_frame`; every one is counted in OpenCaptures
    until `close_capture` (blocking: call off the event loop)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoUnreadableError(f"video {path.name!r} cannot be decoded")
    OpenCaptures.add(1)
    if start_frame:
        capture.set(cv2.CAP_PROP_POS_FRAMES, start_frame)
    return capture


def close_capture(capture: cv2.VideoCapture) -> None:
    capture.release()
    OpenCaptures.add(-1)


def encode(frame: Frame, encoding: Encoding, quality: int, index: int, fps: float) -> bytes:
    """The Video message for frame `index` of a video playing at `fps`, serialized."""
    started = time.perf_counter()
    video = _encode(frame, encoding, quality, index, fps)
    seconds = time.perf_counter() - started
    for observer in _encode_observers:
        observer(encoding, seconds)
    return video


# `data` is field 1, length-delimited: its key, then its length as a varint.
_DATA_KEY = bytes([1 << 3 | 2])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode(frame: Frame, encoding: Encoding, quality: int, index: int, fps: float) -> bytes:
    """The message as protobuf writes it (fields in number order, `data` first), made with
    one copy of the pixels: from the frame's own buffer into the message. Set as a field and
    serialized, a raw 1080p frame (6.2 MB) was copied three times (tobytes, the field, the
    serialization)."""
    height, width = frame.shape[:2]
    if encoding == soccer_pb2.JPEG:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise VideoUnreadableError("JPEG encoding failed")
        # Keeps the seed formula valid: frombuffer(uint8).reshape((n,)) is what imdecode takes.
        shape = f"({data.size},)"
    else:
        data = np.ascontiguousarray(frame)
        shape = str(frame.shape)
    rest = soccer_pb2.Video(
        data_type=str(frame.dtype),
        data_shape=shape,
        width=width,
        height=height,
        encoding=encoding,
        frame_index=index,
        timestamp=index / fps,
    ).SerializeToString()
    return b"".join((_DATA_KEY, _varint(data.nbytes), data.data.cast("B"), rest))


# Below the hubs' threads, above nothing else: they still get the cores when nobody waits.
UNPACED_NICENESS = 10


def yield_to_real_time() -> None:
    """Lower the calling thread's CPU priority, and that of the FFmpeg threads it starts
    (Linux keeps a niceness per thread, and a new thread inherits it)."""
    # Not Linux, or a sandbox that forbids it: fair shares then.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), UNPACED_NICENESS)


def _ms_since(start: float, end: float | None = None) -> float:
    return round(((time.perf_counter() if end is None else end) - start) * 1000, 3)


class FrameReader:
    """Decodes (and encodes) one video's frames off the event loop, on one thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"decode-{path.stem}")
        self._capture: cv2.VideoCapture | None = None
        # Frames still to trace: none unless the caller's span records.
        self._untraced_from = 0

    def open(self, start_frame: int) -> None:
        started = time.perf_counter()
        self._capture = open_capture(self._path, start_frame)
        span = trace.get_current_span()
        if span.is_recording():
            opened = {"soccer.start_frame": start_frame, "soccer.open_ms": _ms_since(started)}
            span.add_event("soccer.decoder.opened", opened)
            self._untraced_from = start_frame + TRACED_FRAMES

    def next(self, encoding: Encoding, quality: int, index: int, fps: float) -> bytes | None:
        assert self._capture is not None
        if index < self._untraced_from:
            return self._traced_next(encoding, quality, index, fps)
        ok, frame = self._capture.read()
        return encode(cast(Frame, frame), encoding, quality, index, fps) if ok else None

    def _traced_next(
        self, encoding: Encoding, quality: int, index: int, fps: float
    ) -> bytes | None:
        assert self._capture is not None
        started = time.perf_counter()
        ok, frame = self._capture.read()
        if not ok:
            return None
        decoded = time.perf_counter()
        video = encode(cast(Frame, frame), encoding, quality, index, fps)
        event = {
            "soccer.frame": index,
            "soccer.decode_ms": _ms_since(started, decoded),
            "soccer.encode_ms": _ms_since(decoded),
            "soccer.bytes": len(video),
        }
        trace.get_current_span().add_event("soccer.frame", event)
        return video

    def close(self) -> None:
        if self._capture is not None:
            close_capture(self._capture)
            self._capture = None

    @property
    def thread(self) -> ThreadPoolExecutor:
        return self._thread
