"""Bytes of frames the soccer server holds for its viewers, against one budget.

What is counted: the frames held in hubs' backlogs and viewers' queues, each once however
many hold it (they share the bytes), with their copies stamped with a skip count, and for
every stream what gRPC holds of it. gRPC copies a message when it is written and keeps it
until the client's flow control takes it, and a stream whose client stopped reading holds
about three messages there for as long as it stays (measured: 9 MB per stalled stream of
2.7 MB messages).

What gRPC holds is reserved when a stream is admitted, from the size the match's frames
will have, so a burst of viewers that all stall at once cannot overshoot the budget: the
stream that would is refused at once. While the budget is spent, viewers that fell behind
skip to the newest frame instead of queueing more, and hubs keep a shorter backlog.
"""

from dataclasses import dataclass

from api import soccer_pb2
from soccer.video import Encoding, VideoInfo

MiB = 1024 * 1024

# A JPEG of a 720p broadcast frame is a tenth to a thirtieth of the raw frame at the default
# quality (100-200 KB); a frame sent that is larger than its share is counted in full, three
# times, while it is being sent.
JPEG_SHARE = 16
# Messages gRPC holds for a stream whose client stopped reading (see above).
IN_FLIGHT_MESSAGES = 3


@dataclass
class Buffers:
    limit: int
    setting: str = "SOCCER_BUFFER_MIB"
    used: int = 0

    def add(self, size: int) -> None:
        self.used += size

    def remove(self, size: int) -> None:
        self.used -= size

    @property
    def spent(self) -> bool:
        return self.used >= self.limit

    def reserve(self, size: int) -> str | None:
        """Count `size` bytes for a new stream; None when done, else why not (nothing taken)."""
        if self.used + size > self.limit:
            return self.refusal()
        self.used += size
        return None

    def refusal(self) -> str:
        return (
            f"soccer frame buffers: {self.used / MiB:.0f} of {self.limit / MiB:.0f} MiB "
            f"in use ({self.setting})"
        )


def frame_bytes(info: VideoInfo, encoding: Encoding) -> int:
    """What one message of this match will take."""
    raw = info.width * info.height * 3
    return raw if encoding == soccer_pb2.RAW else raw // JPEG_SHARE
