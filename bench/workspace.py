"""What every section works with: how long to measure, on which CPUs, and generated inputs.

Servers run on one CPU and load generators on another, so that a client's own work never
counts against the server and each server gets exactly one core, like a small container.
The inputs (a PKI, a large catalogue, demo videos) are made fresh in a temp dir, so a run
never depends on or changes the repository's certs/, movie/data or videos/, and the
catalogue is big enough that a linear scan shows. Each is made when first asked for.
"""

import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE_SIZE = 100_000
MATCH = "demo"  # 720p, 30 fps
MATCH_1080 = "demo1080"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def movie_id(n: int) -> str:
    """UUID-shaped, so that ghz can make a random one per call (bench/unary.py)."""
    return f"00000000-0000-4000-8000-{n:012d}"


def free_port() -> int:
    """A loopback port free now, for a compose stack's published ports."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Workspace:
    def __init__(self, directory: Path, quick: bool, reps: int | None) -> None:
        self.directory = directory
        self.quick = quick
        self.reps = reps or (1 if quick else 3)
        cpus = sorted(os.sched_getaffinity(0))
        self.server_cpus = frozenset(cpus[:1]) if len(cpus) >= 2 else None
        self.load_cpus = frozenset(cpus[1:2]) if len(cpus) >= 2 else None
        self.logs = directory / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    @property
    def pinning(self) -> str:
        if self.server_cpus is None or self.load_cpus is None:
            return "not pinned (fewer than 2 CPUs available)"
        return f"servers on CPU {sorted(self.server_cpus)}, load on CPU {sorted(self.load_cpus)}"

    def pin(self, role: str) -> Callable[[], None] | None:
        """A preexec_fn pinning a child to the "server" or "load" CPU before it starts any
        thread (threads inherit it); None for "machine", which leaves it every CPU."""
        if role == "machine":
            return None
        cpus = self.server_cpus if role == "server" else self.load_cpus
        return None if cpus is None else lambda: os.sched_setaffinity(0, cpus)

    @cached_property
    def pki(self) -> Path:
        directory = self.directory / "pki"
        subprocess.run(
            [str(ROOT / "certs" / "gen-certs.sh"), str(directory)],
            check=True,
            capture_output=True,
        )
        return directory

    def client_tls(self) -> list[str]:
        """ca, cert, key: what every load generator presents."""
        return [str(self.pki / name) for name in ("ca.crt", "client.crt", "client.key")]

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
        """MATCH: 720p, long enough that viewers never run out in a window; MATCH_1080."""
        from soccer import demo_video  # OpenCV: only loaded when a video section runs

        directory = self.directory / "videos"
        seconds = 12.0 if self.quick else 20.0
        log(f"generating a {seconds:g} s 720p and a {seconds / 2:g} s 1080p demo video")
        demo_video.generate(directory / f"{MATCH}.mp4", seconds=seconds, fps=30)
        demo_video.generate(
            directory / f"{MATCH_1080}.mp4", seconds=seconds / 2, fps=30, width=1920, height=1080
        )
        return directory
