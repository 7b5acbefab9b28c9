"""The catalogue: loaded and checked in full, then swapped in whole.

Readers hold a reference to one immutable Catalogue, so a reload never shows a call half
of the old data and half of the new. Responses are built once at load, not per call.
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api import movie_pb2

MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 512


class CatalogueError(ValueError):
    """A catalogue file that cannot be served; the message names the file and the entry."""


def key(text: str) -> str:
    """How titles and directors are matched: case and surrounding space do not count."""
    return text.strip().casefold()


@dataclass(frozen=True)
class Catalogue:
    movies: Sequence[movie_pb2.MovieData]
    by_id: Mapping[str, movie_pb2.MovieData] = field(repr=False)
    by_title: Mapping[str, movie_pb2.MovieData] = field(repr=False)
    by_director: Mapping[str, Sequence[movie_pb2.MovieData]] = field(repr=False)

    @classmethod
    def of(cls, movies: Sequence[movie_pb2.MovieData]) -> "Catalogue":
        by_title: dict[str, movie_pb2.MovieData] = {}
        by_director: dict[str, list[movie_pb2.MovieData]] = {}
        for movie in movies:
            by_title.setdefault(key(movie.title), movie)
            by_director.setdefault(key(movie.director), []).append(movie)
        return cls(tuple(movies), {m.id: m for m in movies}, by_title, by_director)


def _text(entry: Mapping[str, Any], name: str, limit: int) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name!r} must be a non-empty string, got {value!r}")
    if len(value) > limit:
        raise ValueError(f"{name!r} is longer than {limit} characters")
    return value


def _movie(entry: Any) -> movie_pb2.MovieData:
    if not isinstance(entry, dict):
        raise ValueError(f"expected an object, got {type(entry).__name__}")
    rating = entry.get("rating")
    if isinstance(rating, bool) or not isinstance(rating, int | float) or not math.isfinite(rating):
        raise ValueError(f"'rating' must be a number, got {rating!r}")
    if not 0 <= rating <= 10:
        raise ValueError(f"'rating' must be between 0 and 10, got {rating}")
    return movie_pb2.MovieData(
        id=_text(entry, "id", MAX_ID_LENGTH),
        title=_text(entry, "title", MAX_TEXT_LENGTH),
        director=_text(entry, "director", MAX_TEXT_LENGTH),
        rating=rating,
    )


def parse(path: Path, text: str | bytes) -> Catalogue:
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CatalogueError(f"{path}: not valid JSON: {error}") from None
    entries = document.get("movies") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise CatalogueError(f'{path}: expected an object {{"movies": [...]}}')
    movies: list[movie_pb2.MovieData] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        try:
            movie = _movie(entry)
            if movie.id in seen:
                raise ValueError(f"duplicate id {movie.id!r}")
        except ValueError as error:
            raise CatalogueError(f"{path}: movies[{index}]: {error}") from None
        seen.add(movie.id)
        movies.append(movie)
    return Catalogue.of(movies)


def load(path: Path) -> Catalogue:
    try:
        text = path.read_bytes()
    except OSError as error:
        raise CatalogueError(f"{path}: cannot read: {error.strerror}") from None
    return parse(path, text)
