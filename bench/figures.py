"""Figures: one measured value next to the baseline's, the ratio, and the target it serves.

Absolute numbers on a shared two-core machine drift from run to run; the ratio of two
figures measured in the same run, interleaved, does much less, so targets are on ratios.
"""

import json
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Better = Literal["higher", "lower"]


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(present) if present else None


@dataclass
class Figure:
    section: str
    name: str
    unit: str
    value: float | None
    baseline: float | None
    better: Better = "higher"
    baseline_label: str = "seed"
    min_ratio: float | None = None
    min_value: float | None = None
    runs: Sequence[float | None] = ()
    baseline_runs: Sequence[float | None] = ()
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def target(self) -> str | None:
        if self.min_ratio is not None:
            return f"ratio >= {self.min_ratio:g}"
        return None if self.min_value is None else f"value >= {self.min_value:g}"

    @property
    def met(self) -> bool | None:
        if self.min_ratio is not None:
            if self.value is None or self.baseline == 0:
                # Anything beats a baseline that managed nothing at all.
                return bool(self.value)
            return None if self.ratio is None else self.ratio >= self.min_ratio
        if self.min_value is not None:
            return self.value is not None and self.value >= self.min_value
        return None

    def to_json(self, run_at: str) -> dict[str, Any]:
        derived = {"ratio": self.ratio, "target": self.target, "met": self.met}
        return asdict(self) | derived | {"run_at": run_at}


def compare(
    section: str,
    name: str,
    unit: str,
    ours: Sequence[float | None],
    seed: Sequence[float | None],
    **kwargs: Any,
) -> Figure:
    """A figure from repeated runs of both sides: the median of each."""
    return Figure(
        section, name, unit, median(ours), median(seed), runs=ours, baseline_runs=seed, **kwargs
    )


def save(
    path: Path, figures: Sequence[Figure], sections: Iterable[str], order: Sequence[str]
) -> list[dict[str, Any]]:
    """Write this run's figures, keeping earlier figures of sections this run did not measure.

    Entries are sorted by section in `order`.

    `--only` runs one section at a time; merging keeps latest.json a full picture, and
    every entry says when it was measured (`run_at`).
    """
    rerun = set(sections)
    kept: list[dict[str, Any]] = []
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = []
        if isinstance(previous, list):
            kept = [e for e in previous if isinstance(e, dict) and e.get("section") not in rerun]
    run_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    entries = kept + [f.to_json(run_at) for f in figures]
    rank = {name: i for i, name in enumerate(order)}
    entries.sort(key=lambda e: rank.get(e["section"], len(rank)))  # stable: keeps row order
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=2) + "\n")
    return entries


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(entries: Sequence[dict[str, Any]]) -> str:
    """A plain-text table: one row per figure, ours next to the baseline."""
    header = ("figure", "unit", "ours", "baseline", "ratio", "target", "met")
    rows = [header]
    for e in entries:
        met = {True: "yes", False: "NO", None: ""}[e["met"]]
        label = e["baseline_label"]
        baseline = number(e["baseline"]) + (
            "" if label == "seed" or e["baseline"] is None else f" ({label})"
        )
        ratio = "-" if e["ratio"] is None else f"{e['ratio']:.2f}x"
        rows.append(
            (e["name"], e["unit"], number(e["value"]), baseline, ratio, e["target"] or "", met)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i < 2 or i >= 5 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  {e['name']}: {e['note']}" for e in entries if e.get("note")]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def paired(
    values: Sequence[float], baselines: Sequence[float]
) -> tuple[float | None, float | None, list[float]]:
    """Of runs measured in pairs (the same repeat, back to back), the pair with the median
    ratio (the lower middle one for an even count), and every pair's ratio: the figure is
    then a ratio actually measured, and a burst of load from elsewhere on the machine lands
    inside one pair rather than on one side of the ratio of two medians."""
    pairs = sorted((v / b, v, b) for v, b in zip(values, baselines, strict=True) if b > 0)
    if not pairs:
        return None, None, []
    _, value, baseline = pairs[(len(pairs) - 1) // 2]
    return value, baseline, [ratio for ratio, _, _ in pairs]
