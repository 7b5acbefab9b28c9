"""Movie: the catalogue served from a JSON file, reloaded when the file changes."""

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc.aio import ServicerContext
from opentelemetry import metrics

from api import movie_pb2, movie_pb2_grpc
from grpckit.lifecycle.service import BackgroundTasks, Program, Service, StartupError
from grpckit.settings import setting
from movie import catalogue
from movie.catalogue import MAX_ID_LENGTH, MAX_TEXT_LENGTH, CatalogueError

log = logging.getLogger(__name__)

SERVICE_NAME = movie_pb2.DESCRIPTOR.services_by_name["Movie"].full_name
DEFAULT_CATALOGUE = Path(__file__).parent / "data" / "movies.json"

_meter = metrics.get_meter("movie")
_movies = _meter.create_gauge("movie.catalogue.movies", description="movies in the catalogue")
_reloads = _meter.create_counter(
    "movie.catalogue.reloads", description="catalogue files read after a change: ok or rejected"
)
_OK, _REJECTED = {"result": "ok"}, {"result": "rejected"}


@dataclass(frozen=True)
class MovieSettings:
    catalogue: Path = setting(DEFAULT_CATALOGUE, "MOVIE_CATALOGUE", "the catalogue, a JSON file")
    reload_seconds: float = setting(
        2.0,
        "MOVIE_RELOAD_SECONDS",
        "how often to check the file for changes; 0 turns reloading off",
        minimum=0,
    )


class CatalogueFile:
    """The catalogue in force, and the file it comes from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._read_stamp()
        self.current = catalogue.load(path)
        _movies.set(len(self.current.movies))

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
            _reloads.add(1, _REJECTED)
            log.error(
                "catalogue rejected, still serving the last good one", extra={"error": str(error)}
            )
            return False
        _reloads.add(1, _OK)
        _movies.set(len(fresh.movies))
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


class Movies(movie_pb2_grpc.MovieServicer, Service):
    names = (SERVICE_NAME,)
    # Set by start; the runtime refuses calls until then (grpckit/calls/interceptors.py).
    source: CatalogueFile

    def __init__(self, settings: MovieSettings) -> None:
        self.settings = settings

    def add_to(self, server: grpc.aio.Server) -> None:
        movie_pb2_grpc.add_MovieServicer_to_server(self, server)

    async def start(self, tasks: BackgroundTasks) -> None:
        try:
            self.source = await asyncio.to_thread(CatalogueFile, self.settings.catalogue)
        except CatalogueError as error:
            raise StartupError(f"bad catalogue: {error}") from None
        log.info(
            "catalogue loaded",
            extra={"path": str(self.source.path), "movies": len(self.source.current.movies)},
        )
        if self.settings.reload_seconds > 0:
            tasks.spawn(self.source.watch(self.settings.reload_seconds))

    async def GetMovieByID(
        self, request: movie_pb2.MovieID, context: Context
    ) -> movie_pb2.MovieData:
        movie_id = await _required(context, "id", request.id, MAX_ID_LENGTH)
        movie = self.source.current.by_id.get(movie_id)
        if movie is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no movie with id {movie_id!r}")
        return movie

    async def GetMovieByTitle(
        self, request: movie_pb2.MovieTitle, context: Context
    ) -> movie_pb2.MovieData:
        title = await _required(context, "title", request.title, MAX_TEXT_LENGTH)
        movie = self.source.current.by_title.get(catalogue.key(title))
        if movie is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no movie titled {title!r}")
        return movie

    async def GetListMovies(
        self, request: movie_pb2.Empty, context: Context
    ) -> AsyncIterator[movie_pb2.MovieData]:
        # One snapshot for the whole stream, even if a reload swaps the catalogue meanwhile.
        for movie in self.source.current.movies:
            yield movie

    async def GetMoviesByDirector(
        self, request: movie_pb2.Director, context: Context
    ) -> AsyncIterator[movie_pb2.MovieData]:
        name = await _required(context, "director", request.name, MAX_TEXT_LENGTH)
        movies = self.source.current.by_director.get(catalogue.key(name))
        if not movies:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no movies by director {name!r}")
        for movie in movies:
            yield movie


PROGRAM = Program(
    "movie", 50052, "The movie catalogue gRPC server.", MovieSettings, lambda s: [Movies(s)]
)
