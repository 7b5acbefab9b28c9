"""The inputs a run generates for itself: a PKI, a large catalogue, and demo videos.

Generated fresh in a temp dir, so the benchmark never depends on (or changes) the
repository's certs/, movie/data or videos/, and the catalogue is big enough that a linear
scan shows. Each input is made only when a section first asks for it.
"""

import json
import random
import subprocess
import sys
from functools import cached_property
from pathlib import Path

from bench.settings import ROOT

CATALOGUE_SIZE = 100_000
MATCH = "demo"  # 720p, 30 fps
MATCH_1080 = "demo1080"


def movie_id(n: int) -> str:
    """UUID-shaped ids that ghz can template (see ID_TEMPLATE)."""
    return f"00000000-0000-4000-8000-{n:012d}"


# A random id per call; a Go raw string, since ghz checks the data is JSON before templating.
ID_TEMPLATE = "{{printf `00000000-0000-4000-8000-%012d` (randomInt 0 " + str(CATALOGUE_SIZE) + ")}}"


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Workspace:
    def __init__(self, directory: Path, quick: bool) -> None:
        self.directory = directory
        self.quick = quick

    @cached_property
    def pki(self) -> Path:
        directory = self.directory / "pki"
        subprocess.run(
            [str(ROOT / "certs" / "gen-certs.sh"), str(directory)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return directory

    @cached_property
    def catalogue(self) -> Path:
        rng = random.Random(0)
        movies = [
            {
                "title": f"Benchmark Movie {n}",
                "rating": round(rng.uniform(1, 10), 1),
                "director": f"Director {n % 5000}",
                "id": movie_id(n),
            }
            for n in range(CATALOGUE_SIZE)
        ]
        path = self.directory / "catalogue" / "movies.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"movies": movies}))
        return path

    @cached_property
    def videos(self) -> Path:
        """demo.mp4: 720p, 20 s, so viewers never run out in a window; demo1080.mp4: 1080p."""
        from soccer import demo_video  # OpenCV: only loaded when a video section runs

        directory = self.directory / "videos"
        seconds = 12.0 if self.quick else 20.0
        _log(f"generating a {seconds:g} s 720p and a {seconds / 2:g} s 1080p demo video")
        demo_video.generate(directory / f"{MATCH}.mp4", seconds=seconds, fps=30)
        demo_video.generate(
            directory / f"{MATCH_1080}.mp4", seconds=seconds / 2, fps=30, width=1920, height=1080
        )
        return directory

    def client_tls(self) -> list[str]:
        """ca, cert, key: what every load generator presents."""
        return [str(self.pki / name) for name in ("ca.crt", "client.crt", "client.key")]
