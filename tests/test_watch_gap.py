"""The watch summary's longest gap: the longest time between two frames' arrivals, which
`make rollout-test` holds to 2 s across a rollout (a resumed stream's gap included)."""

import time

import pytest

from api import soccer_pb2
from client import watch


def test_the_longest_gap_is_the_longest_time_between_two_arrivals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([100.0, 100.0, 100.033, 101.5, 101.533])
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    summary = watch.Summary("demo", "jpeg")  # reads the clock once: its start
    for index in range(4):
        summary.add(soccer_pb2.Video(frame_index=index, timestamp=index / 30, data=b"x"))
    assert summary.longest_gap == pytest.approx(1.467)
    assert summary.record()["longest_gap_s"] == 1.467
