"""The seed-style baseline: the three services written the way the original demos were.

Every figure of the benchmark is a ratio against these, measured in the same run on the
same machine, because absolute numbers on a shared machine mean little. They host the
project's own generated servicers, so both sides speak exactly the same wire contract, and
they use the same certificates and message limits; what differs is the seed's design:

- a synchronous `grpc.server` on a pool of 10 threads (so at most 10 calls at once);
- cheese answers at once; movie scans a list of dicts and builds a message per call;
- soccer opens its own `cv2.VideoCapture` per viewer and sends frames as fast as they are
  decoded (unpaced), JPEG-encoding each frame per viewer when asked.

Two additive fields, `frame_index` and `timestamp`, are filled in so that viewers can
measure lag against the source clock; they cost two scalars per frame.

    python -m bench.seed_servers --service movie --port 0 --catalogue F [--insecure]
"""

import argparse
import json
import random
import signal
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import grpc

from api import (
    cheese_pb2,
    cheese_pb2_grpc,
    movie_pb2,
    movie_pb2_grpc,
    soccer_pb2,
    soccer_pb2_grpc,
)

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
SEED_WORKERS = 10
SEED_JPEG_QUALITY = 80  # the same default as ours, so the bytes on the wire compare


class SeedCheese(cheese_pb2_grpc.CheeseServiceServicer):
    def Order(
        self, request: cheese_pb2.CheeseRequest, context: grpc.ServicerContext
    ) -> cheese_pb2.Cheese:
        return cheese_pb2.Cheese(age=random.randint(1, 18), type=request.type)


class SeedMovie(movie_pb2_grpc.MovieServicer):
    def __init__(self, movies: list[dict[str, Any]]) -> None:
        self._movies = movies

    @staticmethod
    def _message(movie: dict[str, Any]) -> movie_pb2.MovieData:
        return movie_pb2.MovieData(
            title=movie["title"], rating=movie["rating"], director=movie["director"], id=movie["id"]
        )

    def GetMovieByID(
        self, request: movie_pb2.MovieID, context: grpc.ServicerContext
    ) -> movie_pb2.MovieData:
        for movie in self._movies:
            if movie["id"] == request.id:
                return self._message(movie)
        context.abort(grpc.StatusCode.NOT_FOUND, f"no movie with id {request.id!r}")

    # The seed had no search by title or director: these answer UNIMPLEMENTED, as it would.
    def GetMovieByTitle(
        self, request: movie_pb2.MovieTitle, context: grpc.ServicerContext
    ) -> movie_pb2.MovieData:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the seed")

    def GetMoviesByDirector(
        self, request: movie_pb2.Director, context: grpc.ServicerContext
    ) -> Iterator[movie_pb2.MovieData]:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the seed")

    def GetListMovies(
        self, request: movie_pb2.Empty, context: grpc.ServicerContext
    ) -> Iterator[movie_pb2.MovieData]:
        for movie in self._movies:
            yield self._message(movie)


class SeedSoccer(soccer_pb2_grpc.SoccerServicer):
    def __init__(self, videos_dir: Path) -> None:
        self._videos_dir = videos_dir

    def Watch(
        self, request: soccer_pb2.Match, context: grpc.ServicerContext
    ) -> Iterator[soccer_pb2.Video]:
        path = self._videos_dir / f"{Path(request.id).name}.mp4"
        if not path.is_file():
            context.abort(grpc.StatusCode.NOT_FOUND, f"no match {request.id!r}")
        capture = cv2.VideoCapture(str(path))
        fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
        quality = request.jpeg_quality or SEED_JPEG_QUALITY
        index = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if request.encoding == soccer_pb2.JPEG:
                    ok, frame = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
                yield soccer_pb2.Video(
                    data=frame.tobytes(),
                    data_type=str(frame.dtype),
                    data_shape=str(frame.shape),
                    frame_index=index,
                    timestamp=index / fps,
                )
                index += 1
        finally:
            capture.release()


def credentials(certs: Path, service: str) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [((certs / f"{service}.key").read_bytes(), (certs / f"{service}.crt").read_bytes())],
        root_certificates=(certs / "ca.crt").read_bytes(),
        require_client_auth=True,
    )


def build(args: argparse.Namespace) -> tuple[grpc.Server, int]:
    server = grpc.server(
        ThreadPoolExecutor(max_workers=SEED_WORKERS),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    if args.service == "cheese":
        cheese_pb2_grpc.add_CheeseServiceServicer_to_server(SeedCheese(), server)
    elif args.service == "movie":
        movies = json.loads(Path(args.catalogue).read_text())["movies"]
        movie_pb2_grpc.add_MovieServicer_to_server(SeedMovie(movies), server)
    else:
        soccer_pb2_grpc.add_SoccerServicer_to_server(SeedSoccer(Path(args.videos_dir)), server)
    address = f"{args.host}:{args.port}"
    if args.insecure:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials(Path(args.certs), args.service))
    return server, port


def arguments(prog: str, doc: str | None, services: Sequence[str]) -> argparse.ArgumentParser:
    """The command line of the baseline servers, seed and floor alike."""
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--service", choices=services, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--certs", default="certs", help="folder with ca.crt, <service>.crt/.key")
    parser.add_argument("--catalogue", default="movie/data/movies.json")
    parser.add_argument("--videos-dir", default="videos")
    return parser


def announce(port: int, service: str, kind: str) -> None:
    """The same shape as our servers' "listening" log line, so one launcher reads all."""
    print(json.dumps({"message": "listening", "port": port, "service": service, kind: True}))
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = arguments("python -m bench.seed_servers", __doc__, ("cheese", "movie", "soccer"))
    parser.add_argument("--insecure", action="store_true", help="plaintext instead of mTLS")
    args = parser.parse_args(argv)
    server, port = build(args)
    server.start()
    announce(port, args.service, "seed")
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
