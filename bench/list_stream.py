"""GetListMovies over the 100k catalogue: how fast a server streams many small messages.

One stream read to the end by the Go client; ours sends prebuilt messages, the seed builds
one per movie, and both pay per-message costs in their gRPC stack. The floor (grpcio alone,
bench/floor_servers.py) is measured alongside: no server whose contract sends one message
per movie can beat it by much, so it says how far the 2x target is from reach.
"""

from contextlib import ExitStack

from bench import streams, tools
from bench.figures import Figure, compare
from bench.processes import floor, ours, rounds, seed
from bench.settings import Settings
from bench.streams import Report
from bench.workspace import Workspace

TARGET_RATIO = 2.0


def run(settings: Settings, workspace: Workspace) -> list[Figure]:
    binary = tools.viewers()
    with ExitStack() as stack:
        servers = {
            "ours": stack.enter_context(ours("movie", settings, workspace)),
            "seed": stack.enter_context(seed("movie", settings, workspace)),
            "floor": stack.enter_context(floor("movie", settings, workspace)),
        }
        reports: dict[str, list[Report]] = {kind: [] for kind in servers}
        for kind, server in rounds("list", servers, settings.reps):
            reports[kind].append(streams.list_movies(binary, server, settings, workspace))
    counts = {r["messages"] for rs in reports.values() for r in rs}
    rates = {kind: [r["messages_per_s"] for r in rs] for kind, rs in reports.items()}
    return [
        compare(
            "list",
            "list.GetListMovies.100k.messages_per_s",
            "msg/s",
            rates["ours"],
            rates["seed"],
            min_ratio=TARGET_RATIO,
            note="" if counts == {100_000} else f"message counts differ: {sorted(counts)}",
            detail={
                kind: [{k: r[k] for k in ("seconds", "first_message_ms", "client_cpu")} for r in rs]
                for kind, rs in reports.items()
            },
        ),
        compare(
            "list",
            "list.GetListMovies.100k.floor_messages_per_s",
            "msg/s",
            rates["floor"],
            rates["seed"],
            note=f"grpcio alone; the {TARGET_RATIO:g}x target needs {TARGET_RATIO:g}x the seed",
        ),
    ]
