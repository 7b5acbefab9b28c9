"""Settings declared once, as frozen dataclasses whose fields are made with `setting()`.

A field's type, default and help, and the environment variable that sets it, are all the
runtime needs: the command-line flags, `--help` and the validation come from them.
Containers are configured through the environment, people at a shell through flags: a flag
wins over its variable, which wins over the default.

A bad value is a usage error that names the flag or variable and the form it expects: one
line, exit code 2, no traceback (a traceback would bury the one thing to fix).
"""

import argparse
import dataclasses
import enum
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class UsageError(Exception):
    """A setting with a value it cannot take; the message names it and the form expected."""


@dataclass(frozen=True)
class _Spec:
    env: str | None
    help: str
    flag: str | None
    minimum: float | None
    maximum: float | None


def setting(
    default: Any,
    env: str | None,
    help: str,
    *,
    flag: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """A settings field. `flag` defaults to the field's name (`--prep-seconds`); `env=None`
    makes it a flag only; `minimum` and `maximum` bound numbers, inclusively."""
    spec = _Spec(env, help, flag, minimum, maximum)
    return dataclasses.field(default=default, metadata={"setting": spec})


@dataclass(frozen=True)
class _Field:
    name: str
    flag: str
    spec: _Spec
    kind: Any
    default: Any


def _fields(kind: type) -> list[_Field]:
    hints = typing.get_type_hints(kind)
    found = []
    for item in dataclasses.fields(kind):
        spec = item.metadata.get("setting")
        if spec is None:
            raise TypeError(f"{kind.__name__}.{item.name} is not a setting()")
        flag = spec.flag or "--" + item.name.replace("_", "-")
        found.append(_Field(item.name, flag, spec, hints[item.name], item.default))
    return found


def _optional(kind: Any) -> Any | None:
    """X for `X | None`, else None."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return None


def _form(item: _Field, kind: Any) -> str:
    """The form a value must take, in words, for `--help` and errors."""
    inner = _optional(kind)
    if inner is not None:
        return f"{_form(item, inner)}, or empty for none"
    if kind is bool:
        return "a boolean (1/0, true/false, yes/no, on/off)"
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "one of " + ", ".join(str(member.value) for member in kind)
    if kind in (int, float):
        noun = "an integer" if kind is int else "a number"
        low, high = item.spec.minimum, item.spec.maximum
        if low is not None and high is not None:
            return f"{noun} from {low:g} to {high:g}"
        if low is not None:
            return f"{noun} of at least {low:g}"
        return noun
    return "a path" if kind is Path else "a string"


def _convert(item: _Field, kind: Any, text: str) -> Any:
    """`text` as a value of `kind`; ValueError when it is not one."""
    inner = _optional(kind)
    if inner is not None:
        return None if not text.strip() else _convert(item, inner, text)
    if kind is bool:
        value = text.strip().lower()
        if value not in _TRUE | _FALSE:
            raise ValueError(text)
        return value in _TRUE
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        for member in kind:
            if str(member.value).lower() == text.strip().lower():
                return member
        raise ValueError(text)
    if kind in (int, float):
        number = kind(text)
        low, high = item.spec.minimum, item.spec.maximum
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(text)
        return number
    if kind is Path:
        return Path(text)
    if kind is str:
        return text
    raise TypeError(f"settings of type {kind} are not supported")


def _parse(item: _Field, text: str, source: str) -> Any:
    """The value of `item` that `text` gives; `source` names the flag or variable it came
    from, so that the error names what to fix."""
    try:
        return _convert(item, item.kind, text)
    except ValueError:
        raise UsageError(f"{source}: expected {_form(item, item.kind)}, got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def parse(
    kinds: Sequence[type],
    *,
    prog: str,
    description: str,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> list[Any]:
    """One instance of each settings dataclass in `kinds`, from flags over environment over
    defaults; `defaults` replaces a field's declared default (by field name).

    `--help` prints and exits 0 (SystemExit); a bad value raises UsageError.
    """
    environ = os.environ if environ is None else environ
    defaults = defaults or {}
    parser = _Parser(prog=prog, description=description)
    every: list[list[_Field]] = []
    for kind in kinds:
        items = _fields(kind)
        every.append(items)
        for item in items:
            default = defaults.get(item.name, item.default)
            where = f" [env {item.spec.env}]" if item.spec.env else ""
            form = "" if item.kind in (str, Path) else f"; {_form(item, item.kind)}"
            text = f"{item.spec.help}{form} (default: {_shown(default)}){where}"
            extra: dict[str, Any] = {"nargs": "?", "const": "true"} if item.kind is bool else {}
            parser.add_argument(
                item.flag,
                dest=item.name,
                default=None,
                help=text.replace("%", "%%"),
                metavar=item.spec.env or item.name.upper(),
                **extra,
            )
    given = parser.parse_args(argv)
    settings = []
    for kind, items in zip(kinds, every, strict=True):
        values = {}
        for item in items:
            flag_value: str | None = getattr(given, item.name)
            env_value = environ.get(item.spec.env) if item.spec.env else None
            if flag_value is not None:
                values[item.name] = _parse(item, flag_value, item.flag)
            elif env_value is not None and item.spec.env:
                values[item.name] = _parse(item, env_value, item.spec.env)
            else:
                values[item.name] = defaults.get(item.name, item.default)
        try:
            settings.append(kind(**values))
        except ValueError as error:
            raise UsageError(str(error)) from None
    return settings


@dataclass(frozen=True)
class Described:
    """One setting as a reference page shows it: everything `--help` says, apart."""

    name: str
    env: str | None
    flag: str
    default: str
    form: str
    help: str


def describe(kind: type, defaults: Mapping[str, Any] | None = None) -> list[Described]:
    """The settings of dataclass `kind`, in declaration order, as `parse` would offer them
    with `defaults` (by field name) in place of the declared ones."""
    defaults = defaults or {}
    return [
        Described(
            item.name,
            item.spec.env,
            item.flag,
            _shown(defaults.get(item.name, item.default)),
            _form(item, item.kind),
            item.spec.help,
        )
        for item in _fields(kind)
    ]


def usage_error(prog: str, error: UsageError) -> str:
    return f"{prog}: error: {error} (`{prog} --help` lists every setting)"
