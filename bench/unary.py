"""Unary calls: QPS and latency of GetMovieByID and Order, ours against the seed.

Both concurrency 1 (latency bound: one call at a time) and 50 (throughput bound). Runs are
interleaved ours / seed / ours-plaintext within each repeat, so a burst of noise on the
shared machine hits all three alike. Ours runs with no simulated preparation time, as the
seed does, and GetMovieByID asks for a random id of the 100k catalogue each call, so the
seed's linear scan costs what it would on average.

The mTLS share pairs each repeat's mTLS run with the plaintext run right next to it (which
goes first alternates) and reports the pair with the median ratio: a burst of load from
elsewhere on the machine then lands inside one pair rather than on one side of the ratio of
two medians (which once read 0.44 where pairs, measured alone, gave 0.9-1.1).
"""

from contextlib import ExitStack

from bench import ghz, tools
from bench.figures import Figure, compare
from bench.ghz import UnaryCall, UnaryResult
from bench.processes import Server, ours, rounds, seed
from bench.settings import Settings
from bench.workspace import ID_TEMPLATE, Workspace

CALLS: dict[str, tuple[str, UnaryCall]] = {
    "movie.GetMovieByID": (
        "movie",
        UnaryCall("api/movie.proto", "Movie.GetMovieByID", '{"id": "' + ID_TEMPLATE + '"}'),
    ),
    "cheese.Order": (
        "cheese",
        UnaryCall("api/cheese.proto", "cheesefarm.CheeseService.Order", '{"type": "BRIE"}'),
    ),
}
CONCURRENCY = (1, 50)
MTLS_MIN_SHARE = 0.8  # mutual TLS may cost at most 20% of plaintext QPS


def run(settings: Settings, workspace: Workspace) -> list[Figure]:
    binary = tools.ghz()
    seconds = 2.0 if settings.quick else 4.0
    figures: list[Figure] = []
    for label, (service, call) in CALLS.items():
        with ExitStack() as stack:
            servers: dict[str, Server] = {
                "ours": stack.enter_context(ours(service, settings, workspace)),
                "seed": stack.enter_context(seed(service, settings, workspace)),
                "plain": stack.enter_context(ours(service, settings, workspace, tls=False)),
            }
            for server in servers.values():  # connections, caches, first-call paths
                ghz.run(binary, server, call, 50, 0.5, settings, workspace)
            for concurrency in CONCURRENCY:
                results: dict[str, list[UnaryResult]] = {kind: [] for kind in servers}
                what = f"unary {label} c={concurrency}"
                for kind, server in rounds(what, servers, settings.reps, _order):
                    results[kind].append(
                        ghz.run(binary, server, call, concurrency, seconds, settings, workspace)
                    )
                figures += _figures(label, concurrency, results)
    return figures


def _order(rep: int) -> tuple[str, ...]:
    """Ours (mTLS) and plaintext back to back, alternating which goes first; then the seed."""
    return ("ours", "plain", "seed") if rep % 2 == 0 else ("plain", "ours", "seed")


def _median_pair(ours: list[float], plain: list[float]) -> tuple[float | None, float | None]:
    """The (ours, plaintext) pair of one repeat with the median ratio (the lower middle one
    for an even count): a measured pair, so value / baseline is that ratio."""
    pairs = sorted((o / p, o, p) for o, p in zip(ours, plain, strict=True) if p > 0)
    if not pairs:
        return None, None
    _, value, baseline = pairs[(len(pairs) - 1) // 2]
    return value, baseline


def _figures(label: str, concurrency: int, results: dict[str, list[UnaryResult]]) -> list[Figure]:
    prefix = f"unary.{label}.c{concurrency}"
    ours, seed, plain = results["ours"], results["seed"], results["plain"]
    errors = {kind: sum(r.errors for r in rs) for kind, rs in results.items()}
    note = ""
    if any(errors.values()):
        first = next(r.first_error for rs in results.values() for r in rs if r.errors)
        note = f"errors {errors}: {first[:160]}"
    return [
        compare(
            "unary",
            f"{prefix}.qps",
            "calls/s",
            [r.qps for r in ours],
            [r.qps for r in seed],
            note=note,
        ),
        compare(
            "unary",
            f"{prefix}.p50",
            "ms",
            [r.p50_ms for r in ours],
            [r.p50_ms for r in seed],
            better="lower",
        ),
        compare(
            "unary",
            f"{prefix}.p99",
            "ms",
            [r.p99_ms for r in ours],
            [r.p99_ms for r in seed],
            better="lower",
        ),
        _mtls_share(prefix, [r.qps for r in ours], [r.qps for r in plain]),
    ]


def _mtls_share(prefix: str, ours: list[float], plain: list[float]) -> Figure:
    value, baseline = _median_pair(ours, plain)
    return Figure(
        "unary",
        f"{prefix}.mtls_vs_plaintext_qps",
        "calls/s",
        value,
        baseline,
        baseline_label="ours plaintext (paired)",
        min_ratio=MTLS_MIN_SHARE,
        runs=ours,
        baseline_runs=plain,
        detail={"pair_ratios": [o / p for o, p in zip(ours, plain, strict=True) if p > 0]},
    )
