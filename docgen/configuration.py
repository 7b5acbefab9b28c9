"""The configuration reference: every setting of the servers and the health probe, from the
dataclasses that declare them (grpckit/settings.py), with each program's own defaults."""

from pathlib import Path
from typing import Any

from cheese.server import PROGRAM as CHEESE
from docgen.markdown import code, table
from grpckit.client.probe import PROG as PROBE_PROG
from grpckit.client.probe import ProbeSettings
from grpckit.config import ServerSettings, TraceSettings
from grpckit.lifecycle.main import server_defaults
from grpckit.lifecycle.service import Program
from grpckit.settings import Described, describe
from movie.server import PROGRAM as MOVIE
from soccer.server import PROGRAM as SOCCER

PROGRAMS: tuple[Program[Any], ...] = (CHEESE, MOVIE, SOCCER)
# What a default that is the machine's own reads as on the page.
HOST = "the host name"
# A default found from the code's own place (movie's catalogue) is shown from the checkout.
CHECKOUT = str(Path(__file__).resolve().parent.parent) + "/"


def _meaning(item: Described) -> str:
    # Strings and paths take any text: their form says nothing the meaning does not.
    text = item.help if item.form in ("a string", "a path") else f"{item.help}; {item.form}"
    # Markdown would take <id> for an HTML tag and show nothing.
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _default(item: Described) -> str:
    return code(item.default.removeprefix(CHECKOUT))


def _variable(item: Described) -> str:
    return code(item.env) if item.env else "(flag only)"


def _settings(kind: type, per_program: frozenset[str] = frozenset()) -> str:
    rows = [
        [
            _variable(item),
            code(item.flag),
            "per program, below" if item.name in per_program else _default(item),
            _meaning(item),
        ]
        for item in describe(kind)
    ]
    return table(["variable", "flag", "default", "meaning"], rows)


def _environment_only(kind: type) -> str:
    rows = [[_variable(item), _default(item), _meaning(item)] for item in describe(kind)]
    return table(["variable", "default", "meaning"], rows)


def _program(program: Program[Any]) -> str:
    defaults = server_defaults(program, HOST)
    changed = [item for item in describe(ServerSettings, defaults) if item.name in defaults]
    rows = [[_variable(item), HOST if item.default == HOST else _default(item)] for item in changed]
    parts = [
        f"### {program.name}",
        f"`python -m {program.name}`: {program.description} Its defaults of the common settings:",
        table(["variable", "default"], rows),
    ]
    if describe(program.settings):
        parts += ["Its own settings:", _settings(program.settings)]
    return "\n\n".join(parts)


def render() -> str:
    per_program = frozenset(key for p in PROGRAMS for key in server_defaults(p, HOST))
    return "\n\n".join(
        [
            "## Every server",
            _settings(ServerSettings, per_program),
            "## Tracing",
            "OpenTelemetry's own variables, from the environment only, for the servers and the "
            "client alike:",
            _environment_only(TraceSettings),
            "## Each service",
            *map(_program, PROGRAMS),
            "## The health probe",
            f"`{PROBE_PROG}` (the containers' healthcheck) takes every server setting above, "
            "to find the server it asks, and these:",
            _settings(ProbeSettings),
        ]
    )
