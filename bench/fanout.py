"""Soccer fan-out: how many viewers of one match a server on one CPU keeps watchable.

Watchable means every viewer averages >= 29 fps and the 99th percentile of frame lag (how
far behind the video's own clock a frame arrives, after the viewer's first frame) stays
under 200 ms; and every viewer gets its first frame within half the window, so that a
viewer queued behind the others (the seed's 11th waits for a whole window) does not pass by
being served later, while many viewers joining at once still may take a moment. Ours paces frames
in real time (the default Match); the seed ignores pacing and sends as fast as it decodes,
so only the fps criterion limits it, and it never serves more than its 10 threads at once.

Each viewer watches a budget of `window` seconds of frames. Ours is asked for exactly that
many (Match.max_frames) and ends each stream itself, and the viewer waits for that end;
the seed ignores max_frames, so its viewers cancel once they have them. Ending ours by
cancelling is what a viewer closing the app does, and it crashed the server when this was
written (SIGSEGV in the access log's context.peer() after a cancel). The frame budget keeps
that bug out of steps the server handles; a step it cannot handle still ends in cancels,
and a crash then fails the step, is reported, and the server is restarted.

For JPEG the floor is searched too: grpcio alone broadcasting the same prebuilt frames
(bench/floor_servers.py), which no design of ours on grpcio can pass by much.
"""

import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import streams, tools
from bench.figures import Figure, median
from bench.processes import Server, ServerFailedError, floor, ours, seed
from bench.search import SearchResult, max_viewers
from bench.settings import Settings
from bench.workspace import MATCH, Workspace

LIMIT = 1024
TARGETS = {"raw": 1.5, "jpeg": 50.0}
FPS = 30  # the demo video's
SETTLE_SECONDS = 1.0  # ended streams wind down before the next step starts
SUMMARY_KEYS = ("min_fps", "mean_fps", "p99_lag_ms", "mb_per_s", "client_cpu", "max_first_frame_ms")


class Subject:
    """The server being searched, restarted when it crashes: a crash fails that step only.

    Every crash is kept (the step's viewer count, the exit status and where it crashed),
    reported in the figure's note and never hidden by the restart.
    """

    def __init__(self, kind: str, settings: Settings, workspace: Workspace, stack: ExitStack):
        self.kind = kind
        self._settings, self._workspace, self._stack = settings, workspace, stack
        self.crashes: list[str] = []
        self.server = self._start()

    def _start(self) -> Server:
        start = {"ours": ours, "seed": seed, "floor": floor}[self.kind]
        return self._stack.enter_context(start("soccer", self._settings, self._workspace))

    def crashed(self, viewers: int) -> bool:
        """Whether the server died; if so, note it and start a fresh one."""
        try:
            self.server.check_alive()
        except ServerFailedError as error:
            self.crashes.append(f"{viewers} viewers: {str(error).splitlines()[0]}")
            print(f"bench: {error}", file=sys.stderr, flush=True)
            self.server = self._start()
            return True
        return False


def _search(
    binary: Path, subject: Subject, encoding: str, settings: Settings, workspace: Workspace
) -> SearchResult:
    window = 3.0 if settings.quick else 6.0
    drain = subject.kind != "seed"  # the seed alone ignores max_frames

    def probe(n: int) -> dict[str, Any]:
        try:
            report = streams.watch(
                binary, subject.server, settings, workspace, match=MATCH, viewers=n,
                encoding=encoding, window=window * 1.5 + 2, frames=round(window * FPS), drain=drain,
                max_first=window / 2,
            )  # fmt: skip
        except RuntimeError:
            if not subject.crashed(n):
                raise
            report = {key: 0.0 for key in SUMMARY_KEYS} | {
                "errors": n,
                "ok": False,
                "crashed": True,
            }
        time.sleep(SETTLE_SECONDS)
        if subject.crashed(n):
            report = report | {"ok": False, "crashed": True}
        print(
            f"bench: fanout {encoding} {subject.server.label} viewers={n}: "
            f"{'ok' if report.get('ok') else 'FAIL'} min_fps={report['min_fps']:.1f} "
            f"p99_lag={report['p99_lag_ms']:.0f}ms first={report['max_first_frame_ms']:.0f}ms "
            f"errors={report['errors']} client_cpu={report['client_cpu']:.2f}"
            + (" CRASHED" if report.get("crashed") else ""),
            file=sys.stderr,
            flush=True,
        )
        return report

    return max_viewers(probe, LIMIT, settings.reps)


def _summary(result: SearchResult) -> dict[str, Any]:
    return {
        "max_viewers": result.max_viewers,
        "at_max": {key: median(r[key] for r in result.at_max) for key in SUMMARY_KEYS},
        "steps": result.steps,
    }


def run(settings: Settings, workspace: Workspace) -> list[Figure]:
    binary = tools.viewers()
    figures: list[Figure] = []
    with ExitStack() as stack:
        subjects = {kind: Subject(kind, settings, workspace, stack) for kind in ("seed", "ours")}
        for encoding, target in TARGETS.items():
            results: dict[str, SearchResult] = {}
            notes: list[str] = []
            for kind, subject in subjects.items():
                before = len(subject.crashes)
                results[kind] = _search(binary, subject, encoding, settings, workspace)
                crashes = subject.crashes[before:]
                if crashes:
                    notes.append(
                        f"{kind} CRASHED {len(crashes)}x (step failed, restarted): {crashes[0]}"
                    )
            if results["ours"].max_viewers == LIMIT:
                notes.append(f"ours reached the search limit ({LIMIT})")
            figures.append(
                Figure(
                    "fanout",
                    f"fanout.{encoding}.max_viewers",
                    "viewers",
                    results["ours"].max_viewers,
                    results["seed"].max_viewers,
                    min_ratio=target,
                    note="; ".join(notes),
                    detail={kind: _summary(result) for kind, result in results.items()},
                )
            )
            if encoding == "jpeg":
                subject = Subject("floor", settings, workspace, stack)
                result = _search(binary, subject, encoding, settings, workspace)
                figures.append(
                    Figure(
                        "fanout",
                        "fanout.jpeg.floor_max_viewers",
                        "viewers",
                        result.max_viewers,
                        results["seed"].max_viewers,
                        note=f"grpcio alone; the {target:g}x target needs {target:g}x the seed",
                        detail={"floor": _summary(result)},
                    )
                )
    return figures
