"""Soccer: Watch streams a match's frames, decoded with OpenCV, paced like the broadcast."""

import asyncio
import contextvars
import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc.aio import ServicerContext
from opentelemetry import trace

from api import soccer_pb2
from grpckit.calls import callers
from grpckit.calls.budgets import Budget, StartRate
from grpckit.lifecycle.service import BackgroundTasks, Program, Service, StartupError
from grpckit.settings import setting
from grpckit.telemetry import metrics as runtime_metrics
from soccer import metrics
from soccer.buffers import IN_FLIGHT_MESSAGES, Buffers, MiB, frame_bytes
from soccer.hub import DecodersSpent, Format, Hubs, HubStopped
from soccer.video import (
    DEFAULT_JPEG_QUALITY,
    FrameReader,
    InvalidMatchIdError,
    MatchNotFoundError,
    Probes,
    VideoUnreadableError,
    resolve,
    yield_to_real_time,
)

log = logging.getLogger(__name__)

SERVICE_NAME = soccer_pb2.DESCRIPTOR.services_by_name["Soccer"].full_name
# Refusals of soccer's own budgets (decoders, frame buffers), beside the runtime's.
_REFUSED = {"reason": "budget", "grpc_method": f"{SERVICE_NAME}/Watch"}

Context = ServicerContext[soccer_pb2.Match, soccer_pb2.Video]


@dataclass(frozen=True)
class SoccerSettings:
    videos_dir: Path = setting(Path("videos"), "SOCCER_VIDEOS_DIR", "where <id>.mp4 live")
    # Sized for a container of one CPU and 768 MiB: a 720p decoder holds 15-20 MB (FFmpeg's
    # frames and threads) and takes about a third of a core in real time, so three decoding
    # at once is what one CPU keeps in real time (a hub whose viewers all stopped reading
    # pauses and costs none).
    max_decoders: int = setting(
        3,
        "SOCCER_MAX_DECODERS",
        "decoders at once: broadcast hubs (joining a running one costs none) plus unpaced "
        "viewers (one each); a viewer that needs one more gets RESOURCE_EXHAUSTED",
        minimum=1,
    )
    max_decoders_per_client: int = setting(
        2,
        "SOCCER_MAX_DECODERS_PER_CLIENT",
        "decoders at once started by one client identity (certificate)",
        minimum=1,
    )
    # Opening a decoder costs 20-50 ms of a core (more with a start frame to seek to): a
    # client that opens the decoders it may hold and lets them go, over and over, spends the
    # core the hubs' viewers need. Off by default, because short live viewers (a hub stops
    # when its last viewer leaves) start hubs as often as such a client does.
    decoder_starts_per_client: float = setting(
        0.0,
        "SOCCER_DECODER_STARTS_PER_CLIENT",
        "decoders one client identity may start a second (hubs and unpaced viewers; joining "
        "a running hub is not a start), in bursts of up to two seconds' worth; past it a "
        "viewer gets RESOURCE_EXHAUSTED; 0: no bound",
        minimum=0,
    )
    viewer_buffer_mib: float = setting(
        48.0,
        "SOCCER_VIEWER_BUFFER_MIB",
        "MiB of frames queued for one viewer (and kept in a hub's backlog), besides the half "
        "second a queue holds at most (0.5 s of raw 720p is 41 MB); a viewer behind by more "
        "skips to the newest frame",
        minimum=0,
    )
    buffer_mib: float = setting(
        320.0,
        "SOCCER_BUFFER_MIB",
        "MiB of frames held for all viewers: backlogs, queues and a frame in flight per "
        "stream, reserved when it starts; a stream that would exceed it gets "
        "RESOURCE_EXHAUSTED",
        minimum=1,
    )
    client_buffer_mib: float = setting(
        80.0,
        "SOCCER_CLIENT_BUFFER_MIB",
        "MiB of SOCCER_BUFFER_MIB one client identity may hold: its streams' reservations "
        "(about 8 MiB per raw 720p stream, 0.5 MiB per JPEG one); over it a stream gets "
        "RESOURCE_EXHAUSTED",
        minimum=1,
    )

    def __post_init__(self) -> None:
        if self.max_decoders_per_client > self.max_decoders:
            raise ValueError("SOCCER_MAX_DECODERS_PER_CLIENT must not exceed SOCCER_MAX_DECODERS")


async def _check(request: soccer_pb2.Match, context: Context) -> None:
    problems = []
    if request.encoding not in soccer_pb2.Encoding.values():
        problems.append(f"unknown encoding {request.encoding}")
    if not 0 <= request.jpeg_quality <= 100:
        problems.append(f"jpeg_quality must be 0-100, got {request.jpeg_quality}")
    if request.start_frame < 0:
        problems.append(f"start_frame must not be negative, got {request.start_frame}")
    if request.max_frames < 0:
        problems.append(f"max_frames must not be negative, got {request.max_frames}")
    if problems:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))


def _serialized(message: bytes) -> bytes:
    return message


class Soccer(Service):
    """Watch, yielding serialized `Video` messages: a frame is serialized once, not per viewer.

    Real-time viewers share a broadcast hub per match; unpaced viewers get a decoder of their
    own, which reads the next frame only when the last one was sent (backpressure).
    """

    names = (SERVICE_NAME,)

    def __init__(self, settings: SoccerSettings) -> None:
        self._videos_dir = settings.videos_dir
        self._probes = Probes()
        # Set once shutdown begins: streams then end with a resume point instead of being cut.
        self._stopping = asyncio.Event()
        rate = settings.decoder_starts_per_client
        self.hubs = Hubs(
            Budget.of(
                "soccer decoders",
                settings.max_decoders,
                "SOCCER_MAX_DECODERS",
                settings.max_decoders_per_client,
                StartRate(
                    "soccer decoder starts",
                    rate,
                    math.ceil(2 * rate),
                    "SOCCER_DECODER_STARTS_PER_CLIENT",
                )
                if rate
                else None,
            ),
            Buffers(
                int(settings.buffer_mib * MiB), per_client=int(settings.client_buffer_mib * MiB)
            ),
            int(settings.viewer_buffer_mib * MiB),
        )
        metrics.watch(self.hubs)

    async def start(self, tasks: BackgroundTasks) -> None:
        if not self._videos_dir.is_dir():
            raise StartupError(f"videos folder missing: {self._videos_dir}")
        # Resolved once: a match's file is then found with one system call (video.resolve).
        self._videos_dir = self._videos_dir.resolve()

    async def stop(self) -> None:
        self._stopping.set()
        # Live viewers wait on their hub, not on the clock: wake them.
        self.hubs.stop_all()

    def add_to(self, server: grpc.aio.Server) -> None:
        # The generated add_SoccerServicer_to_server would serialize each message per viewer.
        watch = grpc.unary_stream_rpc_method_handler(
            self.Watch,
            request_deserializer=soccer_pb2.Match.FromString,
            response_serializer=_serialized,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, {"Watch": watch}),)
        )

    async def Watch(self, request: soccer_pb2.Match, context: Context) -> None:
        """Writes with `context.write` rather than yielding: no async generator is resumed
        per message (this loop runs 30 times a second for every viewer)."""
        await _check(request, context)
        try:
            path = resolve(self._videos_dir, request.id)
        except InvalidMatchIdError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except MatchNotFoundError as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        start = request.start_frame if request.HasField("start_frame") else None
        client = callers.current().name
        # Before any capture is opened, even the probe's.
        refused = self._refusal(path, start, request.unpaced, client)
        if refused is not None:
            await _refuse(context, refused)
        try:
            info = await self._probes.info(path)
        except VideoUnreadableError as error:
            await context.abort(grpc.StatusCode.DATA_LOSS, str(error))
        if start and start >= info.frame_count:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"start_frame {request.start_frame} is past the last frame "
                f"({info.frame_count} frames)",
            )
        frame = frame_bytes(info, request.encoding)
        refused = self.hubs.buffers.reserve(frame * IN_FLIGHT_MESSAGES, client)
        if refused is not None:
            await _refuse(context, refused)
        try:
            await self._watch(request, context, path, start, info.fps, client, frame)
        finally:
            self.hubs.buffers.unreserve(frame * IN_FLIGHT_MESSAGES, client)

    def _refusal(self, path: Path, start: int | None, unpaced: bool, client: str) -> str | None:
        if self.hubs.buffers.spent:
            return self.hubs.buffers.refusal()
        if unpaced:
            return self.hubs.decoders.refusal(client)
        return self.hubs.refusal(path, start, client)

    async def _watch(
        self,
        request: soccer_pb2.Match,
        context: Context,
        path: Path,
        start: int | None,
        fps: float,
        client: str,
        frame: int,
    ) -> None:
        quality = request.jpeg_quality or DEFAULT_JPEG_QUALITY
        fmt = (request.encoding, quality if request.encoding == soccer_pb2.JPEG else 0)
        stream = _Stream(
            context, request.max_frames, self._stopping, start or 0, self.hubs.buffers, frame
        )
        stream.tally = metrics.TALLIES[request.encoding]
        labels = metrics.LABELS[request.encoding]
        metrics.viewers.add(1, labels)
        try:
            if request.unpaced:
                await self._unpaced(stream, path, start or 0, fmt, fps, client)
            else:
                await self._live(stream, path, start, fmt, client)
        except DecodersSpent as refused:
            await _refuse(context, str(refused))
        except VideoUnreadableError as error:
            await context.abort(grpc.StatusCode.DATA_LOSS, str(error))
        except HubStopped:
            pass
        finally:
            metrics.viewers.add(-1, labels)
            _traced_totals(stream)
        if stream.complete:
            return
        if self._stopping.is_set():
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"server shutting down; resume with start_frame={stream.next_index}",
            )
        if stream.sent == 0:
            await context.abort(
                grpc.StatusCode.DATA_LOSS, f"match {request.id!r} has no decodable frames"
            )

    async def _live(
        self, stream: "_Stream", path: Path, start: int | None, fmt: Format, client: str
    ) -> None:
        hub, viewer = self.hubs.watch(path, fmt, start, client=client)
        span = trace.get_current_span()
        if span.is_recording():
            # The hub's decodes and encodes serve every viewer of it (soccer/video.py): the
            # trace says which hub, new or running, and from which frame.
            joined = {"soccer.hub": "started" if hub.viewers == 1 else "joined"}
            span.add_event("soccer.hub.joined", {**joined, "soccer.start_frame": viewer.next_index})
        tally = stream.tally
        try:
            while (message := await viewer.next()) is not None:
                if viewer.skipped != stream.skipped:
                    tally.skipped += viewer.skipped - stream.skipped
                    stream.skipped = viewer.skipped
                if not await stream.send(viewer.next_index - 1, message):
                    return
        finally:
            self.hubs.leave(hub, viewer)

    async def _unpaced(
        self, stream: "_Stream", path: Path, start: int, fmt: Format, fps: float, client: str
    ) -> None:
        refused = self.hubs.decoders.take(client)
        if refused is not None:
            raise DecodersSpent(refused)
        loop = asyncio.get_running_loop()
        reader = FrameReader(path)
        # The reader works for this call alone: its calls run in the call's context, so that
        # its decodes and encodes go on the call's span (soccer/video.py). One reader thread,
        # one call at a time: the context is never entered twice at once.
        run = contextvars.copy_context().run
        try:
            # Unpaced readers decode as fast as their client reads: behind the hubs, whose
            # viewers must get every frame on time, when the cores are busy.
            await loop.run_in_executor(reader.thread, yield_to_real_time)
            await loop.run_in_executor(reader.thread, run, reader.open, start)
            for index in itertools.count(start):
                video = await loop.run_in_executor(
                    reader.thread, run, reader.next, *fmt, index, fps
                )
                if video is None or not await stream.send(index, video):
                    return
        finally:
            # Queued behind any read still running on the reader's thread, so it is safe even
            # when the client cancelled mid-frame; the thread ends once it has run.
            reader.thread.submit(reader.close)
            reader.thread.shutdown(wait=False)
            self.hubs.decoders.give_back(client)


def _traced_totals(stream: "_Stream") -> None:
    """What the viewer got, on the call's span: once a stream, not per frame."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(
            {"soccer.frames_sent": stream.sent, "soccer.frames_skipped": stream.skipped}
        )


async def _refuse(context: Context, refusal: str) -> None:
    runtime_metrics.refusals.add(1, _REFUSED)
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)


class _Stream:
    """One Watch call's writes: counts them, honours max_frames, stops on shutdown, and
    remembers the frame to resume from."""

    def __init__(
        self,
        context: Context,
        max_frames: int,
        stopping: asyncio.Event,
        next_index: int,
        buffers: Buffers,
        frame: int,
    ) -> None:
        self._context = context
        # What gRPC holds of this stream is reserved for its whole life, as messages of
        # `frame` bytes (soccer/buffers.py); anything beyond is counted while it is written.
        self._buffers = buffers
        self._frame = frame
        self._max_frames = max_frames
        self._stopping = stopping
        self.sent = 0
        # Frames skipped so far (a live viewer's count), and the process's counts to add to.
        self.skipped = 0
        self.tally = metrics.Tally()
        # The next frame this viewer would get: where a client resumes after a shutdown.
        self.next_index = next_index

    async def send(self, index: int, message: bytes) -> bool:
        """Write frame `index`; False once the stream must end (shutdown, or max_frames)."""
        if self._stopping.is_set():
            return False
        excess = max(0, len(message) - self._frame) * IN_FLIGHT_MESSAGES
        self._buffers.add(excess)
        try:
            # Typed as taking a Video; the handler's identity serializer takes these bytes.
            await self._context.write(message)  # type: ignore[arg-type]
        finally:
            self._buffers.remove(excess)
        self.sent += 1
        self.tally.sent += 1
        self.next_index = index + 1
        return not self.complete

    @property
    def complete(self) -> bool:
        """The viewer got the max_frames it asked for: the stream ends OK, even in shutdown.
        Never for a viewer that asked for no bound (0): a stream of it that ends before its
        first frame is not a match that ended."""
        return 0 < self._max_frames <= self.sent


PROGRAM = Program(
    "soccer",
    50053,
    "The soccer match streaming gRPC server.",
    SoccerSettings,
    lambda s: [Soccer(s)],
    # Viewers of a running broadcast are cheap (frames shared, a reservation each in
    # SOCCER_BUFFER_MIB); the frame buffers and decoders bound the memory, not this count.
    defaults={"max_streams": 500, "max_streams_per_client": 250},
)
