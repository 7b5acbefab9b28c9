"""The cost of observability: ours with metrics and traces on, as the stack runs them, against
ours with both off, in the same run.

"On" is every default: gRPC's own metrics (grpcio-observability) and the services' own, and
traces exported over OTLP to a collector (bench/otlp_sink.py, on the load CPU), sampled as
the stack samples them by default (grpckit/config.py, TraceSettings). Nothing scrapes
/metrics: a scrape every 15 s costs the server next to nothing against a call path that
records every call. "Off" is METRICS=off GRPC_METRICS=off and no collector (no tracer at
all).

- Unary: cheese `Order` at c=1 and c=50 (ghz, as bench/unary.py), on and off back to back
  in each repeat, which one goes first alternating; each figure is the pair with the median
  ratio. Two figures: calls/s, and calls per CPU-second of the server (its CPU time read
  from /proc), which is what bounds calls/s when the server is busy, and which load from
  elsewhere on a shared machine disturbs far less. Beside them, the same for grpc.aio alone
  (bench/floor_servers.py) with gRPC's plugin on and off: the plugin's own cost.
- Real-time viewers: a server's capacity for them is its CPU (bench/fanout.py searches it
  to a resolution of 1/8, too coarse for a 5 % bound), so what is compared is how many
  viewer-seconds of the 720p JPEG match one server CPU-second serves: VIEWERS viewers,
  paced, for the window, the server's CPU time read from /proc.
"""

import time
import urllib.request
from contextlib import ExitStack

from bench.figures import Figure, paired
from bench.servers import floor, launch, ours, rounds
from bench.tools import run_viewers
from bench.unary import measure
from bench.workspace import MATCH, Workspace, free_port

MIN_SHARE = 0.95  # on keeps at least 95 % of off's calls/s and viewers per CPU
# Ours' on/off ratio keeps at least 95 % of the floor's (gRPC's plugin on against off).
RELATIVE_MIN_SHARE = 0.95
CONCURRENCY = (1, 50)
VIEWERS = 24
FPS = 30

OFF = {"METRICS": "off", "GRPC_METRICS": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": ""}


def run(ws: Workspace) -> list[Figure]:
    with ExitStack() as stack:
        sink = stack.enter_context(launch("otlp sink", ["-m", "bench.otlp_sink"], ws, cpu="load"))
        on = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sink.address}"}
        figures = _unary(ws, stack, on)
        figures.append(_viewers(ws, stack, on))
    return figures


def _order(rep: int) -> tuple[str, ...]:
    """Each pair back to back, which one goes first alternating; pairs absent are skipped."""
    pairs = (("off", "on"), ("floor off", "floor on"))
    return tuple(kind for pair in pairs for kind in (pair if rep % 2 == 0 else pair[::-1]))


def _unary(ws: Workspace, stack: ExitStack, on: dict[str, str]) -> list[Figure]:
    seconds = 2.0 if ws.quick else 4.0
    metrics_port = free_port()
    scraped = {**on, "HEALTH_PORT": str(metrics_port)}
    servers = {
        kind: stack.enter_context(ours("cheese", ws, label=f"ours cheese {kind}", env=env))
        for kind, env in (("off", OFF), ("on", scraped))
    }
    servers["floor off"] = stack.enter_context(floor("cheese", ws))
    servers["floor on"] = stack.enter_context(floor("cheese", ws, grpc_metrics=True))
    answered = 0  # OK calls the "on" server answered
    for kind, server in servers.items():
        answered += measure(server, "cheese.Order", 50, 0.5, ws).calls * (kind == "on")
    figures = []
    for concurrency in CONCURRENCY:
        qps: dict[str, list[float]] = {kind: [] for kind in servers}
        per_cpu: dict[str, list[float]] = {kind: [] for kind in servers}
        what = f"observability cheese.Order c={concurrency}"
        for kind, server in rounds(what, servers, ws.reps, _order):
            result = measure(server, "cheese.Order", concurrency, seconds, ws)
            qps[kind].append(result.qps)
            per_cpu[kind].append(result.per_cpu)
            answered += result.calls * (kind == "on")
        prefix = f"observability.cheese.Order.c{concurrency}"
        for name, unit, runs in (("qps", "calls/s", qps), ("per_cpu", "calls/CPU-s", per_cpu)):
            value, baseline, ratios = paired(runs["on"], runs["off"])
            figures.append(Figure(
                "observability", f"{prefix}.{name}", unit, value, baseline,
                baseline_label="ours, metrics and traces off (paired)", min_ratio=MIN_SHARE,
                runs=runs["on"], baseline_runs=runs["off"], detail={"pair_ratios": ratios},
            ))  # fmt: skip
        # What gRPC's plugin alone costs grpc.aio alone: the part of the cost no code of
        # ours can take away.
        value, baseline, ratios = paired(per_cpu["floor on"], per_cpu["floor off"])
        figures.append(Figure(
            "observability", f"{prefix}.floor_grpc_metrics_per_cpu", "calls/CPU-s", value,
            baseline, baseline_label="grpc.aio alone, no plugin (paired)",
            runs=per_cpu["floor on"], baseline_runs=per_cpu["floor off"],
            detail={"pair_ratios": ratios},
        ))  # fmt: skip
        # Ours' on/off against the floor's: what observability costs ours beyond the
        # plugin's own price.
        ours_on_off = next(f for f in figures if f.name == f"{prefix}.per_cpu").ratio
        figures.append(Figure(
            "observability", f"{prefix}.on_off_vs_floor_on_off", "ratio", ours_on_off,
            figures[-1].ratio, baseline_label="grpc.aio alone, plugin on/off",
            min_ratio=RELATIVE_MIN_SHARE,
        ))  # fmt: skip
    figures.append(_exported(metrics_port, answered))
    return figures


def _exported(port: int, answered: int) -> Figure:
    """gRPC's plugin drops measurements past its queue without a word: the calls its
    histogram counted, once its export has caught up (up to 30 s), against the OK calls
    ghz had answered."""
    deadline = time.monotonic() + 30
    counted = 0.0
    while time.monotonic() < deadline:
        counted = _counted(port)
        if counted >= answered:
            break
        time.sleep(0.5)
    return Figure(
        "observability", "observability.cheese.Order.exported_vs_answered", "calls", counted,
        answered, baseline_label="OK calls answered", min_ratio=1.0,
    )  # fmt: skip


def _counted(port: int) -> float:
    """grpc_server_call_duration_seconds_count of OK Order calls on the server's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("grpc_server_call_duration_seconds_count{") and (
            'grpc_method="cheesefarm.CheeseService/Order"' in line and 'grpc_status="OK"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _viewers(ws: Workspace, stack: ExitStack, on: dict[str, str]) -> Figure:
    window = 3.0 if ws.quick else 6.0
    frames = round(window * FPS)
    servers = {
        kind: stack.enter_context(ours("soccer", ws, label=f"ours soccer {kind}", env=env))
        for kind, env in (("off", OFF), ("on", on))
    }
    args = ["watch", "-match", MATCH, "-viewers", str(VIEWERS), "-encoding", "jpeg", "-drain"]
    args += ["-duration", f"{window * 1.5 + 2:g}s", "-frames", str(frames)]
    per_cpu: dict[str, list[float]] = {"on": [], "off": []}
    for kind, server in rounds("observability soccer viewers", servers, ws.reps, _order):
        before = server.cpu_seconds()
        report = run_viewers(args, server, ws, timeout=window * 1.5 + 120)
        used = server.cpu_seconds() - before
        if report["errors"]:
            raise RuntimeError(f"{server.label}: {report['errors']} viewers failed")
        per_cpu[kind].append(VIEWERS * window / used if used > 0 else 0.0)
    value, baseline, ratios = paired(per_cpu["on"], per_cpu["off"])
    return Figure(
        "observability",
        "observability.soccer.jpeg.viewer_seconds_per_cpu_second",
        "viewer-s/CPU-s",
        value,
        baseline,
        baseline_label="ours, metrics and traces off (paired)",
        min_ratio=MIN_SHARE,
        runs=per_cpu["on"],
        baseline_runs=per_cpu["off"],
        detail={"pair_ratios": ratios, "viewers": VIEWERS, "window_s": window},
    )
