"""How a stage's settings become CLI flags and check themselves: the machinery under config.py.

A settings class is a frozen dataclass of `option()` fields deriving `Settings`: each field's
metadata holds its help text, the values a number accepts (a `Range`) and, where needed, argparse
extras (choices, a positional name). `add_arguments` turns the fields into flags, `from_arguments`
flags back into settings, and every settings object checks its numbers against their ranges when
it is made, from the command line or from code, before any work.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, get_type_hints

REQUIRED = dataclasses.MISSING


@dataclass(frozen=True)
class Range:
    """The values a numeric option accepts: within the bounds given (at_least/at_most inclusive,
    above/below exclusive), or one of `also` (such as -1 for "auto"). Range() accepts any finite
    number; NaN and infinities never pass."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    also: tuple[float, ...] = ()

    def problem(self, value: float) -> str:
        """What is wrong with `value`, or ''."""
        if not math.isfinite(value):
            return "must be a finite number"
        if value in self.also:
            return ""
        rules = [
            (self.at_least, value < (self.at_least or 0), "at least"),
            (self.above, value <= (self.above or 0), "above"),
            (self.at_most, value > (self.at_most or 0), "at most"),
            (self.below, value >= (self.below or 0), "below"),
        ]
        broken = [f"{word} {bound:g}" for bound, fails, word in rules if bound is not None and fails]
        if not broken:
            return ""
        allowed = [f"{word} {bound:g}" for bound, _, word in rules if bound is not None]
        special = f", or {' or '.join(f'{v:g}' for v in self.also)}" if self.also else ""
        return f"must be {' and '.join(allowed)}{special}"


def check_ranges(settings: Any) -> None:
    """Refuse a config whose numbers are out of their declared ranges, naming the flag; a numeric
    field without a Range is a programming error (so a new option cannot skip the check)."""
    hints = get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        if hints[f.name] not in (int, float):
            continue
        accepted = f.metadata.get("range")
        if accepted is None:
            raise TypeError(f"{type(settings).__name__}.{f.name} declares no range of values")
        value = getattr(settings, f.name)
        problem = accepted.problem(value)
        if problem:
            raise ValueError(f"--{f.name.replace('_', '-')} {value:g}: {problem}")


class Settings:
    """What every stage's settings do when made: check their numbers against their ranges."""

    def __post_init__(self) -> None:
        check_ranges(self)


def option(
    default: Any = REQUIRED, help: str = "", storage: bool = False, range: Range | None = None, **argparse_extras: Any
) -> Any:
    """A dataclass field that is also a CLI flag; `default=REQUIRED` makes the flag required.
    `storage=True` marks a location every node of a cluster must be able to reach (launch.py
    checks it); `range` the values a number accepts (every numeric option has one)."""
    meta = {"help": help, "storage": storage, "range": range, **argparse_extras}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    if default is REQUIRED:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def add_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """Add one flag per field of `config_class`, named --field-name."""
    hints = get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        extras = dict(f.metadata)
        extras.pop("storage")
        extras.pop("range")
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        required = f.default is REQUIRED and f.default_factory is REQUIRED
        if kind == tuple[str, ...]:
            kind = str
        if extras.pop("positional", False):
            parser.add_argument(f.name, type=kind, help=extras.pop("help", ""), **extras)
            continue
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=extras.pop("help", "") + " (default: off)")
            continue
        default = None if required else (f.default_factory() if f.default is REQUIRED else f.default)  # type: ignore[operator]
        if not required:
            extras["help"] = extras.get("help", "") + f" (default: {shown_default(default)})"
        if extras.get("action") == "append":
            default = None  # argparse appends to its default: from_arguments puts the field's default back
        parser.add_argument(flag, type=kind, default=default, required=required, **extras)


def shown_default(value) -> str:
    """A default as --help shows it ('%' doubled: argparse formats help strings)."""
    if value in ("", (), None):
        text = "none"
    elif isinstance(value, tuple):
        text = " ".join(map(str, value))
    else:
        text = str(value)
    return text.replace("%", "%%")


def storage_fields(config_class: type) -> list[dataclasses.Field]:
    """The fields of `config_class` that name storage (paths or URLs)."""
    return [f for f in dataclasses.fields(config_class) if f.metadata.get("storage")]


def with_absolute_storage(settings: Any, words: tuple[str, ...] = ()) -> Any:
    """`settings` with the local paths of its storage options made absolute (store.absolute): Ray's
    workers and actors run in other folders than the driver. A value among `words` (such as
    --weights imagenet) names no path and stays as it is."""
    from artdate.core import store

    changes: dict[str, Any] = {}
    for f in storage_fields(type(settings)):
        value = getattr(settings, f.name)
        if isinstance(value, str) and value not in words:
            changes[f.name] = store.absolute(value)
        elif isinstance(value, tuple):
            changes[f.name] = tuple(store.absolute(v) for v in value)
    return dataclasses.replace(settings, **changes)


def from_arguments(config_class: type, args: argparse.Namespace) -> Any:
    """Build `config_class` from parsed arguments (extra attributes of `args` are ignored)."""
    values = {}
    for f in dataclasses.fields(config_class):
        value = getattr(args, f.name)
        if value is None and f.metadata.get("action") == "append":
            continue
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return config_class(**values)
