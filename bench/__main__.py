"""`python -m bench` (`make bench`): every section, a table, latest.json and latest.png.

    python -m bench [--only unary,list,fanout,throughput,startup] [--quick] [--reps N]

Never part of the tests: it takes minutes, needs two CPUs to mean much, and its absolute
numbers depend on the machine. Read the ratios, which compare against the seed-style
servers (bench/seed_servers.py) measured in the same run.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.figures import Figure, save, table
from bench.settings import ROOT, Settings
from bench.workspace import Workspace

Section = Callable[[Settings, Workspace], list[Figure]]
SECTIONS = ("unary", "list", "fanout", "throughput", "startup")
RESULTS = ROOT / "bench" / "results"


def _section(name: str) -> Section:
    # Imported on demand so that `--only unary` never loads OpenCV.
    if name == "unary":
        from bench import unary

        return unary.run
    if name == "list":
        from bench import list_stream

        return list_stream.run
    if name == "fanout":
        from bench import fanout

        return fanout.run
    if name == "throughput":
        from bench import throughput

        return throughput.run
    from bench import startup

    return startup.run


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--quick", action="store_true", help="one repeat, shorter windows")
    parser.add_argument("--reps", type=int, help="repeats per measurement (default 3, quick 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.json/png go")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, inputs)")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    return args


def _preflight() -> str | None:
    try:
        import api.cheese_pb2  # noqa: F401
    except ImportError:
        return "the generated code is missing: run `make proto` first"
    return None


def _git_revision() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    problem = _preflight()
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="grpcdemo-bench-"))
    settings = Settings.create(work, args.quick, args.reps)
    workspace = Workspace(work, args.quick)
    print(f"bench: {settings.pinning}; {settings.reps} repeat(s); temp dir {work}", file=sys.stderr)
    figures: list[Figure] = []
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        for name in args.sections:
            t0 = time.monotonic()
            try:
                section_figures = _section(name)(settings, workspace)
            except Exception as error:  # one broken section must not lose the others
                traceback.print_exc()
                message = (
                    f"section failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"
                )
                section_figures = [Figure(name, f"{name}.failed", "", None, None, note=message)]
            timings[name] = time.monotonic() - t0
            figures += section_figures
            print(
                f"\n{table([f.to_json('') for f in section_figures])}\n",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if args.keep:
            print(f"bench: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - started

    entries = save(args.out / "latest.json", figures, args.sections, SECTIONS)
    this_run = [e for e in entries if e["section"] in args.sections]
    title = f"grpcdemo bench {_git_revision()} {time.strftime('%Y-%m-%d %H:%M')}" + (
        " (quick)" if args.quick else ""
    )
    from bench import chart  # OpenCV, which the venv has; only needed once there are figures

    chart.draw(entries, args.out / "latest.png", title)
    print(table(this_run))
    spent = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings.items())
    print(f"\n{settings.pinning}; {settings.reps} repeat(s); took {total:.0f}s ({spent})")
    print(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.png'}")
    missed = [e["name"] for e in this_run if e["met"] is False]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
