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

One client identity may hold at most its share of those reservations
(SOCCER_CLIENT_BUFFER_MIB). The share bounds what its streams cost in CPU as much as in
memory: a client that stops reading still takes what its flow-control windows accept (about
seven 2.7 MB raw frames per stream, measured), each sent and encrypted by the server, so
under a flood of stalled raw streams the share, not the stream count, is what keeps the
other clients' viewers in real time.
"""

from dataclasses import dataclass, field

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
    # What one client may have reserved at once; None: no share of its own.
    per_client: int | None = None
    _reserved: dict[str, int] = field(default_factory=dict)

    def add(self, size: int) -> None:
        self.used += size

    def remove(self, size: int) -> None:
        self.used -= size

    @property
    def spent(self) -> bool:
        return self.used >= self.limit

    def reserve(self, size: int, client: str = "") -> str | None:
        """Count `size` bytes for a new stream of `client`; None when done, else why not
        (nothing taken)."""
        if self.used + size > self.limit:
            return self.refusal()
        held = self._reserved.get(client, 0)
        if self.per_client is not None and held + size > self.per_client:
            return (
                f"soccer frame buffers: client {client!r} holds {held / MiB:.0f} of its "
                f"{self.per_client / MiB:.0f} MiB (SOCCER_CLIENT_BUFFER_MIB)"
            )
        self.used += size
        self._reserved[client] = held + size
        return None

    def unreserve(self, size: int, client: str = "") -> None:
        """Give back what `reserve` counted for a stream of `client`."""
        self.used -= size
        held = self._reserved.pop(client, 0) - size
        if held > 0:
            self._reserved[client] = held

    def refusal(self) -> str:
        return (
            f"soccer frame buffers: {self.used / MiB:.0f} of {self.limit / MiB:.0f} MiB "
            f"in use ({self.setting})"
        )


def frame_bytes(info: VideoInfo, encoding: Encoding) -> int:
    """What one message of this match will take."""
    raw = info.width * info.height * 3
    return raw if encoding == soccer_pb2.RAW else raw // JPEG_SHARE
