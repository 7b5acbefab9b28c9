"""The chart (latest.png), drawn with OpenCV and NumPy, which the venv already has.

One row per figure: how many times better than the baseline ours is, on a log scale so that
0.5x and 2x look equally far from 1x. Green met its target, red missed it, blue and orange
have no target (better or worse than the baseline); the black tick is the target.
"""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.figures import number

WIDTH = 1500
ROW = 24
LABEL_W = 500
BAR_W = 560
LOW, HIGH = 1 / 16, 256  # axis range of the advantage
FONT = cv2.FONT_HERSHEY_SIMPLEX
BLACK, GREY, LIGHT = (20, 20, 20), (120, 120, 120), (225, 225, 225)
GREEN, RED, BLUE, ORANGE = (60, 160, 60), (50, 50, 210), (190, 120, 40), (40, 140, 230)


def _advantage(entry: dict[str, Any]) -> float | None:
    ratio = entry.get("ratio")
    if not ratio:
        return None
    return float(ratio) if entry.get("better", "higher") == "higher" else 1 / float(ratio)


def _x(adv: float) -> int:
    clamped = min(max(adv, LOW), HIGH)
    share = (math.log2(clamped) - math.log2(LOW)) / (math.log2(HIGH) - math.log2(LOW))
    return LABEL_W + round(share * BAR_W)


def _text(
    img: np.ndarray[Any, Any],
    text: str,
    x: int,
    y: int,
    colour: tuple[int, int, int] = BLACK,
    scale: float = 0.45,
) -> None:
    cv2.putText(img, text, (x, y), FONT, scale, colour, 1, cv2.LINE_AA)


def draw(entries: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    sections: list[str] = []
    for e in entries:
        if e["section"] not in sections:
            sections.append(e["section"])
    rows = len(entries) + len(sections)
    top = 70
    height = top + rows * ROW + 30
    img = np.full((height, WIDTH, 3), 255, np.uint8)
    _text(img, title, 12, 28, scale=0.65)
    _text(img, "times better than the seed-style baseline (log scale); tick = target", 12, 52, GREY)
    for tick in (1 / 16, 1 / 4, 1, 4, 16, 64, 256):
        x = _x(tick)
        cv2.line(img, (x, top - 8), (x, height - 24), LIGHT if tick != 1 else GREY, 1)
        label = f"{tick:g}x" if tick >= 1 else f"1/{round(1 / tick)}x"
        _text(img, label, x - 12, height - 8, GREY, 0.4)
    y = top
    for section in sections:
        _text(img, section, 12, y + 16, BLACK, 0.5)
        y += ROW
        for e in (e for e in entries if e["section"] == section):
            _text(img, e["name"], 24, y + 16, BLACK, 0.42)
            adv = _advantage(e)
            if adv is not None:
                met = e.get("met")
                colour = GREEN if met else RED if met is False else BLUE if adv >= 1 else ORANGE
                x0, x1 = sorted((_x(1), _x(adv)))
                cv2.rectangle(img, (x0, y + 5), (max(x1, x0 + 1), y + ROW - 5), colour, -1)
            if e.get("min_ratio") is not None:
                tx = _x(e["min_ratio"] if e["better"] == "higher" else 1 / e["min_ratio"])
                cv2.line(img, (tx, y + 2), (tx, y + ROW - 2), BLACK, 2)
            value = f"{number(e['value'])} {e['unit']}"
            if e.get("baseline") is not None:
                value += f" vs {number(e['baseline'])} ({e.get('baseline_label', 'seed')})"
            if adv is not None:
                value += f"  {adv:.2f}x"
            if e.get("met") is not None:
                value += "  met" if e["met"] else "  MISSED"
            _text(img, value, LABEL_W + BAR_W + 16, y + 16, BLACK, 0.42)
            y += ROW
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
