"""Soccer: Watch streams a match's frames, decoded with OpenCV, paced like the broadcast."""

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc.aio import ServicerContext

from api import soccer_pb2, soccer_pb2_grpc
from grpckit import logs
from grpckit.config import ConfigParser, ServerConfig
from grpckit.server import Server, Service, run_until_signal
from soccer.video import (
    DEFAULT_JPEG_QUALITY,
    FrameReader,
    InvalidMatchIdError,
    MatchNotFoundError,
    VideoUnreadableError,
    resolve,
)

log = logging.getLogger(__name__)

SERVICE_NAME = soccer_pb2.DESCRIPTOR.services_by_name["Soccer"].full_name

Context = ServicerContext[soccer_pb2.Match, soccer_pb2.Video]


@dataclass(frozen=True)
class SoccerConfig:
    server: ServerConfig
    videos_dir: Path


def load_config(argv: Sequence[str] | None = None) -> SoccerConfig:
    parser = ConfigParser("soccer", 50053, "The soccer match streaming gRPC server.")
    parser.add("--videos-dir", "SOCCER_VIDEOS_DIR", Path("videos"), "where <id>.mp4 live", Path)
    server, args = parser.parse(argv)
    return SoccerConfig(server, args.videos_dir)


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


class SoccerServicer(soccer_pb2_grpc.SoccerServicer):
    def __init__(self, videos_dir: Path, stopping: asyncio.Event) -> None:
        self._videos_dir = videos_dir
        self._stopping = stopping

    async def Watch(
        self, request: soccer_pb2.Match, context: Context
    ) -> AsyncIterator[soccer_pb2.Video]:
        await _check(request, context)
        try:
            path = resolve(self._videos_dir, request.id)
        except InvalidMatchIdError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except MatchNotFoundError as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))

        loop = asyncio.get_running_loop()
        reader = FrameReader(path)
        quality = request.jpeg_quality or DEFAULT_JPEG_QUALITY
        try:
            try:
                info = await loop.run_in_executor(reader.thread, reader.open, request.start_frame)
            except VideoUnreadableError as error:
                await context.abort(grpc.StatusCode.DATA_LOSS, str(error))
            if request.start_frame and request.start_frame >= info.frame_count:
                await context.abort(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"start_frame {request.start_frame} is past the last frame "
                    f"({info.frame_count} frames)",
                )
            started = loop.time()
            sent = 0
            while not request.max_frames or sent < request.max_frames:
                video = await loop.run_in_executor(
                    reader.thread, reader.next, request.encoding, quality
                )
                if video is None:
                    break
                index = request.start_frame + sent
                video.frame_index = index
                video.timestamp = index / info.fps
                if not request.unpaced:
                    # Real time: each frame leaves when the broadcast would show it.
                    delay = started + sent / info.fps - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if self._stopping.is_set():
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        f"server shutting down; resume with start_frame={index}",
                    )
                yield video
                sent += 1
            if sent == 0:
                await context.abort(
                    grpc.StatusCode.DATA_LOSS, f"match {request.id!r} has no decodable frames"
                )
        finally:
            # Queued behind any read still running on the reader's thread, so it is safe even
            # when the client cancelled mid-frame; the thread ends once it has run.
            reader.thread.submit(reader.close)
            reader.thread.shutdown(wait=False)


def build(config: SoccerConfig) -> Server:
    def register(server: Server) -> None:
        servicer = SoccerServicer(config.videos_dir, server.stopping)
        soccer_pb2_grpc.add_SoccerServicer_to_server(servicer, server.grpc)

    return Server(config.server, [Service(SERVICE_NAME, register)])


async def start(config: SoccerConfig) -> Server:
    if not config.videos_dir.is_dir():
        log.warning(
            "videos directory missing; every match is NOT_FOUND until it appears",
            extra={"videos_dir": str(config.videos_dir)},
        )
    server = build(config)
    await server.start()
    await server.set_serving()
    return server


async def _main(config: SoccerConfig) -> None:
    await run_until_signal(await start(config))


def serve(argv: Sequence[str] | None = None) -> int:
    config = load_config(argv)
    logs.configure(config.server.log_level)
    asyncio.run(_main(config))
    return 0
