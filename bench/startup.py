"""Start-up and images: `docker compose up -d --wait` until all three are healthy, and sizes.

Uses the images already built (it never builds: that would time the build) and its own
compose project name and free ports, so a stack started with `docker compose up` is left
alone. The pki and demo-video one-shots create a missing PKI or demo match on the first run.
The seed had no images, so these figures have no baseline; the check that matters is that
the cheese and movie runtime images carry neither OpenCV nor NumPy.
"""

import os
import subprocess
import time

from bench.figures import Figure, median
from bench.workspace import ROOT, Workspace, free_port, log

PROJECT = "grpcdemo-bench"
SERVICES = ("cheese", "movie", "soccer")
IMAGES = (*SERVICES, "client")
NO_VIDEO_LIBS = ("cheese", "movie")
UP_TIMEOUT = 240


def _docker(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def _skipped(reason: str) -> list[Figure]:
    log(f"startup skipped: {reason}")
    return [
        Figure(
            "startup",
            "startup.compose_up_wait",
            "s",
            None,
            None,
            better="lower",
            note=f"skipped: {reason}",
        )
    ]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    for service in SERVICES:
        env[f"{service.upper()}_PORT"] = str(free_port())
    return env


def _image_size_mb(name: str) -> float | None:
    done = _docker("image", "inspect", "--format", "{{.Size}}", f"grpcdemo-{name}:latest")
    return int(done.stdout.strip()) / 1e6 if done.returncode == 0 else None


def _imports(image: str, module: str) -> bool:
    done = _docker(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        f"grpcdemo-{image}:latest",
        "-c",
        f"import {module}",
    )
    return done.returncode == 0


def _up_once(env: dict[str, str]) -> tuple[float | None, str]:
    compose = ["compose", "-p", PROJECT]
    _docker(*compose, "down", "-v", "--remove-orphans", env=env)
    start = time.monotonic()
    up = _docker(
        *compose,
        "up",
        "-d",
        "--wait",
        "--wait-timeout",
        str(UP_TIMEOUT),
        env=env,
        timeout=UP_TIMEOUT + 60,
    )
    seconds = time.monotonic() - start
    problem = ""
    if up.returncode != 0:
        ps = _docker(*compose, "ps", "-a", env=env)
        problem = (
            f"up failed ({up.returncode}): {up.stderr.strip()[-300:]} | {ps.stdout.strip()[-300:]}"
        )
    down = _docker(*compose, "down", "-v", "--remove-orphans", env=env)
    if down.returncode != 0:
        problem += f" | down failed: {down.stderr.strip()[-200:]}"
    return (seconds if up.returncode == 0 else None), problem


def run(ws: Workspace) -> list[Figure]:
    try:
        info = _docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        return _skipped(f"no Docker engine ({error})")
    if info.returncode != 0:
        return _skipped(f"no Docker engine: {info.stderr.strip()[:200]}")
    missing = [name for name in IMAGES if _image_size_mb(name) is None and name != "client"]
    if missing:
        return _skipped(f"images not built ({', '.join(missing)}): run `make images` first")

    env = _environment()
    runs: list[float | None] = []
    problems: list[str] = []
    for rep in range(ws.reps):
        log(f"startup compose up --wait ({rep + 1}/{ws.reps})")
        seconds, problem = _up_once(env)
        runs.append(seconds)
        if problem:
            problems.append(problem)
    figures = [
        Figure(
            "startup",
            "startup.compose_up_wait",
            "s",
            median(runs),
            None,
            better="lower",
            runs=runs,
            note="; ".join(problems)
            or "no seed images to compare (images prebuilt; healthcheck interval 5 s)",
        )
    ]
    for name in IMAGES:
        figures.append(
            Figure(
                "startup",
                f"startup.image.{name}.size",
                "MB",
                _image_size_mb(name),
                None,
                better="lower",
            )
        )
    for name in NO_VIDEO_LIBS:
        present = [module for module in ("cv2", "numpy") if _imports(name, module)]
        figures.append(
            Figure(
                "startup",
                f"startup.image.{name}.no_opencv_numpy",
                "bool",
                0.0 if present else 1.0,
                None,
                min_value=1,
                note=f"imports {', '.join(present)}" if present else "",
            )
        )
    return figures
