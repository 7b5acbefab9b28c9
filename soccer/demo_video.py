"""A synthetic soccer match, drawn frame by frame.

The soccer service needs footage to stream, and tests need small clips on demand; drawing one
avoids shipping or licensing real match video, and a seed makes every clip reproducible.
"""

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float64]
Colour = tuple[int, int, int]

LENGTH, WIDTH = 105.0, 68.0  # metres, so the markings can use their real dimensions
AA = cv2.LINE_AA
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (235, 235, 235)
KIT = [(40, 40, 210), (210, 130, 30)]  # BGR: home red, away blue
KEEPER_KIT = [(20, 200, 230), (40, 40, 40)]
COLOURS = [KEEPER_KIT[0]] + [KIT[0]] * 10 + [KEEPER_KIT[1]] + [KIT[1]] * 10
# 4-4-2 from the home side (home attacks to the right); the away side is mirrored.
FORMATION = [(4, 34)] + [(x, y) for x in (22, 40) for y in (10, 26, 42, 58)] + [(56, 24), (56, 44)]
GOAL = 22  # pseudo-player index: the ball's resting place inside the away net


class _Geometry:
    """Metres to pixels, so that every size keeps the pitch's proportions."""

    def __init__(self, width: int, height: int) -> None:
        self.s = min(0.94 * width / (LENGTH + 4), 0.84 * height / WIDTH)
        self.ox = (width - LENGTH * self.s) / 2
        self.oy = (height - WIDTH * self.s) / 2 + 0.04 * height  # leave room for the scoreboard

    def pt(self, x: float, y: float) -> tuple[int, int]:
        return round(self.ox + x * self.s), round(self.oy + y * self.s)

    def r(self, metres: float) -> int:
        return max(1, round(metres * self.s))


def _pitch(width: int, height: int, g: _Geometry) -> Frame:
    """Everything static, drawn once: each frame then starts as a cheap copy of it."""
    img = np.full((height, width, 3), (36, 112, 36), np.uint8)
    stripe = ((np.arange(width) - g.ox) // (g.s * LENGTH / 12)).astype(np.int64) % 2 == 1
    img[:, stripe] = (44, 128, 44)
    t = g.r(0.14)
    cv2.rectangle(img, g.pt(0, 0), g.pt(LENGTH, WIDTH), WHITE, t, AA)
    cv2.line(img, g.pt(LENGTH / 2, 0), g.pt(LENGTH / 2, WIDTH), WHITE, t, AA)
    cv2.circle(img, g.pt(LENGTH / 2, WIDTH / 2), g.r(9.15), WHITE, t, AA)
    cv2.circle(img, g.pt(LENGTH / 2, WIDTH / 2), g.r(0.3), WHITE, -1, AA)
    for side in (1, -1):
        x0 = 0.0 if side == 1 else LENGTH
        cy = WIDTH / 2
        for depth, half in ((16.5, 20.16), (5.5, 9.16)):
            x1 = x0 + side * depth
            cv2.rectangle(img, g.pt(x0, cy - half), g.pt(x1, cy + half), WHITE, t, AA)
        cv2.circle(img, g.pt(x0 + side * 11, cy), g.r(0.3), WHITE, -1, AA)
        arc = math.degrees(math.acos(5.5 / 9.15))  # the part of the D outside the box
        start = -arc if side == 1 else 180 - arc
        r = g.r(9.15)
        cv2.ellipse(img, g.pt(x0 + side * 11, cy), (r, r), 0, start, start + 2 * arc, WHITE, t, AA)
        net = (g.pt(x0, cy - 3.66), g.pt(x0 - side * 2, cy + 3.66))
        cv2.rectangle(img, net[0], net[1], (190, 190, 190), -1)
        cv2.rectangle(img, net[0], net[1], WHITE, t, AA)
    return img


def _players(times: Floats, rng: np.random.Generator) -> Floats:
    """Positions (frame, player, xy) in metres: formation + a shared team shift + own drift.

    Sums of sines keep the motion smooth and deterministic without simulating anything.
    """
    home = np.array(FORMATION, np.float64)
    base = np.concatenate([home, np.column_stack([LENGTH - home[:, 0], WIDTH - home[:, 1]])])
    keeper = np.isin(np.arange(22), (0, 11))[:, None]
    amp = rng.uniform(2, 6, (22, 2)) * np.where(keeper, 0.3, 1.0)
    freq = rng.uniform(0.05, 0.25, (22, 2))
    phase = rng.uniform(0, 2 * np.pi, (22, 2))
    t = times[:, None, None]
    shift = 12 * np.sin(2 * np.pi * times / 9 + rng.uniform(0, 2 * np.pi))
    pos = base + amp * np.sin(2 * np.pi * freq * t + phase)
    pos[..., 0] += shift[:, None] * np.where(keeper[:, 0], 0.15, 1.0)
    pos = np.clip(pos, (1, 1), (LENGTH - 1, WIDTH - 1))
    goal = np.broadcast_to([LENGTH + 1, WIDTH / 2 + 1], (len(times), 1, 2))
    return np.concatenate([pos, goal], axis=1)


def _passes(seconds: float, rng: np.random.Generator) -> tuple[list[tuple[float, int]], float]:
    """(arrival time, receiver) keyframes, with one scripted home goal in longer clips."""
    keys, t, owner = [(0.0, 10)], 0.0, 10
    goal_at = 0.55 * seconds if seconds >= 4 else math.inf
    while t < seconds + 2:
        t += float(rng.uniform(0.8, 1.6))
        if t >= goal_at:  # a forward receives, shoots, the away keeper restarts play
            keys += [(goal_at, 9), (goal_at + 0.9, GOAL), (goal_at + 2.4, 11)]
            t, owner, goal_at = goal_at + 2.4, 11, math.inf
            continue
        team = owner // 11 if rng.random() < 0.7 else 1 - owner // 11  # mostly keep possession
        owner = team * 11 + int(rng.integers(1, 11))
        keys.append((t, owner))
    return keys, next((k for k, o in keys if o == GOAL), math.inf)


def _ball(times: Floats, pos: Floats, keys: list[tuple[float, int]]) -> tuple[Floats, Floats]:
    """Ground position and height: held at the receiver's feet, then flighted to the next."""
    ground, height = np.zeros((len(times), 2)), np.zeros(len(times))
    feet = np.array([0.9] * 11 + [-0.9] * 11 + [0.0])
    for i, t in enumerate(times):
        k = max(0, min(len(keys) - 2, np.searchsorted([kt for kt, _ in keys], t, "right") - 1))
        (t0, a), (t1, b) = keys[k], keys[k + 1]
        depart = t0 + 0.35 * (t1 - t0)
        u = min(1.0, max(0.0, (t - depart) / (t1 - depart)))
        u = u * u * (3 - 2 * u)  # ease in and out, so the ball leaves and arrives gently
        p0, p1 = pos[i, a] + (feet[a], 0), pos[i, b] + (feet[b], 0)
        ground[i] = p0 + u * (p1 - p0)
        height[i] = math.sin(math.pi * u) * min(float(np.hypot(*(p1 - p0))), 30.0) * 0.12
    return ground, height


def generate(
    path: Path,
    *,
    seconds: float = 10.0,
    fps: int = 30,
    width: int = 1280,
    height: int = 720,
    seed: int = 0,
) -> Path:
    """Write the clip to `path` atomically, so readers never see a half-encoded file."""
    if seconds <= 0 or fps <= 0 or width < 64 or height < 64 or width % 2 or height % 2:
        raise ValueError("need seconds > 0, fps > 0 and even width/height >= 64")
    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * fps))
    times = np.arange(n) / fps
    g = _Geometry(width, height)
    pitch = _pitch(width, height, g)
    pos = _players(times, rng)
    keys, goal_time = _passes(seconds, rng)
    ball, lift = _ball(times, pos, keys)
    px = np.rint(pos * g.s + (g.ox, g.oy)).astype(np.int32)
    score0, clock0 = rng.integers(0, 3, 2), int(rng.integers(5 * 60, 80 * 60))
    fs, pr = height / 720, g.r(1.0)
    bold = max(1, round(2 * fs))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(".mp4", f".{path.stem}-", path.parent)  # same fs: atomic rename
    os.close(fd)
    tmp = Path(name)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    try:
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write mp4v video to {tmp}")
        for i, t in enumerate(times):
            frame = pitch.copy()
            for j in range(22):
                c = (int(px[i, j, 0]), int(px[i, j, 1]))
                cv2.circle(frame, c, pr, COLOURS[j], -1, AA)
                cv2.circle(frame, c, pr, (20, 20, 20), max(1, pr // 8), AA)
                _text(frame, str(j % 11 + 1), c, 0.4 * fs)
            bx, by = g.pt(*ball[i])
            cv2.circle(frame, (bx, by), g.r(0.45), (20, 60, 20), -1, AA)  # shadow on the grass
            cv2.circle(frame, (bx, by - g.r(lift[i] + 0.05)), g.r(0.45), (250, 250, 250), -1, AA)
            clock = clock0 + int(t)
            home = int(score0[0]) + (t >= goal_time)
            board = f"{clock // 60:02d}:{clock % 60:02d}  HOME {home}-{score0[1]} AWAY"
            frame[: round(42 * fs), : round(300 * fs)] //= 3  # darken behind the scoreboard
            _text(frame, board, (round(150 * fs), round(21 * fs)), 0.7 * fs, thick=bold)
            if goal_time <= t < goal_time + 1.5:
                org = (width // 2, round(45 * fs))
                _text(frame, "GOAL!", org, 1.6 * fs, (0, 220, 255), 2 * bold)
            org = (width - round(90 * fs), height - round(16 * fs))
            _text(frame, f"frame {i + 1}/{n}", org, 0.45 * fs)
            writer.write(frame)
        writer.release()
        tmp.chmod(0o644)  # mkstemp's 0600 would keep a non-root container from reading the clip
        return tmp.replace(path)
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise


def _text(
    img: Frame,
    text: str,
    org: tuple[int, int],
    scale: float,
    colour: Colour = WHITE,
    thick: int = 1,
) -> None:
    """Centre the text on `org`: OpenCV would anchor it at its bottom-left corner."""
    (w, h), _ = cv2.getTextSize(text, FONT, scale, thick)
    cv2.putText(img, text, (org[0] - w // 2, org[1] + h // 2), FONT, scale, colour, thick, AA)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate a synthetic soccer match video.")
    parser.add_argument("--out", type=Path, default=Path("videos/demo.mp4"))
    defaults = {"seconds": 10.0, "fps": 30, "width": 1280, "height": 720, "seed": 0}
    for name, default in defaults.items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = generate(args.out, **{name: getattr(args, name) for name in defaults})
    took = time.perf_counter() - started
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB in {took:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
