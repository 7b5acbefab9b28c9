"""Metrics: gRPC's own, recorded by grpcio-observability, and the services' own, through the
OpenTelemetry metrics API; both read by Prometheus from the maintenance port
(grpckit/lifecycle/maintenance.py) as `/metrics`.

What Prometheus sees (names fixed: alerts and the status page are written against them):
  grpc_server_call_started_total{grpc_method}
  grpc_server_call_duration_seconds_{bucket,sum,count}{grpc_method,grpc_status}
  grpc_server_call_sent_total_compressed_message_size_bytes_*{grpc_method,grpc_status}
  grpc_server_call_rcvd_total_compressed_message_size_bytes_*{grpc_method,grpc_status}
  grpc_client_attempt_{started_total,duration_seconds_*,...}{grpc_method,grpc_target,...}
  grpckit_refusals_total{reason="budget"|"authz",grpc_method}
  soccer_viewers, soccer_hubs, soccer_decoders, soccer_frames_sent_total,
  soccer_frames_skipped_total, soccer_encode_duration_seconds_* (all {encoding} but hubs and
  decoders), movie_catalogue_movies, movie_catalogue_reloads_total{result},
  cheese_orders_total{type}
  plus target_info (the resource), and the process_* and python_* families of
  prometheus_client.

gRPC's own families (grpc_*) are there unless GRPC_METRICS is off; see `install`.

Instruments are made with the API's global meter provider, so code that records them need
not know whether metrics are on: until `install` sets the SDK's provider (METRICS=off never
does) they are the API's no-ops.
"""

import gc
import threading
import types
from typing import Final

from grpc_observability import OpenTelemetryPlugin, _observability
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from grpckit.telemetry import grpc_export
from grpckit.telemetry.resource import process_resource

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# gRFC A66's recommended boundaries: the SDK's default ones (0, 5, 10, ... 10000) are for
# milliseconds and would put every call in the first bucket.
LATENCY_BUCKETS: Final = (
    0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004,
    0.005, 0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08,
    0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1, 2, 5, 10, 20, 50, 100,
)  # fmt: skip
SIZE_BUCKETS: Final = tuple(
    [0] + [4**n for n in range(5, 17)]
)  # 1 KiB to 4 GiB, by fours (gRFC A66)

_VIEWS: Final = (
    View(
        instrument_type=Histogram,
        instrument_unit="s",
        aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS),
    ),
    View(
        instrument_type=Histogram,
        instrument_unit="By",
        aggregation=ExplicitBucketHistogramAggregation(SIZE_BUCKETS),
    ),
)

_lock = threading.Lock()
_installed = False
_plugin = False

# Methods served by this process, as gRPC's metrics name them ("pkg.Service/Method"), filled
# as the runtime assembles their handlers (grpckit/calls/interceptors.py). gRPC names a method
# added through a generic handler (soccer's Watch, the tests' Echo) "other" unless told it is
# ours; any other name stays "other", so a client cannot mint a series per name it makes up.
SERVED: set[str] = set()


def _served(method: str) -> bool:
    return method in SERVED


def install(service: str, replica: str, *, grpc_plugin: bool) -> bool:
    """The process's metrics on: the SDK's meter provider made global and, with
    `grpc_plugin`, gRPC's plugin on every server and channel made from now on. Once per
    process (later calls do nothing, so tests may run many servers); False when it was on
    already.

    grpcio-observability 1.85.0's export thread turns the buffered measurements into Python
    objects while it holds the buffer's C++ mutex, which a gRPC call takes to record one.
    The process deadlocks if that thread lets go of the GIL in between (grpc/grpc#43079), as
    it does in two places: in Python bytecode, where the interpreter may hand the GIL to a
    thread that then waits on the mutex while holding the GIL; and in a garbage collection
    that frees a gRPC call, which then waits on the mutex its own thread holds. So the
    measurements are built by C code alone (`_StatsData`), and the automatic collector is
    off for good once the plugin is on: the server runs collections on its event loop
    (memory.collect_on_loop). tests/grpc_metrics_hang.py hangs at once without either.
    """
    global _installed, _plugin
    with _lock:
        if _installed:
            return False
        _installed = True
    # The resource becomes Prometheus's target_info; Prometheus names the target itself.
    resource = process_resource(service, replica)
    # Scope labels (otel_scope_name...) would repeat on every series and tell nothing here.
    reader = PrometheusMetricReader(scope_info_enabled=False)
    provider = MeterProvider(metric_readers=[reader], views=_VIEWS, resource=resource)
    metrics.set_meter_provider(provider)
    if not grpc_plugin:
        return True
    _observability.StatsData = _StatsData
    grpc_export.install()
    gc.disable()
    plugin = OpenTelemetryPlugin(meter_provider=provider, generic_method_attribute_filter=_served)
    # grpcio-observability's export thread is not a daemon (a TODO in its source), so it
    # would keep the process alive after main returns; a thread inherits daemon from the
    # thread that starts it.
    starter = threading.Thread(target=plugin.register_global, name="metrics-start", daemon=True)
    starter.start()
    starter.join()
    _plugin = True
    return True


class _StatsData(types.SimpleNamespace):
    """grpc_observability's StatsData, a frozen dataclass whose __init__ is bytecode, built
    instead by SimpleNamespace's constructor, which is C and keeps the GIL to the end. Same
    attributes and defaults; the plugin only reads them."""

    value_int = 0
    value_float = 0.0
    include_exchange_labels = False
    registered_method = False


def installed() -> bool:
    return _installed


def grpc_plugin() -> bool:
    """Whether gRPC's plugin records this process's calls (then the collector must run on
    the event loop: see `install`)."""
    return _plugin


def exposition() -> bytes:
    """Every metric, in Prometheus's text format (blocking: call off the event loop)."""
    return generate_latest(REGISTRY)


_meter = metrics.get_meter("grpckit")

refusals = _meter.create_counter(
    "grpckit.refusals",
    description="calls refused before their handler ran: over a budget, or not authorized",
)
