"""What a process tells about itself: JSON logs, Prometheus metrics and OpenTelemetry traces.

It imports no other room, so that every room can log, count and trace without a circle.
"""
