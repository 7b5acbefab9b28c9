"""Where a server's CPU goes: each of its threads' CPU per call, or per frame sent, against
the floor's, back to back under the bench's own load. Not a `make bench` section: its
figures are for finding out what a change moved (docs/performance.md).

    python -m bench.cpu unary [--call cheese.Order] [--concurrency 50] [--seconds 4]
        [--rounds 3] [VARIANT ...]
    python -m bench.cpu fanout [--viewers 128,256,320] [--frames 180]

A VARIANT is `name=SETTING:value,...`, ours with those settings on top of the unary
section's runtime run (every default but gRPC's metrics plugin, traces to a sink), e.g.
`quiet=ACCESS_LOG:off` or `plugin=GRPC_METRICS:on`; `ours=` is that run itself. The floor
is always measured first in each round. Threads are summed by name (the event loop is
"loop"; gRPC's poller and grpcio-observability's export thread are both named "python").
"""

import argparse
import collections
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from bench.servers import Server, cpu_seconds_of, floor, launch, ours
from bench.tools import run_viewers
from bench.unary import CALLS, measure
from bench.workspace import MATCH, Workspace


def threads(server: Server) -> dict[str, float]:
    """CPU seconds so far of each of the server's threads, by thread id."""
    pid = server.process.pid
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            spent = cpu_seconds_of(task / "stat")
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        seconds["loop" if task.name == str(pid) else f"{name}/{task.name}"] = spent
    return seconds


def by_name(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent in between by each name of thread, most first."""
    spent: dict[str, float] = collections.defaultdict(float)
    for key, seconds in after.items():
        spent[key.partition("/")[0]] += seconds - before.get(key, 0.0)
    return dict(sorted(spent.items(), key=lambda item: -item[1]))


def unary(args: argparse.Namespace, ws: Workspace) -> None:
    service = args.call.split(".")[0]
    with ExitStack() as stack:
        sink = stack.enter_context(launch("otlp sink", ["-m", "bench.otlp_sink"], ws, cpu="load"))
        runtime = {"GRPC_METRICS": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sink.address}"}
        servers = {"floor": stack.enter_context(floor(service, ws))}
        for variant in args.variants or ["ours="]:
            name, _, settings = variant.partition("=")
            env = runtime | dict(kv.split(":", 1) for kv in settings.split(",") if kv)
            servers[name] = stack.enter_context(ours(service, ws, label=f"ours {name}", env=env))
        for server in servers.values():  # connections, caches, first-call paths
            measure(server, args.call, args.concurrency, 0.5, ws)
        totals: dict[str, list[float]] = collections.defaultdict(list)
        for round_ in range(args.rounds):
            for name, server in servers.items():
                before = threads(server)
                result = measure(server, args.call, args.concurrency, args.seconds, ws)
                spent = by_name(before, threads(server))
                per_call = {k: v / max(result.calls, 1) * 1e6 for k, v in spent.items()}
                totals[name].append(sum(per_call.values()))
                shown = " ".join(f"{k}={v:.1f}" for k, v in per_call.items() if v >= 0.5)
                print(f"round {round_} {name}: {result.qps:.0f} calls/s, µs a call: {shown}")
    for name, runs in totals.items():
        print(f"{name}: median {statistics.median(runs):.1f} µs of server CPU a call")


def fanout(args: argparse.Namespace, ws: Workspace) -> None:
    window = round(args.frames / 30 * 1.5 + 2)
    with ExitStack() as stack:
        for kind, start in (("ours", ours), ("floor", floor)):
            server = stack.enter_context(start("soccer", ws))
            for viewers in args.viewers:
                before, started = server.cpu_seconds(), time.monotonic()
                report = run_viewers(
                    ["watch", "-match", MATCH, "-viewers", str(viewers), "-encoding", "jpeg",
                     "-duration", f"{window}s", "-frames", str(args.frames), "-drain"],
                    server, ws, timeout=window + 120 + viewers * 0.2,
                )  # fmt: skip
                spent, frames = server.cpu_seconds() - before, max(report["frames"], 1)
                print(
                    f"{kind} {viewers} viewers: {spent:.2f} CPU-s over "
                    f"{time.monotonic() - started:.1f} s, {spent / frames * 1e6:.0f} µs a "
                    f"frame sent; min fps {report['min_fps']:.1f}, p99 lag "
                    f"{report['p99_lag_ms']:.0f} ms, first frame {report['max_first_frame_ms']:.0f}"
                    f" ms, errors {report['errors']}"
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    calls = modes.add_parser("unary")
    calls.add_argument("--call", choices=sorted(CALLS), default="cheese.Order")
    calls.add_argument("--concurrency", type=int, default=50)
    calls.add_argument("--seconds", type=float, default=4.0)
    calls.add_argument("--rounds", type=int, default=3)
    calls.add_argument("variants", nargs="*", metavar="VARIANT")
    frames = modes.add_parser("fanout")
    frames.add_argument("--viewers", type=lambda text: [int(n) for n in text.split(",")],
                        default=[128, 256, 320])  # fmt: skip
    frames.add_argument("--frames", type=int, default=180)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="grpcdemo-cpu-"))
    try:
        (unary if args.mode == "unary" else fanout)(args, Workspace(directory, False, 1))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
