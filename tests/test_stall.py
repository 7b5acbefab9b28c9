"""The viewer's stall detector (client/stall.py): a few frame intervals, within bounds."""

import pytest

from client.stall import FIRST_FRAME_SECONDS, MAX_SECONDS, MIN_SECONDS, STALL_FRAMES, StallDetector


def fed(*frames: tuple[int, float]) -> StallDetector:
    detector = StallDetector()
    for index, timestamp in frames:
        detector.frame(index, timestamp)
    return detector


def test_the_first_frame_of_a_stream_may_take_a_decoders_start() -> None:
    assert StallDetector().limit == FIRST_FRAME_SECONDS
    assert StallDetector().answer_limit == FIRST_FRAME_SECONDS
    assert fed((0, 0.0)).limit == FIRST_FRAME_SECONDS


@pytest.mark.parametrize(
    ("fps", "limit"),
    [
        (30.0, MIN_SECONDS),  # 5 intervals are 0.17 s: a busy server may hold that back
        (2.0, STALL_FRAMES / 2.0),  # 2.5 s
        (0.1, MAX_SECONDS),  # 50 s would leave a frozen picture far too long
    ],
)
def test_the_limit_is_a_few_frame_intervals_within_bounds(fps: float, limit: float) -> None:
    assert fed((0, 0.0), (1, 1 / fps)).limit == pytest.approx(limit)


def test_skipped_frames_do_not_change_the_rate() -> None:
    # Frame 10 follows frame 1 (the viewer fell behind): still 2 fps, not 0.2.
    assert fed((0, 0.0), (1, 0.5), (10, 5.0)).interval == pytest.approx(0.5)


def test_a_resumed_stream_waits_for_its_first_frame_then_keeps_the_known_rate() -> None:
    detector = fed((0, 0.0), (1, 0.5))
    detector.restart()
    assert detector.limit == FIRST_FRAME_SECONDS
    # Its headers come before the server opens the match: no decoder's start to wait for.
    assert detector.answer_limit == pytest.approx(STALL_FRAMES * 0.5)
    detector.frame(7, 3.5)
    assert detector.limit == pytest.approx(STALL_FRAMES * 0.5)


def test_frames_out_of_order_or_at_one_instant_leave_the_rate_alone() -> None:
    assert fed((0, 0.0), (1, 0.5), (1, 0.5), (0, 0.0)).interval == pytest.approx(0.5)
