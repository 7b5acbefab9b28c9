"""How long a viewer waits for its next frame before it calls the stream stalled.

A replica that is frozen (a long pause, a full disk) or cut off by the network (packets
dropped, no reset) closes nothing: the stream just goes quiet, and gRPC notices only when
keepalive gives up, seconds later. The viewer knows better: frames come at the video's
frame rate, which their timestamps tell, so a few frame intervals without one means the
replica stopped sending, and the viewer resumes elsewhere from the next frame.
"""

from dataclasses import dataclass

# Frame intervals without a frame that make a stall; never less than MIN_SECONDS (a busy
# server or network may hold a few frames back), never more than MAX_SECONDS (a slow video).
STALL_FRAMES = 5
MIN_SECONDS = 1.0
MAX_SECONDS = 5.0
# For a stream's first frame, which may wait for a decoder to open the match and seek.
FIRST_FRAME_SECONDS = 3.0


@dataclass
class StallDetector:
    """Learns the frame interval from the frames' indexes and timestamps."""

    interval: float | None = None
    _last: tuple[int, float] | None = None

    def frame(self, index: int, timestamp: float) -> None:
        if self._last is not None:
            frames, seconds = index - self._last[0], timestamp - self._last[1]
            if frames > 0 and seconds > 0:
                self.interval = seconds / frames
        self._last = (index, timestamp)

    @property
    def limit(self) -> float:
        """Seconds to wait for the next frame."""
        if self._last is None or self.interval is None:
            return FIRST_FRAME_SECONDS
        return self.answer_limit

    @property
    def answer_limit(self) -> float:
        """Seconds to wait for a stream's headers, which a server sends before it opens the
        match: a resumed stream that round_robin sent to the frozen replica again moves on
        after a second, not after FIRST_FRAME_SECONDS."""
        if self.interval is None:
            return FIRST_FRAME_SECONDS
        return min(MAX_SECONDS, max(MIN_SECONDS, STALL_FRAMES * self.interval))

    def restart(self) -> None:
        """A new stream: its first frame may wait for a decoder again; the rate stays known."""
        self._last = None
