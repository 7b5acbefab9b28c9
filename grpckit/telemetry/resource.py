"""The OpenTelemetry resource that names this process on every signal it sends: its traces
(grpckit/telemetry/tracing.py) and its metrics (grpckit/telemetry/metrics.py, where Prometheus
shows it as target_info), so that a trace and a series of one replica carry the same identity."""

import functools

from opentelemetry.sdk.resources import Resource


@functools.cache
def process_resource(service: str, replica: str) -> Resource:
    """`service` (service.name) run by `replica` (service.instance.id); one per pair."""
    return Resource.create({"service.name": service, "service.instance.id": replica})
