"""How gRPC's measurements reach the OpenTelemetry SDK: grpcio-observability's own exporter,
with its per-measurement Python made once per batch where it can be.

The plugin's export thread hands over its buffered measurements in batches, four for every
call a server answers (calls started, duration, bytes sent, bytes received), and its
exporter records each through the SDK after working out its attributes again: the labels
copied, decoded from bytes and filtered (target, method) for every measurement. That thread
took about 55 us of CPU per call at peak unary load, more than the runtime's own jobs.
Here, per batch:
- a measurement's attributes are worked out once per distinct set of raw labels (the same
  steps, the same result) and remembered;
- a counter's measurements with the same attributes are added up and recorded once (the
  batch's calls started are one `add`); histograms still get every value.
Measurements that carry exchanged labels, or a plugin with options (CSM), take the library's
own path. Written against grpcio-observability 1.85.0's private exporter (the version is
pinned; tests/test_metrics.py reads the families this produces).
"""

from collections.abc import Iterable
from typing import Any

from grpc_observability import _open_telemetry_observability as _library
from opentelemetry.metrics import Counter

# Attributes by (plugin, registered method, raw labels...). Methods and statuses are few, but
# a client may name methods that do not exist (all recorded as "other"): a bound.
_REMEMBERED = 1024
_attributes_of: dict[tuple[Any, ...], dict[str, str]] = {}


def install() -> None:
    """grpcio-observability's exporter records batches as `export_stats_data` does here."""
    _library._OpenTelemetryExporterDelegator.export_stats_data = export_stats_data


def export_stats_data(self: Any, stats_data: Iterable[Any]) -> None:
    """A batch of measurements recorded (the exporter's method; `self` is the exporter)."""
    counted: dict[tuple[Any, tuple[Any, ...]], tuple[dict[str, str], int]] = {}
    for data in stats_data:
        for plugin in self._plugins:
            recorder = plugin._metric_to_recorder.get(data.name)
            if recorder is None:
                continue
            if data.include_exchange_labels or _options(plugin, recorder):
                plugin._record_stats_data(data)
                continue
            key = (plugin, data.registered_method, *data.labels.items())
            attributes = _attributes_of.get(key)
            if attributes is None:
                attributes = _attributes(plugin, key, data)
            value = data.value_float if data.measure_double else data.value_int
            if isinstance(recorder, Counter):
                _, before = counted.get((recorder, key), (attributes, 0))
                counted[recorder, key] = (attributes, before + value)
            else:
                recorder.record(value, attributes=attributes)
    for (recorder, _), (attributes, total) in counted.items():
        recorder.add(total, attributes=attributes)


def _options(plugin: Any, recorder: Any) -> bool:
    """Whether the plugin has options (which may add labels) for this side of the call."""
    if _library.GRPC_CLIENT_METRIC_PREFIX in recorder.name:
        return bool(plugin._enabled_client_plugin_options)
    return bool(plugin._enabled_server_plugin_options)


def _attributes(plugin: Any, key: tuple[Any, ...], data: Any) -> dict[str, str]:
    """The attributes the library's `_record_stats_data` gives a measurement with these raw
    labels: decoded, then the target and the method filtered as the plugin's filters say."""
    attributes: dict[str, str] = plugin.decode_labels(dict(data.labels))
    options = plugin._plugin
    if not options.target_attribute_filter(attributes.get(_library.GRPC_TARGET_LABEL, "")):
        attributes[_library.GRPC_TARGET_LABEL] = _library.GRPC_OTHER_LABEL_VALUE
    method = attributes.get(_library.GRPC_METHOD_LABEL, "")
    if not (data.registered_method or options.generic_method_attribute_filter(method)):
        attributes[_library.GRPC_METHOD_LABEL] = _library.GRPC_OTHER_LABEL_VALUE
    if len(_attributes_of) >= _REMEMBERED:
        _attributes_of.clear()
    _attributes_of[key] = attributes
    return attributes
