"""Raw throughput: one viewer asking for unpaced raw frames, 720p and 1080p.

What one connection can carry when nothing paces it: decoding, copying megabytes into a
message, TLS and HTTP/2 flow control. The stream is read to the end of the video; frames/s
run from the first frame to the end, MB/s is that times the mean frame size.
"""

from contextlib import ExitStack

from bench.figures import Figure, compare
from bench.servers import ours, rounds, seed
from bench.tools import run_viewers
from bench.workspace import MATCH, MATCH_1080, Workspace

VIDEOS = {"raw720": MATCH, "raw1080": MATCH_1080}


def run(ws: Workspace) -> list[Figure]:
    figures: list[Figure] = []
    with ExitStack() as stack:
        servers = {"ours": stack.enter_context(ours("soccer", ws)),
                   "seed": stack.enter_context(seed("soccer", ws))}  # fmt: skip
        for label, match in VIDEOS.items():
            fps: dict[str, list[float | None]] = {kind: [] for kind in servers}
            mb_per_s: dict[str, list[float | None]] = {kind: [] for kind in servers}
            errors: list[str] = []
            for kind, server in rounds(f"throughput {label}", servers, ws.reps):
                args = ["watch", "-match", match, "-unpaced", "-duration", "120s"]
                report = run_viewers(args, server, ws, timeout=240)
                good = not report["errors"] and report["frames"] >= 2
                fps[kind].append(report["mean_fps"] if good else None)
                frame_mb = report["bytes"] / report["frames"] / 1e6 if good else 0
                mb_per_s[kind].append(report["mean_fps"] * frame_mb if good else None)
                if report["errors"]:
                    errors.append(f"{kind}: {report['first_error'][:160]}")
            figures += [
                compare("throughput", f"throughput.{label}.unpaced.fps", "frames/s",
                        fps["ours"], fps["seed"], note="; ".join(errors)),
                compare("throughput", f"throughput.{label}.unpaced.mb_per_s", "MB/s",
                        mb_per_s["ours"], mb_per_s["seed"]),
            ]  # fmt: skip
    return figures
