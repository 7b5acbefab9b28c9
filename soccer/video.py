"""Matches on disk: safe id resolution and a decoder that owns its OpenCV capture.

Every call on a capture runs on the reader's own single thread: OpenCV captures are not
thread-safe, and the event loop must never wait on decoding or encoding.
"""

import contextlib
import functools
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias, cast

import cv2
import numpy as np
import numpy.typing as npt

from api import soccer_pb2
from soccer import metrics

MATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_JPEG_QUALITY = 80

Frame = npt.NDArray[np.uint8]
Encoding: TypeAlias = soccer_pb2.Encoding.ValueType


class InvalidMatchIdError(ValueError):
    pass


class MatchNotFoundError(LookupError):
    pass


class VideoUnreadableError(OSError):
    pass


def resolve(videos_dir: Path, match_id: str) -> Path:
    """The video file for `match_id`, never a path outside `videos_dir`."""
    if not MATCH_ID.fullmatch(match_id):
        raise InvalidMatchIdError(
            f"match id must be 1-64 letters, digits, '-' or '_', got {match_id[:80]!r}"
        )
    root = videos_dir.resolve()
    path = (root / f"{match_id}.mp4").resolve()
    # The pattern keeps '/' and '..' out; this catches symlinks that point elsewhere.
    if not path.is_relative_to(root):
        raise InvalidMatchIdError(f"match {match_id!r} points outside the videos directory")
    if not path.is_file():
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
    stat = path.stat()
    return _probe(path, (stat.st_mtime_ns, stat.st_size))


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


def encode(
    frame: Frame, encoding: Encoding, quality: int, index: int, fps: float
) -> soccer_pb2.Video:
    """The Video message for frame `index` of a video playing at `fps`."""
    started = time.perf_counter()
    video = _encode(frame, encoding, quality, index, fps)
    metrics.encode_duration.record(time.perf_counter() - started, metrics.LABELS[encoding])
    return video


def _encode(
    frame: Frame, encoding: Encoding, quality: int, index: int, fps: float
) -> soccer_pb2.Video:
    height, width = frame.shape[:2]
    if encoding == soccer_pb2.JPEG:
        ok, buffer = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise VideoUnreadableError("JPEG encoding failed")
        data = buffer.tobytes()
        # Keeps the seed formula valid: frombuffer(uint8).reshape((n,)) is what imdecode takes.
        shape = f"({len(data)},)"
    else:
        data = frame.tobytes()
        shape = str(frame.shape)
    return soccer_pb2.Video(
        data=data,
        data_type=str(frame.dtype),
        data_shape=shape,
        width=width,
        height=height,
        encoding=encoding,
        frame_index=index,
        timestamp=index / fps,
    )


# Below the hubs' threads, above nothing else: they still get the cores when nobody waits.
UNPACED_NICENESS = 10


def yield_to_real_time() -> None:
    """Lower the calling thread's CPU priority, and that of the FFmpeg threads it starts
    (Linux keeps a niceness per thread, and a new thread inherits it)."""
    # Not Linux, or a sandbox that forbids it: fair shares then.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), UNPACED_NICENESS)


class FrameReader:
    """Decodes (and encodes) one video's frames off the event loop, on one thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"decode-{path.stem}")
        self._capture: cv2.VideoCapture | None = None

    def open(self, start_frame: int) -> None:
        self._capture = open_capture(self._path, start_frame)

    def next(
        self, encoding: Encoding, quality: int, index: int, fps: float
    ) -> soccer_pb2.Video | None:
        assert self._capture is not None
        ok, frame = self._capture.read()
        return encode(cast(Frame, frame), encoding, quality, index, fps) if ok else None

    def close(self) -> None:
        if self._capture is not None:
            close_capture(self._capture)
            self._capture = None

    @property
    def thread(self) -> ThreadPoolExecutor:
        return self._thread
