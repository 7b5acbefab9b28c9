"""Raw throughput: one viewer asking for unpaced raw frames, 720p and 1080p.

What one connection can carry when nothing paces it: decoding, copying megabytes into a
message, TLS and HTTP/2 flow control. The stream is read to the end of the video.
"""

from contextlib import ExitStack

from bench import streams, tools
from bench.figures import Figure, compare
from bench.processes import ours, rounds, seed
from bench.settings import Settings
from bench.streams import Report
from bench.workspace import MATCH, MATCH_1080, Workspace

VIDEOS = {"raw720": MATCH, "raw1080": MATCH_1080}


def _rates(report: Report) -> tuple[float | None, float | None]:
    viewer = report["per_viewer"][0]
    if viewer["end"] == "error" or viewer["frames"] < 2:
        return None, None
    fps = float(viewer["fps"])
    return fps, fps * viewer["bytes"] / viewer["frames"] / 1e6


def run(settings: Settings, workspace: Workspace) -> list[Figure]:
    binary = tools.viewers()
    figures: list[Figure] = []
    with ExitStack() as stack:
        servers = {
            "ours": stack.enter_context(ours("soccer", settings, workspace)),
            "seed": stack.enter_context(seed("soccer", settings, workspace)),
        }
        for label, match in VIDEOS.items():
            rates: dict[str, list[tuple[float | None, float | None]]] = {k: [] for k in servers}
            errors: list[str] = []
            for kind, server in rounds(f"throughput {label}", servers, settings.reps):
                report = streams.watch(
                    binary, server, settings, workspace,
                    match=match, viewers=1, window=120, unpaced=True, per_viewer=True,
                )  # fmt: skip
                rates[kind].append(_rates(report))
                if report["errors"]:
                    errors.append(f"{kind}: {report['first_error'][:160]}")
            note = "; ".join(errors)
            figures += [
                compare(
                    "throughput",
                    f"throughput.{label}.unpaced.fps",
                    "frames/s",
                    [f for f, _ in rates["ours"]],
                    [f for f, _ in rates["seed"]],
                    note=note,
                ),
                compare(
                    "throughput",
                    f"throughput.{label}.unpaced.mb_per_s",
                    "MB/s",
                    [m for _, m in rates["ours"]],
                    [m for _, m in rates["seed"]],
                ),
            ]
    return figures
