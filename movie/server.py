"""Movie: the catalogue served from a JSON file, reloaded when the file changes."""

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc.aio import ServicerContext

from api import movie_pb2, movie_pb2_grpc
from grpckit.config import ConfigParser, ServerConfig
from grpckit.server import Server, Service, run_server
from movie import catalogue
from movie.catalogue import MAX_ID_LENGTH, MAX_TEXT_LENGTH, CatalogueError

log = logging.getLogger(__name__)

SERVICE_NAME = movie_pb2.DESCRIPTOR.services_by_name["Movie"].full_name
DEFAULT_CATALOGUE = Path(__file__).parent / "data" / "movies.json"


@dataclass(frozen=True)
class MovieConfig:
    server: ServerConfig
    catalogue: Path
    reload_seconds: float


def load_config(argv: Sequence[str] | None = None) -> MovieConfig:
    parser = ConfigParser("movie", 50052, "The movie catalogue gRPC server.")
    parser.add("--catalogue", "MOVIE_CATALOGUE", DEFAULT_CATALOGUE, "catalogue JSON file", Path)
    parser.add(
        "--reload-seconds",
        "MOVIE_RELOAD_SECONDS",
        2.0,
        "how often to check the file for changes; 0 turns reloading off",
        float,
    )
    server, args = parser.parse(argv)
    return MovieConfig(server, args.catalogue, args.reload_seconds)


class CatalogueFile:
    """The catalogue in force, and the file it comes from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._read_stamp()
        self.current = catalogue.load(path)

    def _read_stamp(self) -> tuple[int, int, int] | None:
        try:
            s = self.path.stat()
        except OSError:
            return None
        return (s.st_mtime_ns, s.st_size, s.st_ino)

    async def reload_if_changed(self) -> bool:
        """Swap in the file's new content if it changed and is valid; True if swapped."""
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return False
        # Remember the stamp even when the file is bad, so it is reported once, not each poll.
        self._stamp = stamp
        try:
            fresh = await asyncio.to_thread(catalogue.load, self.path)
        except CatalogueError as error:
            log.error(
                "catalogue rejected, still serving the last good one", extra={"error": str(error)}
            )
            return False
        self.current = fresh
        log.info("catalogue reloaded", extra={"path": str(self.path), "movies": len(fresh.movies)})
        return True

    async def watch(self, every: float) -> None:
        # Polling, not inotify: it also sees files replaced on bind mounts and network volumes.
        while True:
            await asyncio.sleep(every)
            await self.reload_if_changed()


Context = ServicerContext[object, movie_pb2.MovieData]


async def _required(context: Context, name: str, value: str, limit: int) -> str:
    if not value.strip():
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name} must not be empty")
    if len(value) > limit:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"{name} is longer than {limit} characters"
        )
    return value


class MovieServicer(movie_pb2_grpc.MovieServicer):
    def __init__(self, source: CatalogueFile) -> None:
        self._source = source

    async def GetMovieByID(
        self, request: movie_pb2.MovieID, context: Context
    ) -> movie_pb2.MovieData:
        movie_id = await _required(context, "id", request.id, MAX_ID_LENGTH)
        movie = self._source.current.by_id.get(movie_id)
        if movie is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no movie with id {movie_id!r}")
        return movie

    async def GetMovieByTitle(
        self, request: movie_pb2.MovieTitle, context: Context
    ) -> movie_pb2.MovieData:
        title = await _required(context, "title", request.title, MAX_TEXT_LENGTH)
        movie = self._source.current.by_title.get(catalogue.key(title))
        if movie is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no movie titled {title!r}")
        return movie

    async def GetListMovies(
        self, request: movie_pb2.Empty, context: Context
    ) -> AsyncIterator[movie_pb2.MovieData]:
        # One snapshot for the whole stream, even if a reload swaps the catalogue meanwhile.
        for movie in self._source.current.movies:
            yield movie

    async def GetMoviesByDirector(
        self, request: movie_pb2.Director, context: Context
    ) -> AsyncIterator[movie_pb2.MovieData]:
        name = await _required(context, "director", request.name, MAX_TEXT_LENGTH)
        movies = self._source.current.by_director.get(catalogue.key(name))
        if not movies:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no movies by director {name!r}")
        for movie in movies:
            yield movie


def build(config: MovieConfig, source: CatalogueFile) -> Server:
    def register(server: Server) -> None:
        movie_pb2_grpc.add_MovieServicer_to_server(MovieServicer(source), server.grpc)

    return Server(config.server, [Service(SERVICE_NAME, register)])


async def start(config: MovieConfig) -> Server:
    """Load the catalogue (CatalogueError if it is bad), then start serving it."""
    source = CatalogueFile(config.catalogue)
    log.info(
        "catalogue loaded", extra={"path": str(source.path), "movies": len(source.current.movies)}
    )
    server = build(config, source)
    await server.start()
    if config.reload_seconds > 0:
        server.spawn(source.watch(config.reload_seconds))
    await server.set_serving()
    return server


async def _start_or_exit(config: MovieConfig) -> Server:
    try:
        return await start(config)
    except CatalogueError as error:
        log.critical("cannot start: bad catalogue", extra={"error": str(error)})
        raise SystemExit(1) from None


def serve(argv: Sequence[str] | None = None) -> int:
    config = load_config(argv)
    return run_server(config.server, lambda: _start_or_exit(config))
