"""`python -m bench` (`make bench`): every section, a table, latest.json and latest.png.

    python -m bench [--only unary,list,fanout,throughput,startup,observability,edge] [--quick]
        [--reps N]

Never part of the tests: it takes minutes, needs two CPUs to mean much, and its absolute
numbers depend on the machine. Read the ratios, which compare against the seed-style
servers (bench/seed_servers.py) measured in the same run.
"""

import argparse
import importlib
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from bench.figures import Figure, save, table
from bench.workspace import ROOT, Workspace, log

SECTIONS = {  # name: module with run(Workspace) -> list[Figure]
    "unary": "unary",
    "list": "list_stream",
    "fanout": "fanout",
    "throughput": "throughput",
    "startup": "startup",
    "observability": "observability",
    "edge": "edge",
}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--quick", action="store_true", help="one repeat, shorter windows")
    parser.add_argument("--reps", type=int, help="repeats per measurement (default 3, quick 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                        help="where latest.json/png go")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, inputs)")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    return args


def _run_section(name: str, ws: Workspace) -> list[Figure]:
    try:
        # Imported on demand so that `--only unary` never loads OpenCV.
        figures: list[Figure] = importlib.import_module(f"bench.{SECTIONS[name]}").run(ws)
    except Exception as error:  # one broken section must not lose the others
        traceback.print_exc()
        message = f"section failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"
        figures = [Figure(name, f"{name}.failed", "", None, None, note=message)]
    print(f"\n{table([f.to_json('') for f in figures])}\n", file=sys.stderr, flush=True)
    return figures


def _git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    dirty = "+dirty" if git("status", "--porcelain").strip() else ""
    return git("rev-parse", "--short", "HEAD").strip() + dirty


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        import api.cheese_pb2  # noqa: F401
    except ImportError:
        print("bench: the generated code is missing: run `make proto` first", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="grpcdemo-bench-"))
    ws = Workspace(work, args.quick, args.reps)
    log(f"{ws.pinning}; {ws.reps} repeat(s); temp dir {work}")
    figures: list[Figure] = []
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        for name in args.sections:
            t0 = time.monotonic()
            figures += _run_section(name, ws)
            timings[name] = time.monotonic() - t0
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - started

    entries = save(args.out / "latest.json", figures, args.sections, list(SECTIONS))
    this_run = [e for e in entries if e["section"] in args.sections]
    title = f"grpcdemo bench {_git_revision()} {time.strftime('%Y-%m-%d %H:%M')}" + (
        " (quick)" if args.quick else ""
    )
    from bench import chart  # OpenCV, which the venv has; only needed once there are figures

    chart.draw(entries, args.out / "latest.png", title)
    print(table(this_run))
    spent = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings.items())
    print(f"\n{ws.pinning}; {ws.reps} repeat(s); took {total:.0f}s ({spent})")
    print(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.png'}")
    missed = [e["name"] for e in this_run if e["met"] is False]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
