"""Unary calls: QPS and latency of GetMovieByID and Order with ghz, ours against the seed.

Concurrency 1 (latency bound: one call at a time) and 50 (throughput bound), one connection,
a fixed duration. Runs are interleaved ours / ours-plaintext / seed within each repeat, so a
burst of noise on the shared machine hits all three alike. Ours runs with no simulated
preparation time, as the seed does, and GetMovieByID asks for a random id of the 100k
catalogue each call, so the seed's linear scan costs what it would on average.

The floor (grpc.aio alone, bench/floor_servers.py: `Order` answered at once, `GetMovieByID`
from answers serialized once) runs beside them: a unary call cannot be faster on grpc.aio
than that, so its ratio to the seed is the ceiling of ours. Against it, the runtime's own
cost: ours with every default on but gRPC's metrics plugin (mutual TLS, authorization,
budgets, access log, served-by, the services' metrics, traces at the default sampling
exported to a collector, bench/otlp_sink.py), in calls per server CPU-second, back to back
with the floor in each repeat (`runtime_vs_floor_per_cpu`). The runtime puts gRPC's own
threads under SCHED_BATCH (grpckit/lifecycle/scheduling.py), which grpc.aio alone can have
too: `runtime_vs_batch_floor_per_cpu` is ours against the floor that does, so what the
policy is worth and what the runtime's jobs cost read apart. The plugin's share is
bench/observability.py's.

The mTLS share pairs each repeat's mTLS run with the plaintext run right next to it (which
goes first alternates) and reports the pair with the median ratio: a burst of load from
elsewhere on the machine then lands inside one pair rather than on one side of the ratio of
two medians (which once read 0.44 where pairs, measured alone, gave 0.9-1.1).

When the duration ends ghz waits for the calls in flight (`--duration-stop wait`) instead of
cutting its connection: cancelled calls are not what is measured. QPS counts OK calls only;
errors of the connection closing at the very end are not held against the server.
"""

import dataclasses
import json
import resource
import subprocess
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from bench import tools
from bench.figures import Figure, compare, median, paired
from bench.servers import Server, floor, launch, ours, rounds, seed
from bench.workspace import CATALOGUE_SIZE, ROOT, Workspace, free_port

# A random catalogue id per call (bench.workspace.movie_id); a Go raw string, since ghz
# checks that the data is JSON before templating.
RANDOM_ID = f"{{{{printf `00000000-0000-4000-8000-%012d` (randomInt 0 {CATALOGUE_SIZE})}}}}"
CALLS = {  # service.Method: ghz's package.Service.Method, the request as JSON
    "movie.GetMovieByID": ("Movie.GetMovieByID", f'{{"id": "{RANDOM_ID}"}}'),
    "cheese.Order": ("cheesefarm.CheeseService.Order", '{"type": "BRIE"}'),
}
CONCURRENCY = (1, 50)
MTLS_MIN_SHARE = 0.8  # mutual TLS may cost at most 20% of plaintext QPS
RUNTIME_MIN_SHARE = 0.9  # the runtime's jobs may cost at most 10% of grpc.aio's own calls/CPU-s
SHUTDOWN_ERRORS = ("closed network connection", "client connection is closing", "canceled")


@dataclass(frozen=True)
class Result:
    calls: int  # OK
    qps: float
    p50_ms: float
    p99_ms: float
    errors: int
    first_error: str
    cpu_seconds: float = 0.0  # the server's, user and system, over the run

    @property
    def per_cpu(self) -> float:
        """OK calls per server CPU-second."""
        return self.calls / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


def run(ws: Workspace) -> list[Figure]:
    seconds = 2.0 if ws.quick else 4.0
    figures: list[Figure] = []
    with ExitStack() as outer:
        sink = outer.enter_context(launch("otlp sink", ["-m", "bench.otlp_sink"], ws, cpu="load"))
        runtime = {"GRPC_METRICS": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sink.address}"}
        for label in CALLS:
            service = label.split(".")[0]
            with ExitStack() as stack:
                servers: dict[str, Server] = {
                    "ours": stack.enter_context(ours(service, ws)),
                    "plain": stack.enter_context(ours(service, ws, tls=False)),
                    "seed": stack.enter_context(seed(service, ws)),
                    "floor": stack.enter_context(floor(service, ws)),
                    "batch floor": stack.enter_context(floor(service, ws, threads_batch=True)),
                    "runtime": stack.enter_context(
                        ours(service, ws, label=f"ours {service} runtime", env=runtime)
                    ),
                }
                for server in servers.values():  # connections, caches, first-call paths
                    measure(server, label, 50, 0.5, ws)
                for concurrency in CONCURRENCY:
                    results: dict[str, list[Result]] = {kind: [] for kind in servers}
                    what = f"unary {label} c={concurrency}"
                    for kind, server in rounds(what, servers, ws.reps, _order):
                        results[kind].append(measure(server, label, concurrency, seconds, ws))
                    figures += _figures(f"unary.{label}.c{concurrency}", results)
        figures += _per_machine(ws, seconds)
    return figures


def _per_machine(ws: Workspace, seconds: float) -> list[Figure]:
    """cheese `Order` at c=50 on the whole machine, nothing pinned: ours with WORKERS=2 (one
    process a core, SO_REUSEPORT) against ours with one worker and against the seed's one
    process. ghz opens 8 connections, which the kernel spreads over the workers, and shares
    the CPUs with them, as a client on the same machine would: what each run's server and
    ghz took of the machine, in cores, is in the figures' detail."""
    label, concurrency = "cheese.Order", 50
    with ExitStack() as stack:
        servers: dict[str, Server] = {
            "two": stack.enter_context(
                ours("cheese", ws, label="ours cheese 2 workers", env={"WORKERS": "2"},
                     port=free_port(), cpu="machine")
            ),
            "one": stack.enter_context(
                ours("cheese", ws, label="ours cheese 1 worker", cpu="machine")
            ),
            "seed": stack.enter_context(seed("cheese", ws, cpu="machine")),
        }  # fmt: skip
        method, data = CALLS[label]

        def machine(server: Server, duration: float) -> tuple[Result, dict[str, float]]:
            """One run, and the cores its server and ghz used over it."""
            server_before, ghz_before = server.cpu_seconds(workers=True), _children_cpu()
            started = time.monotonic()
            result = ghz(server.address, "cheese", method, data, concurrency, duration, ws,
                         ws.client_tls(), connections=8, cpu="machine")  # fmt: skip
            wall = time.monotonic() - started
            return result, {
                "server_cores": round((server.cpu_seconds(workers=True) - server_before) / wall, 2),
                "ghz_cores": round((_children_cpu() - ghz_before) / wall, 2),
            }

        for server in servers.values():
            machine(server, 0.5)
        qps: dict[str, list[float]] = {kind: [] for kind in servers}
        cores: dict[str, list[dict[str, float]]] = {kind: [] for kind in servers}
        for kind, server in rounds(f"unary {label} c=50 per machine", servers, ws.reps):
            result, used = machine(server, seconds)
            qps[kind].append(result.qps)
            cores[kind].append(used)
    prefix = f"unary.{label}.c{concurrency}.per_machine"
    taken = ", ".join(
        f"{kind} {median(r['server_cores'] for r in runs) or 0:.2f} + "
        f"{median(r['ghz_cores'] for r in runs) or 0:.2f}"
        for kind, runs in cores.items()
    )
    note = f"cores used, server + ghz (medians): {taken}"
    two_one, one, ratios_one = paired(qps["two"], qps["one"])
    two_seed, seed_qps, ratios_seed = paired(qps["two"], qps["seed"])
    return [
        Figure("unary", f"{prefix}.vs_one_worker", "calls/s", two_one, one,
               baseline_label="ours, 1 worker (paired)", min_ratio=1.8, runs=qps["two"],
               baseline_runs=qps["one"], note=note,
               detail={"pair_ratios": ratios_one, "cores": cores}),
        Figure("unary", f"{prefix}.vs_seed", "calls/s", two_seed, seed_qps,
               baseline_label="seed, 1 process (paired)", min_ratio=1.5, runs=qps["two"],
               baseline_runs=qps["seed"], note=note,
               detail={"pair_ratios": ratios_seed, "cores": cores}),
    ]  # fmt: skip


def _children_cpu() -> float:
    """CPU seconds of this process's children that have ended: ghz's, once it has run."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _order(rep: int) -> tuple[str, ...]:
    """Ours (mTLS) and plaintext back to back, then the runtime and the floor, alternating
    which of each pair goes first; then the floor with gRPC's threads batched, and the seed."""
    pairs = (("ours", "plain"), ("runtime", "floor"))
    ordered = (kind for pair in pairs for kind in (pair if rep % 2 == 0 else pair[::-1]))
    return (*ordered, "batch floor", "seed")


def measure(server: Server, label: str, concurrency: int, seconds: float, ws: Workspace) -> Result:
    """One ghz run against `server`, with the server's CPU time it cost."""
    method, data = CALLS[label]
    tls = ws.client_tls() if server.tls else None
    service = label.split(".")[0]
    before = server.cpu_seconds()
    result = ghz(server.address, service, method, data, concurrency, seconds, ws, tls)
    return dataclasses.replace(result, cpu_seconds=server.cpu_seconds() - before)


def ghz(
    address: str,
    service: str,
    method: str,
    data: str,
    concurrency: int,
    seconds: float,
    ws: Workspace,
    tls: Sequence[str] | None,
    connections: int = 1,
    cpu: str = "load",
) -> Result:
    """One ghz run of `method` of `service` (its proto/api file) at `address`, on
    `connections`; `tls` is (CA, certificate, key), None for plaintext."""
    proto = f"proto/api/{service}.proto"
    argv = [str(tools.ghz()), "--proto", proto, "--import-paths", "proto"]
    argv += ["--call", method, "--data", data, "--concurrency", str(concurrency)]
    argv += [
        "--connections",
        str(connections),
        "--duration",
        f"{seconds:g}s",
        "--duration-stop",
        "wait",
    ]
    if tls is not None:
        ca, cert, key = tls
        argv += ["--cacert", ca, "--cert", cert, "--key", key]
    argv += ["--format", "json", *([] if tls is not None else ["--insecure"]), address]
    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, check=False, timeout=seconds + 60,
        preexec_fn=ws.pin(cpu),
    )  # fmt: skip
    if not done.stdout.strip():
        raise RuntimeError(f"ghz failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    report = json.loads(done.stdout)
    ok = (report.get("statusCodeDistribution") or {}).get("OK", 0)
    errors = {
        message: count
        for message, count in (report.get("errorDistribution") or {}).items()
        if not any(s in message for s in SHUTDOWN_ERRORS)
    }
    latency = {p["percentage"]: p["latency"] / 1e6 for p in report.get("latencyDistribution") or []}
    return Result(
        calls=ok,
        qps=ok / (report["total"] / 1e9),
        p50_ms=latency.get(50, float("nan")),
        p99_ms=latency.get(99, float("nan")),
        errors=sum(errors.values()),
        first_error=next(iter(errors), ""),
    )


def _figures(prefix: str, results: dict[str, list[Result]]) -> list[Figure]:
    ours, seed, plain = results["ours"], results["seed"], results["plain"]
    errors = {kind: sum(r.errors for r in rs) for kind, rs in results.items()}
    note = ""
    if any(errors.values()):
        first = next(r.first_error for rs in results.values() for r in rs if r.errors)
        note = f"errors {errors}: {first[:160]}"
    qps, plain_qps = [r.qps for r in ours], [r.qps for r in plain]
    mtls, mtls_plain, ratios = paired(qps, plain_qps)
    runtime, floor_ = [r.per_cpu for r in results["runtime"]], [r.per_cpu for r in results["floor"]]
    share, floor_share, share_ratios = paired(runtime, floor_)
    batch_floor = [r.per_cpu for r in results["batch floor"]]
    return [
        compare("unary", f"{prefix}.qps", "calls/s", qps, [r.qps for r in seed], note=note),
        compare("unary", f"{prefix}.p50", "ms", [r.p50_ms for r in ours],
                [r.p50_ms for r in seed], better="lower"),
        compare("unary", f"{prefix}.p99", "ms", [r.p99_ms for r in ours],
                [r.p99_ms for r in seed], better="lower"),
        Figure(
            "unary", f"{prefix}.mtls_vs_plaintext_qps", "calls/s", mtls, mtls_plain,
            baseline_label="ours plaintext (paired)", min_ratio=MTLS_MIN_SHARE,
            runs=qps, baseline_runs=plain_qps, detail={"pair_ratios": ratios},
        ),
        compare("unary", f"{prefix}.floor_qps", "calls/s", [r.qps for r in results["floor"]],
                [r.qps for r in seed], baseline_label="seed (grpc.aio alone against it)"),
        Figure(
            "unary", f"{prefix}.runtime_vs_floor_per_cpu", "calls/CPU-s", share, floor_share,
            baseline_label="grpc.aio alone (paired)", min_ratio=RUNTIME_MIN_SHARE,
            runs=runtime, baseline_runs=floor_, detail={"pair_ratios": share_ratios},
        ),
        compare("unary", f"{prefix}.runtime_vs_batch_floor_per_cpu", "calls/CPU-s", runtime,
                batch_floor, baseline_label="grpc.aio alone, its threads under SCHED_BATCH"),
    ]  # fmt: skip
