"""The shared runtime of every server: TLS, health, reflection, access logs, shutdown.

Services stay small because everything they have in common lives here once, in rooms that
import one way only, each from the rooms below it (tests/test_imports.py holds the order):

- lifecycle: the entry point, the server and its services, workers, drain and exit
- calls: what every call goes through (authorization, budgets, access log), one wrapper
- client: channels to a server, and the health probe built on them
- transport: what both ends share, mutual TLS and the channel and server options
- telemetry: logs, metrics and traces

Below them all, `settings` (settings declared as dataclasses, read from flags and the
environment) and `config` (the settings every server has), which any room may import.

Loggers are named for what they log (grpckit.server, grpckit.tls, grpckit.access), not by
module path: the name is the `logger` field of every JSON line, which log queries select on.
"""
