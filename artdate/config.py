"""Settings of each stage as frozen dataclasses; the CLI flags are generated from their fields.

A field's metadata holds its help text and, where needed, argparse extras (choices, a positional
name). Keeping the settings here means a stage's function signature, its CLI and its defaults
cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, get_type_hints

REQUIRED = dataclasses.MISSING


def option(default: Any = REQUIRED, help: str = "", **argparse_extras: Any) -> Any:
    """A dataclass field that is also a CLI flag; `default=REQUIRED` makes the flag required."""
    meta = {"help": help, **argparse_extras}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    if default is REQUIRED:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class PackConfig:
    metadata: tuple[str, ...] = option(
        help="metadata CSV file(s): at least id,year; optional museum, year_start, year_end, file, url",
        nargs="+",
    )
    out: str = option(help="store URL: a local directory or s3://bucket/prefix")
    images: str = option("", help="image folder for the CSV's file column, or a pattern like DIR/{id}.jpg")
    source: str = option(
        "", help="fetch images from a museum API instead of a folder", choices=["", "met", "rijks"]
    )
    museum: str = option("", help="museum of every row, for CSVs without a museum column")
    size: int = option(384, help="shorter side of the stored images in pixels (never upscaled)")
    quality: int = option(90, help="JPEG quality of the stored images")
    samples_per_shard: int = option(1000, help="samples per shard (the last shard of a split may hold fewer)")
    val_fraction: float = option(0.1, help="fraction of works in the validation split")
    seed: int = option(0, help="seed of the train/val split and the shard shuffle")
    year_min: int = option(1200, help="drop works made before this year")
    year_max: int = option(1930, help="drop works made after this year")
    skip_bad_rows: bool = option(False, help="skip and list bad metadata rows instead of stopping")
    max_pixels: int = option(100_000_000, help="reject images with more pixels than this (decompression bombs)")
    max_bytes: int = option(50_000_000, help="reject downloads larger than this many bytes")
    jobs: int = option(0, help="processes that decode and resize images (0: one per core)")
    concurrency: int = option(8, help="downloads in flight at once (museum APIs)")
    rate: float = option(10.0, help="API requests per second at most (museum APIs)")
    timeout: float = option(30.0, help="seconds to wait for a museum API or image server")
    retries: int = option(3, help="retries of a download after 429, 5xx, a timeout or a broken connection")
    api_url: str = option("", help="museum API base URL (default: the museum's public API)")


def add_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """Add one flag per field of `config_class`, named --field-name."""
    hints = get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        extras = dict(f.metadata)
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        required = f.default is REQUIRED and f.default_factory is REQUIRED
        if extras.pop("positional", False):
            parser.add_argument(f.name, type=kind, help=extras.pop("help", ""), **extras)
            continue
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=extras.pop("help", ""))
            continue
        if kind == tuple[str, ...]:
            kind = str
        default = None if required else (f.default_factory() if f.default is REQUIRED else f.default)
        parser.add_argument(flag, type=kind, default=default, required=required, **extras)


def from_arguments(config_class: type, args: argparse.Namespace) -> Any:
    """Build `config_class` from parsed arguments (extra attributes of `args` are ignored)."""
    values = {}
    for f in dataclasses.fields(config_class):
        value = getattr(args, f.name)
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return config_class(**values)
