"""Soccer's own metrics (names in grpckit/telemetry/metrics.py): viewers, hubs, decoders,
frames sent and skipped, encode time.

Frames are counted with plain integers that Prometheus's scrape reads (observable counters):
a frame goes to every viewer 30 times a second, hundreds of viewers at once, and an SDK
counter's `add` per frame would cost more than the bound of issue 13 allows.

This module observes the rest of soccer and is imported by none of it but the server: it
reads each server's hubs when Prometheus scrapes, and the video reader tells the observer
this module registers (soccer.video.observe_encodes) how long each encode took.
"""

import weakref
from collections.abc import Iterable
from typing import Final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from api import soccer_pb2
from soccer import video
from soccer.hub import Hubs


class Tally:
    """Frames sent and skipped, for one encoding, since the process started."""

    __slots__ = ("sent", "skipped")

    def __init__(self) -> None:
        self.sent = 0
        self.skipped = 0


ENCODINGS: Final = {value: name for name, value in soccer_pb2.Encoding.items()}
TALLIES: Final = {value: Tally() for value in ENCODINGS}
LABELS: Final = {value: {"encoding": name} for value, name in ENCODINGS.items()}

# Every server's hubs in this process (tests run several); gone with their server.
_hubs: weakref.WeakSet[Hubs] = weakref.WeakSet()


def watch(hubs: Hubs) -> None:
    _hubs.add(hubs)


def _sent(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(TALLIES[e].sent, LABELS[e]) for e in ENCODINGS]


def _skipped(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(TALLIES[e].skipped, LABELS[e]) for e in ENCODINGS]


def _hub_count(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(sum(len(hubs.live()) for hubs in list(_hubs)))]


def _decoders(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(sum(hubs.decoders.total.in_use for hubs in list(_hubs)))]


_meter = metrics.get_meter("soccer")

viewers = _meter.create_up_down_counter(
    "soccer.viewers", description="streams watching a match now, real-time and unpaced"
)
encode_duration = _meter.create_histogram(
    "soccer.encode.duration",
    unit="s",
    description="time to encode one frame (JPEG, or the raw copy)",
)


def _encoded(encoding: video.Encoding, seconds: float) -> None:
    encode_duration.record(seconds, LABELS[encoding])


video.observe_encodes(_encoded)
_meter.create_observable_counter(
    "soccer.frames.sent", [_sent], description="frames written to viewers"
)
_meter.create_observable_counter(
    "soccer.frames.skipped",
    [_skipped],
    description="frames real-time viewers skipped because they fell behind",
)
_meter.create_observable_gauge(
    "soccer.hubs", [_hub_count], description="broadcast hubs decoding a match now"
)
_meter.create_observable_gauge(
    "soccer.decoders",
    [_decoders],
    description="decoders in use: hubs plus unpaced viewers (SOCCER_MAX_DECODERS bounds it)",
)
