"""A broadcast hub: one decoder per match, shared by every real-time viewer of it.

Each frame is decoded once, encoded once per (encoding, quality) that some viewer wants, and
serialized once into a `Video` message; viewers get references to the same bytes. Decoding,
encoding and pacing run on the hub's own thread (OpenCV releases the GIL while it works), so
the event loop only hands finished messages out.

A viewer that names no start frame joins the running broadcast (the live hub, started by the
first such viewer) where it is. One whose start frame a hub still holds in its short backlog
joins that hub (the backlog first, then its frames as they come); any other start frame gets
a hub of its own: a replay, which live viewers never join, so that where they are in the
match never depends on another client's start frame.
A viewer that falls behind by more than its queue holds (frames, or bytes) skips to the
newest frame, and the number skipped is carried in `Video.skipped_frames`. The hub stops
when its last viewer leaves, and always releases its capture.

A hub whose viewers have all stopped reading (frames waiting, none taken for
STALLED_SECONDS) pauses: it decodes nothing until one of them reads again or another joins,
then goes on from the frame after the last it published, paced from then. Its broadcast
clock only runs while somebody watches, so a client that opens streams and never reads
holds a decoder (counted in its budget) but not the CPU that viewers who read need.

A hub is a decoder, the scarce thing here: it is taken from the server's decoder budget
(charged to the client whose call started it) when it starts and given back when its last
viewer leaves or its match ends, whichever comes first: viewers that stopped reading before
the end must not keep a finished hub's decoder; joining a running hub costs none. Backlogs
and queues count against the server's frame buffers (soccer/buffers.py).
"""

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import cv2

from api import soccer_pb2
from grpckit.calls.budgets import Budget
from soccer.buffers import Buffers, MiB
from soccer.video import (
    Encoding,
    Frame,
    VideoUnreadableError,
    close_capture,
    encode,
    open_capture,
)

log = logging.getLogger(__name__)

Format = tuple[Encoding, int]  # (encoding, JPEG quality; 0 for raw)

BACKLOG_FRAMES = 30
# How far ahead of a hub a viewer's start frame may be and still join it, waiting for the
# hub to get there: viewers that resume on a new replica, each from its own next frame a
# few frames apart, then share one decoder instead of taking one each.
AHEAD_FRAMES = 30
QUEUE_FRAMES = 15
# While the server's frame buffers are spent: enough for a viewer that keeps up (a frame
# being sent, one waiting), nothing for one that has stopped reading.
SPENT_QUEUE_FRAMES = 2
# A viewer with frames waiting that has taken none for this long has stopped reading: its
# hub stops encoding its format until it reads again (it would only skip those frames).
# The same holds for a hub whose viewers have all stopped: it pauses.
STALLED_SECONDS = 1.0
VIEWER_BYTES = 48 * MiB


class DecodersSpent(Exception):  # noqa: N818 - a condition, not an error
    """No decoder left for a viewer that needs a hub of its own; the message says whose."""


@dataclass
class Published:
    index: int
    # Serialized Video messages, one per format wanted when the frame was decoded.
    messages: dict[Format, bytes]
    # The same with `skipped_frames` set, per (format, count): viewers that fell behind
    # together (an overloaded server makes them all skip at once) share one copy of a frame
    # instead of making one each.
    _stamped: dict[tuple[Format, int], bytes] = field(default_factory=dict)

    # Backlogs and queues holding this frame: it is counted in the frame buffers once,
    # while any holds it, since they all hold the same bytes; stamped copies with it.
    holders: int = 0
    _stamped_bytes: int = 0
    _buffers: Buffers | None = None

    def size_in(self, fmt: Format) -> int:
        return len(self.messages.get(fmt, b""))

    @property
    def size(self) -> int:
        return sum(len(message) for message in self.messages.values())

    def hold(self, buffers: Buffers) -> None:
        if not self.holders:
            self._buffers = buffers
            buffers.add(self.size + self._stamped_bytes)
        self.holders += 1

    def release(self, buffers: Buffers) -> None:
        self.holders -= 1
        if not self.holders:
            buffers.remove(self.size + self._stamped_bytes)

    def message(self, fmt: Format, skipped: int) -> bytes | None:
        """The frame's message in `fmt` telling `skipped`; None when `fmt` was not encoded."""
        message = self.messages.get(fmt)
        if message is None or not skipped:
            return message
        key = (fmt, skipped)
        stamped = self._stamped.get(key)
        if stamped is None:
            # Concatenated messages merge: this sets one field on the shared bytes.
            stamp = soccer_pb2.Video(skipped_frames=skipped).SerializeToString()
            stamped = self._stamped[key] = message + stamp
            self._stamped_bytes += len(stamped)
            if self.holders and self._buffers is not None:
                self._buffers.add(len(stamped))
        return stamped


class _End:
    """Marks the end of the match (or of the hub, with an error)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error


class HubStopped(Exception):  # noqa: N818 - a condition, not an error
    """The hub was shut down (server stopping) before the viewer's match ended."""


@dataclass(eq=False)
class Viewer:
    fmt: Format
    next_index: int
    queue_frames: int = QUEUE_FRAMES
    buffers: Buffers = field(default_factory=lambda: Buffers(2**62))
    # The queue's bound in bytes; the newest frame is always kept, whatever its size.
    max_bytes: int = VIEWER_BYTES
    queue: collections.deque[Published | _End] = field(default_factory=collections.deque)
    queued_bytes: int = 0
    skipped: int = 0
    taken_at: float = field(default_factory=time.monotonic)
    # Called with the viewer's format when it reads again after it had stopped.
    resumed: Callable[[Format], None] | None = None
    _waiter: asyncio.Future[None] | None = None

    def reading(self, now: float) -> bool:
        return not self.queue or now - self.taken_at < STALLED_SECONDS

    def offer(self, item: Published | _End) -> None:
        if isinstance(item, Published):
            if item.index < self.next_index:
                return  # before the frame this viewer starts at: it joined ahead of the hub
            size = item.size_in(self.fmt)
            frames = SPENT_QUEUE_FRAMES if self.buffers.spent else self.queue_frames
            if len(self.queue) >= frames or (
                self.queue and self.queued_bytes + size > self.max_bytes
            ):
                # Real time: a viewer that fell behind skips to the newest frame.
                self.skipped += sum(isinstance(x, Published) for x in self.queue)
                self.close()
            self.queued_bytes += size
            item.hold(self.buffers)
        self.queue.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self) -> bytes | None:
        """This viewer's next message, None once the match is over.

        A coroutine rather than an async generator: this is the innermost loop of every
        live stream, and it returns at once, without suspending, when a frame is waiting.
        """
        while True:
            while not self.queue:
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
            item = self.queue.popleft()
            now = time.monotonic()
            if now - self.taken_at >= STALLED_SECONDS and self.resumed is not None:
                self.resumed(self.fmt)
            self.taken_at = now
            if isinstance(item, Published):
                self.queued_bytes -= item.size_in(self.fmt)
                item.release(self.buffers)
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return None
            message = item.message(self.fmt, self.skipped)
            if message is None:
                # Backlog decoded before this format was wanted: nothing to send for it.
                self.skipped += 1
                continue
            self.next_index = item.index + 1
            return message

    def close(self) -> None:
        """Empty the queue, giving its bytes back."""
        for item in self.queue:
            if isinstance(item, Published):
                item.release(self.buffers)
        self.queue.clear()
        self.queued_bytes = 0


class Hub:
    def __init__(
        self,
        key: Path,
        start_frame: int,
        loop: asyncio.AbstractEventLoop,
        buffers: Buffers | None = None,
        max_bytes: int = VIEWER_BYTES,
        owner: str = "",
        *,
        live: bool = False,
        ended: Callable[["Hub"], None] | None = None,
    ) -> None:
        self.key = key
        self.start_frame = start_frame
        # Started by a viewer that named no start frame: the broadcast live viewers join.
        self.live = live
        # Told once when the match ends (on the loop), while viewers may still be reading.
        self._ended = ended
        # Set once the hub's decoder went back to the budget.
        self.released = False
        self._loop = loop
        self._buffers = buffers or Buffers(2**62)
        # Bounds each viewer's queue and the backlog alike.
        self._max_bytes = max_bytes
        # The client identity charged for this hub's decoder.
        self.owner = owner
        self._viewers: set[Viewer] = set()
        # The formats the hub's thread encodes: those of viewers still reading. Replaced
        # whole on the loop, read by the thread.
        self._wanted: frozenset[Format] = frozenset()
        self._backlog: collections.deque[Published] = collections.deque()
        self._backlog_bytes = 0
        self.next_index = start_frame
        self.ended = False
        self._stop = threading.Event()
        # Set while some viewer reads (and on stop); the hub's thread decodes only then.
        self._watched = threading.Event()
        # The frame the hub's thread will decode next while it is paused, else None.
        self.paused_at: int | None = None
        # Not a daemon: the interpreter waits for it at exit instead of tearing OpenCV down
        # under a running decode (seen as a segfault on SIGTERM). Stopping ends it promptly.
        self._thread = threading.Thread(target=self._run, name=f"hub-{key.stem}-{start_frame}")

    # --- on the event loop ---------------------------------------------------------------

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def can_join(self, start_frame: int | None) -> bool:
        """Live viewers join the live hub; others any hub while its backlog holds their
        frame, or while it is at most AHEAD_FRAMES before it."""
        if start_frame is None:
            return self.live and not self.ended
        oldest = self._backlog[0].index if self._backlog else self.start_frame
        return not self.ended and oldest <= start_frame <= self.next_index + AHEAD_FRAMES

    def join(
        self, fmt: Format, start_frame: int | None, queue_frames: int = QUEUE_FRAMES
    ) -> Viewer:
        if start_frame is None:
            start_frame = self.next_index
        # Room for the whole backlog first, so that catching up is not counted as falling behind.
        viewer = Viewer(
            fmt,
            start_frame,
            max(queue_frames, len(self._backlog) + 1),
            self._buffers,
            self._max_bytes,
            resumed=self._resume,
        )
        for item in self._backlog:
            if item.index >= start_frame:
                viewer.offer(item)
        viewer.queue_frames = queue_frames
        self._viewers.add(viewer)
        self._resume(fmt)
        if self._thread.ident is None:  # the first viewer starts the decoder
            self._thread.start()
        return viewer

    def leave(self, viewer: Viewer) -> bool:
        """Remove a viewer; True when it was the last one and the hub stopped."""
        if viewer not in self._viewers:
            return False
        self._viewers.discard(viewer)
        viewer.close()
        if self._viewers:
            return False
        self.stop()
        return True

    def _resume(self, fmt: Format) -> None:
        if fmt not in self._wanted:
            self._wanted = self._wanted | {fmt}
        self._watched.set()

    def stop(self, error: Exception | None = None) -> None:
        self._stop.set()
        self._watched.set()
        self.ended = True
        self._trim_backlog(0)
        if error is not None:
            for viewer in self._viewers:
                viewer.offer(_End(error))

    def _publish(self, item: Published | _End) -> None:
        if isinstance(item, _End):
            self.ended = True
            if self._ended is not None:
                self._ended(self)
        else:
            if not self._stop.is_set():  # a stopped hub has given its backlog back
                self._backlog.append(item)
                self._backlog_bytes += item.size
                item.hold(self._buffers)
                self._trim_backlog(1 if self._buffers.spent else BACKLOG_FRAMES)
            self.next_index = item.index + 1
        for viewer in self._viewers:
            viewer.offer(item)
        now = time.monotonic()
        self._wanted = frozenset(v.fmt for v in self._viewers if v.reading(now))
        if self._wanted or not self._viewers:
            self._watched.set()
        else:
            self._watched.clear()

    def _trim_backlog(self, frames: int) -> None:
        """At most `frames` frames and the byte bound, the newest always kept."""
        backlog = self._backlog
        while len(backlog) > frames or (len(backlog) > 1 and self._backlog_bytes > self._max_bytes):
            item = backlog.popleft()
            self._backlog_bytes -= item.size
            item.release(self._buffers)

    # --- on the hub's thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            capture = open_capture(self.key, self.start_frame)
        except VideoUnreadableError as error:
            self._loop.call_soon_threadsafe(self._publish, _End(error))
            return
        try:
            fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
            started = time.monotonic()
            index = self.start_frame
            while not self._stop.is_set():
                if not self._watched.is_set():
                    paused, self.paused_at = time.monotonic(), index
                    self._watched.wait()
                    started += time.monotonic() - paused
                    self.paused_at = None
                    continue
                ok, image = capture.read()
                if not ok:
                    break
                published = self._encode(index, fps, cast(Frame, image))
                # Paced like the broadcast: frame i leaves at start + i / fps.
                delay = started + (index - self.start_frame) / fps - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                self._loop.call_soon_threadsafe(self._publish, published)
                index += 1
            self._loop.call_soon_threadsafe(self._publish, _End())
        except Exception as error:  # reported to the viewers, who turn it into a status
            log.exception("hub failed", extra={"match": self.key.stem})
            self._loop.call_soon_threadsafe(self._publish, _End(error))
        finally:
            close_capture(capture)

    def _encode(self, index: int, fps: float, image: Frame) -> Published:
        messages = {fmt: encode(image, fmt[0], fmt[1], index, fps) for fmt in self._wanted}
        return Published(index, messages)


class Hubs:
    """The live hubs of one server, by match, and the budgets they draw on."""

    def __init__(
        self,
        decoders: Budget | None = None,
        buffers: Buffers | None = None,
        viewer_bytes: int = VIEWER_BYTES,
    ) -> None:
        self._hubs: dict[Path, list[Hub]] = {}
        unlimited = 2**31
        self.decoders = decoders or Budget.of("decoders", unlimited, "DECODERS", unlimited)
        self.buffers = buffers or Buffers(2**62)
        self._viewer_bytes = viewer_bytes

    def _joinable(self, path: Path, start_frame: int | None) -> Hub | None:
        # The newest hub first: of the live ones it has the most of the match still to come.
        hubs = reversed(self._hubs.get(path, ()))
        return next((hub for hub in hubs if hub.can_join(start_frame)), None)

    def refusal(self, path: Path, start_frame: int | None, client: str) -> str | None:
        """Why `watch` would refuse now, without doing anything; None when it would not."""
        if self._joinable(path, start_frame) is not None:
            return None
        return self.decoders.refusal(client)

    def watch(
        self,
        path: Path,
        fmt: Format,
        start_frame: int | None,
        queue_frames: int = QUEUE_FRAMES,
        client: str = "",
    ) -> tuple[Hub, Viewer]:
        """A viewer of `path` from `start_frame`, or from the live broadcast when None.

        DecodersSpent when that needs a hub of its own and `client` or the server has no
        decoder left.
        """
        hub = self._joinable(path, start_frame)
        if hub is None:
            refused = self.decoders.take(client)
            if refused is not None:
                raise DecodersSpent(refused)
            loop = asyncio.get_running_loop()
            hub = Hub(
                path,
                start_frame or 0,
                loop,
                self.buffers,
                self._viewer_bytes,
                client,
                live=start_frame is None,
                ended=self._release,
            )
            self._hubs.setdefault(path, []).append(hub)
        return hub, hub.join(fmt, start_frame, queue_frames)

    def leave(self, hub: Hub, viewer: Viewer) -> None:
        if hub.leave(viewer) or (hub.ended and not hub.viewers):
            hub.stop()  # gives its backlog back, if the match ended by itself
            self._release(hub)

    def _release(self, hub: Hub) -> None:
        """`hub` takes no more viewers and its decoder goes back, once."""
        if hub.released:
            return
        hub.released = True
        hubs = self._hubs.get(hub.key, [])
        if hub in hubs:
            hubs.remove(hub)
        if not hubs:
            self._hubs.pop(hub.key, None)
        self.decoders.give_back(hub.owner)

    def stop_all(self) -> None:
        for hubs in self._hubs.values():
            for hub in hubs:
                hub.stop(HubStopped())

    def live(self) -> list[Hub]:
        return [hub for hubs in self._hubs.values() for hub in hubs]
