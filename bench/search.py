"""The largest viewer count a server sustains: double until it fails, then bisect.

Each step costs a whole measurement window, so the bisection stops at a resolution of
about 1/8 of the answer (exact below 8): knowing 120 from 128 is not worth a minute.
Noise flips single runs near the boundary, so every failure and every bisection step is
decided by a majority of up to `reps` runs, stopping as soon as the majority is certain;
a clear pass while doubling takes one run.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Probe = Callable[[int], dict[str, Any]]  # runs N viewers once: a report with "ok"


@dataclass
class SearchResult:
    max_viewers: int
    at_max: list[dict[str, Any]] = field(default_factory=list)  # the reports at the answer
    steps: list[dict[str, Any]] = field(default_factory=list)


def _majority(
    probe: Probe, n: int, reps: int, result: SearchResult, first: dict[str, Any] | None = None
) -> tuple[bool, list[dict[str, Any]]]:
    """Whether most of up to `reps` runs at `n` pass (counting `first`, already run)."""
    reports = [] if first is None else [first]
    need = reps // 2 + 1
    while True:
        passed = sum(1 for r in reports if r["ok"])
        if passed >= need or len(reports) - passed >= need:
            return passed >= need, reports
        report = probe(n)
        reports.append(report)
        result.steps.append({"viewers": n, **_brief(report)})


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "ok", "crashed", "min_fps", "p99_lag_ms", "max_first_frame_ms", "mb_per_s", "errors",
        "first_error", "client_cpu",
    )  # fmt: skip
    return {k: report[k] for k in keys if k in report}


def max_viewers(probe: Probe, limit: int, reps: int) -> SearchResult:
    result = SearchResult(0)
    lo, hi = 0, limit + 1  # lo passes (0 trivially), hi fails
    n = 1
    while n <= limit:
        report = probe(n)
        result.steps.append({"viewers": n, **_brief(report)})
        passed, reports = (True, [report])
        if not report["ok"]:
            passed, reports = _majority(probe, n, reps, result, first=report)
        if not passed:
            hi = n
            break
        lo, result.at_max = n, reports
        result.max_viewers = lo
        n *= 2
    while hi - lo > max(1, lo // 8):
        mid = (lo + hi) // 2
        passed, reports = _majority(probe, mid, reps, result)
        if passed:
            lo, result.at_max = mid, reports
            result.max_viewers = lo
        else:
            hi = mid
    return result
