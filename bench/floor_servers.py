"""The floor: what grpcio itself manages on one CPU, with none of the project's code.

Some targets of issue #4 are ratios to the seed that a Python gRPC server may not be able to
reach at all. These servers show where that limit is, in the same run as everything else:
grpc.aio on uvloop, mutual TLS, no interceptor, no health or reflection, every message
built before the first call, so what is left is gRPC's and the kernel's cost per message.

- cheese: `Order` answers at once with a new `Cheese`, as the seed's does: the per-call
  cost of grpc.aio itself, the limit for any unary figure of ours.
- movie: `GetListMovies` streams the catalogue, prebuilt and serialized once;
  `GetMovieByID` answers each id with its movie serialized once (NOT_FOUND for others).
- soccer: `Watch` is a broadcast of the match's frames, decoded and JPEG-encoded once at
  start (quality 80, as ours and the seed), paced at the video's fps and looped; each viewer
  gets `max_frames` of them from where the broadcast is. No decoding while serving.

    python -m bench.floor_servers --service movie --port 0 --certs DIR --catalogue F
"""

import argparse
import asyncio
import collections
import json
import random
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import uvloop

from api import cheese_pb2, movie_pb2, soccer_pb2
from bench.seed_servers import (
    MAX_MESSAGE_BYTES,
    SEED_JPEG_QUALITY,
    announce,
    arguments,
    credentials,
)
from grpckit.config import GrpcThreadPolicy
from grpckit.lifecycle import memory, scheduling
from grpckit.telemetry import metrics

# Generic only in grpc-stubs, so the alias must stay a string at run time.
Handler: TypeAlias = "grpc.GenericRpcHandler[Any, Any]"

QUEUE_FRAMES = 15  # as ours: a viewer that falls further behind skips to the newest


def _identity(data: bytes) -> bytes:
    return data


def _order_handler() -> Handler:
    async def order(request: cheese_pb2.CheeseRequest, context: Any) -> cheese_pb2.Cheese:
        return cheese_pb2.Cheese(age=random.randint(1, 18), type=request.type)

    handler = grpc.unary_unary_rpc_method_handler(
        order, cheese_pb2.CheeseRequest.FromString, cheese_pb2.Cheese.SerializeToString
    )
    return grpc.method_handlers_generic_handler("cheesefarm.CheeseService", {"Order": handler})


def _movie_handler(catalogue: Path) -> Handler:
    movies = json.loads(catalogue.read_text())["movies"]
    blobs = [movie_pb2.MovieData(**movie).SerializeToString() for movie in movies]
    by_id = {movie["id"]: blob for movie, blob in zip(movies, blobs, strict=True)}

    async def get_list_movies(request: Any, context: Any) -> AsyncIterator[bytes]:
        for blob in blobs:
            yield blob

    async def get_movie_by_id(request: movie_pb2.MovieID, context: Any) -> bytes:
        blob = by_id.get(request.id)
        return blob if blob is not None else await context.abort(grpc.StatusCode.NOT_FOUND, "")

    listed = grpc.unary_stream_rpc_method_handler(
        get_list_movies, movie_pb2.Empty.FromString, _identity
    )
    found = grpc.unary_unary_rpc_method_handler(
        get_movie_by_id, movie_pb2.MovieID.FromString, _identity
    )
    return grpc.method_handlers_generic_handler(
        "Movie", {"GetListMovies": listed, "GetMovieByID": found}
    )


def _jpeg_frames(video: Path) -> tuple[list[bytes], float]:
    import cv2  # only the soccer floor needs OpenCV

    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, SEED_JPEG_QUALITY])
        frames.append(
            soccer_pb2.Video(
                data=jpeg.tobytes(),
                data_type="uint8",
                data_shape=f"({jpeg.size},)",
                encoding=soccer_pb2.JPEG,
                width=image.shape[1],
                height=image.shape[0],
            ).SerializeToString()
        )
    capture.release()
    return frames, fps


class _Broadcast:
    def __init__(self, frames: list[bytes], fps: float) -> None:
        self.frames, self.fps = frames, fps
        self.viewers: set[_Viewer] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(sys.maxsize):
            # Concatenated messages merge: the index and timestamp ride on the shared bytes.
            stamp = soccer_pb2.Video(frame_index=index, timestamp=index / self.fps)
            message = self.frames[index % len(self.frames)] + stamp.SerializeToString()
            for viewer in self.viewers:
                viewer.offer(message)
            await asyncio.sleep(max(0.0, start + (index + 1) / self.fps - loop.time()))


class _Viewer:
    def __init__(self) -> None:
        self.queue: collections.deque[bytes] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None

    def offer(self, message: bytes) -> None:
        if len(self.queue) >= QUEUE_FRAMES:
            self.queue.clear()
        self.queue.append(message)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next(self) -> bytes:
        while not self.queue:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.queue.popleft()


def _watch_handler(broadcast: _Broadcast) -> Handler:
    async def watch(request: soccer_pb2.Match, context: Any) -> None:
        viewer = _Viewer()
        broadcast.viewers.add(viewer)
        try:
            for _ in range(request.max_frames or len(broadcast.frames)):
                await context.write(await viewer.next())
        finally:
            broadcast.viewers.discard(viewer)

    handler = grpc.unary_stream_rpc_method_handler(watch, soccer_pb2.Match.FromString, _identity)
    return grpc.method_handlers_generic_handler("stream.Soccer", {"Watch": handler})


async def serve(args: argparse.Namespace) -> None:
    background = []
    if args.grpc_metrics:
        # As the runtime turns them on (grpckit/telemetry/metrics.py), collector included.
        metrics.install("floor", "bench", grpc_plugin=True)
        background.append(asyncio.create_task(memory.collect_on_loop()))
    server = grpc.aio.server(options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    if args.service == "cheese":
        server.add_generic_rpc_handlers((_order_handler(),))
    elif args.service == "movie":
        server.add_generic_rpc_handlers((_movie_handler(Path(args.catalogue)),))
    else:
        broadcast = _Broadcast(*_jpeg_frames(Path(args.videos_dir) / f"{args.match}.mp4"))
        server.add_generic_rpc_handlers((_watch_handler(broadcast),))
        background.append(asyncio.create_task(broadcast.run()))
    port = server.add_secure_port(
        f"{args.host}:{args.port}", credentials(Path(args.certs), args.service)
    )
    await server.start()
    if args.grpc_threads_batch:
        # As the runtime sets them by default (GRPC_THREAD_POLICY): what that alone is worth.
        background.append(asyncio.create_task(scheduling.keep(GrpcThreadPolicy.BATCH)))
    announce(port, args.service, "floor")
    await server.wait_for_termination()


def main(argv: Sequence[str] | None = None) -> int:
    parser = arguments("python -m bench.floor_servers", __doc__, ("cheese", "movie", "soccer"))
    parser.add_argument("--match", default="demo")
    parser.add_argument("--grpc-metrics", action="store_true", help="gRPC's metrics plugin on")
    parser.add_argument(
        "--grpc-threads-batch", action="store_true", help="gRPC's threads under SCHED_BATCH"
    )
    uvloop.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
