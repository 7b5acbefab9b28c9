"""What every section needs to know: how long to measure, how often, and on which CPUs.

Servers run on one CPU and load generators on another, so that a client's own work never
counts against the server and each server gets exactly one core, like a small container.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pin(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    """A preexec_fn that pins the child before it starts any thread (threads inherit it)."""
    if cpus is None:
        return None

    def preexec() -> None:
        os.sched_setaffinity(0, cpus)

    return preexec


@dataclass(frozen=True)
class Settings:
    work: Path  # temp dir: PKI, catalogue, videos, server logs
    quick: bool
    reps: int
    server_cpus: frozenset[int] | None
    load_cpus: frozenset[int] | None

    @classmethod
    def create(cls, work: Path, quick: bool, reps: int | None) -> "Settings":
        cpus = sorted(os.sched_getaffinity(0))
        server, load = (
            (frozenset(cpus[:1]), frozenset(cpus[1:2])) if len(cpus) >= 2 else (None, None)
        )
        return cls(work, quick, reps or (1 if quick else 3), server, load)

    @property
    def pinning(self) -> str:
        if self.server_cpus is None or self.load_cpus is None:
            return "not pinned (fewer than 2 CPUs available)"
        servers, load = sorted(self.server_cpus), sorted(self.load_cpus)
        return f"servers on CPU {servers}, load generators on CPU {load}"

    @property
    def logs(self) -> Path:
        path = self.work / "logs"
        path.mkdir(exist_ok=True)
        return path
