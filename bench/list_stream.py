"""GetListMovies over the 100k catalogue: how fast a server streams many small messages.

One stream read to the end by the Go viewers (`viewers list`); ours sends prebuilt messages,
the seed builds one per movie, and both pay per-message costs in their gRPC stack. The floor
(grpcio alone, bench/floor_servers.py) is measured alongside: no server whose contract sends
one message per movie can beat it by much, so it says how far the 2x target is from reach.
"""

from contextlib import ExitStack
from typing import Any

from bench.figures import Figure, compare
from bench.servers import floor, ours, rounds, seed
from bench.tools import run_viewers
from bench.workspace import CATALOGUE_SIZE, Workspace

TARGET_RATIO = 2.0


def run(ws: Workspace) -> list[Figure]:
    with ExitStack() as stack:
        servers = {
            "ours": stack.enter_context(ours("movie", ws)),
            "seed": stack.enter_context(seed("movie", ws)),
            "floor": stack.enter_context(floor("movie", ws)),
        }
        reports: dict[str, list[dict[str, Any]]] = {kind: [] for kind in servers}
        for kind, server in rounds("list", servers, ws.reps):
            reports[kind].append(run_viewers(["list"], server, ws, timeout=300))
    counts = {r["messages"] for rs in reports.values() for r in rs}
    rates = {kind: [r["messages_per_s"] for r in rs] for kind, rs in reports.items()}
    return [
        compare(
            "list", "list.GetListMovies.100k.messages_per_s", "msg/s", rates["ours"],
            rates["seed"], min_ratio=TARGET_RATIO,
            note="" if counts == {CATALOGUE_SIZE} else f"message counts differ: {sorted(counts)}",
            detail=reports,
        ),
        compare(
            "list", "list.GetListMovies.100k.floor_messages_per_s", "msg/s", rates["floor"],
            rates["seed"],
            note=f"grpcio alone; the {TARGET_RATIO:g}x target needs {TARGET_RATIO:g}x the seed",
        ),
    ]  # fmt: skip
