from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import grpc
import pytest

from api import movie_pb2, movie_pb2_grpc
from grpckit.lifecycle.server import Server
from movie.catalogue import CatalogueError, load
from movie.server import DEFAULT_CATALOGUE, Movies, MovieSettings
from tests.conftest import Connect, cause_of_failed_start, client_tls, eventually, serving

MARTIAN = "a8034f44-aee4-44cf-b32c-74cf452aaaae"
SEVEN = json.loads(DEFAULT_CATALOGUE.read_text())["movies"]


def movie_server(
    pki: Path, catalogue: Path, reload_seconds: float = 0.0
) -> AbstractAsyncContextManager[Server]:
    return serving(pki, "movie", Movies(MovieSettings(catalogue, reload_seconds)))


@pytest.fixture
async def movies(pki: Path, connect: Connect) -> AsyncIterator[movie_pb2_grpc.MovieAsyncStub]:
    async with movie_server(pki, DEFAULT_CATALOGUE) as server:
        yield movie_pb2_grpc.MovieStub(connect(server.port, client_tls(pki)))


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    return error.value.code()


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)


@pytest.mark.parametrize("entry", SEVEN, ids=[m["title"] for m in SEVEN])
async def test_get_by_id_returns_each_default_movie(
    movies: movie_pb2_grpc.MovieAsyncStub, entry: dict[str, Any]
) -> None:
    movie = await movies.GetMovieByID(movie_pb2.MovieID(id=entry["id"]), timeout=5)
    assert (movie.title, movie.director, movie.id) == (
        entry["title"],
        entry["director"],
        entry["id"],
    )
    assert movie.rating == pytest.approx(entry["rating"])


async def test_list_streams_all_seven_in_file_order(movies: movie_pb2_grpc.MovieAsyncStub) -> None:
    titles = [m.title async for m in movies.GetListMovies(movie_pb2.Empty(), timeout=5)]
    assert titles == [m["title"] for m in SEVEN]


async def test_title_lookup_ignores_case_and_spaces(movies: movie_pb2_grpc.MovieAsyncStub) -> None:
    movie = await movies.GetMovieByTitle(movie_pb2.MovieTitle(title="  the MARTIAN "), timeout=5)
    assert movie.id == MARTIAN


async def test_director_filter(movies: movie_pb2_grpc.MovieAsyncStub) -> None:
    found = [
        m.title async for m in movies.GetMoviesByDirector(movie_pb2.Director(name="ridley scott"))
    ]
    assert found == ["The Martian"]


@pytest.mark.parametrize(
    ("method", "request_", "code"),
    [
        ("GetMovieByID", movie_pb2.MovieID(id="no-such-id"), grpc.StatusCode.NOT_FOUND),
        ("GetMovieByID", movie_pb2.MovieID(id=MARTIAN.upper()), grpc.StatusCode.NOT_FOUND),
        ("GetMovieByID", movie_pb2.MovieID(id=""), grpc.StatusCode.INVALID_ARGUMENT),
        ("GetMovieByID", movie_pb2.MovieID(id="   "), grpc.StatusCode.INVALID_ARGUMENT),
        ("GetMovieByID", movie_pb2.MovieID(id="x" * 129), grpc.StatusCode.INVALID_ARGUMENT),
        ("GetMovieByID", movie_pb2.MovieID(id="x" * 1_000_000), grpc.StatusCode.INVALID_ARGUMENT),
        ("GetMovieByTitle", movie_pb2.MovieTitle(title="Jaws"), grpc.StatusCode.NOT_FOUND),
        ("GetMovieByTitle", movie_pb2.MovieTitle(), grpc.StatusCode.INVALID_ARGUMENT),
        ("GetMoviesByDirector", movie_pb2.Director(name="Nobody"), grpc.StatusCode.NOT_FOUND),
        ("GetMoviesByDirector", movie_pb2.Director(), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_bad_lookups_get_their_status(
    movies: movie_pb2_grpc.MovieAsyncStub, method: str, request_: Any, code: grpc.StatusCode
) -> None:
    assert await code_of(getattr(movies, method)(request_, timeout=5)) == code


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"films": []}', '{"movies": [...]}'),
        ('{"movies": [{"title": "A", "rating": 5, "director": "B"}]}', "movies[0]: 'id'"),
        (
            '{"movies": [{"title": "A", "rating": 5, "director": "B", "id": "1"},'
            ' {"title": "C", "rating": "high", "director": "D", "id": "2"}]}',
            "movies[1]: 'rating'",
        ),
        (
            '{"movies": [{"title": "A", "rating": 5, "director": "B", "id": "1"},'
            ' {"title": "C", "rating": 6, "director": "D", "id": "1"}]}',
            "movies[1]: duplicate id",
        ),
    ],
)
def test_malformed_catalogue_names_file_and_entry(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CatalogueError) as error:
        load(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


async def test_malformed_catalogue_fails_start_up(tmp_path: Path, pki: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"movies": [{"title": "A", "rating": 11, "director": "B", "id": "1"}]}')
    cause = await cause_of_failed_start(pki, "movie", "--catalogue", str(path))
    assert str(path) in cause
    assert "movies[0]: 'rating' must be between 0 and 10" in cause


async def test_reload_swaps_good_files_and_keeps_serving_through_bad_ones(
    tmp_path: Path, pki: Path, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "movies.json"
    path.write_text(DEFAULT_CATALOGUE.read_text())
    async with movie_server(pki, path, reload_seconds=0.05) as server:
        movies = movie_pb2_grpc.MovieStub(connect(server.port, client_tls(pki)))
        extra = {"title": "Arrival", "rating": 7.9, "director": "Denis Villeneuve", "id": "arr-1"}
        write_atomically(path, json.dumps({"movies": [*SEVEN, extra]}))

        async def arrived() -> None:
            movie = await movies.GetMovieByID(movie_pb2.MovieID(id="arr-1"), timeout=5)
            assert movie.title == "Arrival"

        await eventually(arrived)
        listed = [m async for m in movies.GetListMovies(movie_pb2.Empty(), timeout=5)]
        assert len(listed) == 8

        with caplog.at_level(logging.ERROR, logger="movie.server"):
            write_atomically(path, '{"movies": [{"title": "broken"}]}')

            async def rejected() -> None:
                assert any("catalogue rejected" in r.getMessage() for r in caplog.records)

            await eventually(rejected)
        assert any(str(path) in str(getattr(r, "error", "")) for r in caplog.records)
        # The last good catalogue keeps serving.
        assert (
            await movies.GetMovieByID(movie_pb2.MovieID(id="arr-1"), timeout=5)
        ).title == "Arrival"
        assert (
            await movies.GetMovieByID(movie_pb2.MovieID(id=MARTIAN), timeout=5)
        ).title == "The Martian"
