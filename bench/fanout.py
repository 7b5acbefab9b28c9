"""Soccer fan-out: how many viewers of one match a server on one CPU keeps watchable.

Watchable means every viewer averages >= 29 fps, the 99th percentile of frame lag stays
under 200 ms, and every viewer gets its first frame within half the window, so that a viewer
queued behind the others (the seed's 11th waits for a whole window) does not pass by being
served later, while many viewers joining at once still may take a moment. The lag of frame
i is (recv_i - recv_0) - (timestamp_i - timestamp_0): how far behind the video's own clock
it arrives (bench/viewers/watch.go). Ours paces frames in real time (the default Match);
the seed ignores pacing and sends as fast as it decodes, so only the fps criterion limits
it, and it never serves more than its 10 threads at once.

Each viewer watches a budget of `window` seconds of frames. Ours and the floor are asked for
exactly that many (Match.max_frames) and end each stream themselves, and the viewer waits
for that end; the seed ignores max_frames, so its viewers cancel once they have them. A
server that crashes fails that step, is reported in the figure's note and is restarted.

The answer is found by doubling the viewers until a step fails, then bisecting to a
resolution of about 1/8 of the answer (exact below 8): each step costs a whole window, and
knowing 120 from 128 is not worth a minute. Noise flips single runs near the boundary, so
every failure and every bisection step is decided by a majority of up to `reps` runs,
stopping as soon as the majority is certain; a clear pass while doubling takes one run.

For JPEG the floor is searched too: grpcio alone broadcasting the same prebuilt frames
(bench/floor_servers.py), which no design of ours on grpcio can pass by much.
"""

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from bench.figures import Figure, median
from bench.servers import Server, ServerFailedError, floor, ours, seed
from bench.tools import run_viewers
from bench.workspace import MATCH, Workspace, log

LIMIT = 1024
TARGETS = {"raw": 1.5, "jpeg": 50.0}
FPS = 30  # the demo video's
MIN_FPS = 29.0
MAX_LAG_MS = 200.0
SETTLE_SECONDS = 1.0  # ended streams wind down before the next step starts
SUMMARY = ("min_fps", "mean_fps", "p99_lag_ms", "mb_per_s", "client_cpu", "max_first_frame_ms")

Report = dict[str, Any]


def run(ws: Workspace) -> list[Figure]:
    figures: list[Figure] = []
    with ExitStack() as stack:
        subjects = {kind: Subject(kind, ws, stack) for kind in ("seed", "ours")}
        for encoding, target in TARGETS.items():
            results = {kind: subject.search(encoding) for kind, subject in subjects.items()}
            notes = [subject.crash_note() for subject in subjects.values()]
            if results["ours"].max_viewers == LIMIT:
                notes.append(f"ours reached the search limit ({LIMIT})")
            figures.append(Figure(
                "fanout", f"fanout.{encoding}.max_viewers", "viewers",
                results["ours"].max_viewers, results["seed"].max_viewers, min_ratio=target,
                note="; ".join(n for n in notes if n),
                detail={kind: result.summary() for kind, result in results.items()},
            ))  # fmt: skip
            if encoding == "jpeg":
                result = Subject("floor", ws, stack).search(encoding)
                figures.append(Figure(
                    "fanout", "fanout.jpeg.floor_max_viewers", "viewers", result.max_viewers,
                    results["seed"].max_viewers,
                    note=f"grpcio alone; the {target:g}x target needs {target:g}x the seed",
                    detail={"floor": result.summary()},
                ))  # fmt: skip
                figures.append(Figure(
                    "fanout", "fanout.jpeg.vs_floor", "viewers", results["ours"].max_viewers,
                    result.max_viewers, min_ratio=0.9,
                    note="ours against grpcio alone, same run; each search resolves 1/8",
                ))  # fmt: skip
    return figures


@dataclass
class SearchResult:
    max_viewers: int = 0
    at_max: list[Report] = field(default_factory=list)  # the reports at the answer
    steps: list[Report] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        at_max = {key: median(r[key] for r in self.at_max) for key in SUMMARY}
        return {"max_viewers": self.max_viewers, "at_max": at_max, "steps": self.steps}


def max_viewers(probe: Callable[[int], Report], reps: int) -> SearchResult:
    result = SearchResult()

    def majority(n: int, first: Report | None = None) -> tuple[bool, list[Report]]:
        """Whether most of up to `reps` runs at `n` pass (counting `first`, already run)."""
        reports = [] if first is None else [first]
        need = reps // 2 + 1
        while (passed := sum(r["ok"] for r in reports)) < need and len(reports) - passed < need:
            reports.append(probe(n))
            result.steps.append({"viewers": n, **reports[-1]})
        return passed >= need, reports

    lo, hi = 0, LIMIT + 1  # lo passes (0 trivially), hi fails
    n = 1
    while n <= LIMIT:
        report = probe(n)
        result.steps.append({"viewers": n, **report})
        passed, reports = (True, [report]) if report["ok"] else majority(n, first=report)
        if not passed:
            hi = n
            break
        lo, result.max_viewers, result.at_max = n, n, reports
        n *= 2
    while hi - lo > max(1, lo // 8):
        mid = (lo + hi) // 2
        passed, reports = majority(mid)
        if passed:
            lo, result.max_viewers, result.at_max = mid, mid, reports
        else:
            hi = mid
    return result


class Subject:
    """The server being searched, restarted when it crashes: a crash fails that step only,
    and every crash is kept (viewer count, exit status, where) for the figure's note."""

    def __init__(self, kind: str, ws: Workspace, stack: ExitStack) -> None:
        self.kind, self.ws, self._stack = kind, ws, stack
        self.crashes: list[str] = []
        self._reported = 0
        self.server = self._start()

    def _start(self) -> Server:
        start: dict[str, Callable[[str, Workspace], Server]] = {
            "ours": ours,
            "seed": seed,
            "floor": floor,
        }
        return self._stack.enter_context(start[self.kind]("soccer", self.ws))

    def _crashed(self, viewers: int) -> bool:
        """Whether the server died; if so, note it and start a fresh one."""
        try:
            self.server.check_alive()
        except ServerFailedError as error:
            self.crashes.append(f"{viewers} viewers: {str(error).splitlines()[0]}")
            log(str(error))
            self.server = self._start()
            return True
        return False

    def crash_note(self) -> str:
        """The crashes since the last note."""
        crashes, self._reported = self.crashes[self._reported :], len(self.crashes)
        if not crashes:
            return ""
        return f"{self.kind} CRASHED {len(crashes)}x (step failed, restarted): {crashes[0]}"

    def search(self, encoding: str) -> SearchResult:
        window = 3.0 if self.ws.quick else 6.0
        deadline = window * 1.5 + 2

        def probe(n: int) -> Report:
            args = ["watch", "-match", MATCH, "-viewers", str(n), "-encoding", encoding]
            args += ["-duration", f"{deadline:g}s", "-frames", str(round(window * FPS))]
            args += [] if self.kind == "seed" else ["-drain"]
            # Dialling hundreds of mTLS connections comes before the window and takes a while.
            timeout = deadline + 120 + n * 0.2
            try:
                report = run_viewers(args, self.server, self.ws, timeout)
            except RuntimeError:
                if not self._crashed(n):
                    raise
                report = dict.fromkeys(SUMMARY, 0.0) | {"errors": n, "crashed": True}
            time.sleep(SETTLE_SECONDS)
            if self._crashed(n):
                report["crashed"] = True
            report["ok"] = not report.get("crashed") and (
                report["errors"] == 0
                and report["min_fps"] >= MIN_FPS
                and report["p99_lag_ms"] < MAX_LAG_MS
                and report["max_first_frame_ms"] <= window / 2 * 1000
            )
            first_error = report.get("first_error", "")[:160]
            log(
                f"fanout {encoding} {self.server.label} viewers={n}: "
                f"{'ok' if report['ok'] else 'FAIL'} min_fps={report['min_fps']:.1f} "
                f"p99_lag={report['p99_lag_ms']:.0f}ms first={report['max_first_frame_ms']:.0f}ms "
                f"errors={report['errors']} client_cpu={report['client_cpu']:.2f}"
                + (" CRASHED" if report.get("crashed") else "")
                + (f" first_error={first_error!r}" if first_error else "")
            )
            return report

        return max_viewers(probe, self.ws.reps)
