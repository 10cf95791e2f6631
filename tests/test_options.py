"""options.py: settings classes whose fields are CLI flags that check their own numbers."""

import argparse
import dataclasses
import os

import pytest

from artdate.core.options import (
    REQUIRED,
    Range,
    Settings,
    add_arguments,
    from_arguments,
    option,
    shown_default,
    with_absolute_storage,
)


@dataclasses.dataclass(frozen=True)
class Example(Settings):
    out: str = option(REQUIRED, "where it goes", storage=True)
    inputs: tuple[str, ...] = option(("a.csv",), "what it reads", storage=True, nargs="+")
    weights: str = option("imagenet", "a path, or imagenet", storage=True)
    rate: float = option(2.5, "per second", range=Range(above=0))
    workers: int = option(-1, "processes; -1: one per core", range=Range(at_least=1, at_most=64, also=(-1,)))
    label: str = option("50%", "shown in --help")
    quiet: bool = option(False, "say nothing")


def parse(*argv: str) -> Example:
    parser = argparse.ArgumentParser(prog="example")
    add_arguments(parser, Example)
    return from_arguments(Example, parser.parse_args(list(argv)))


def test_flags_round_trip_into_settings_with_their_defaults():
    assert parse("--out", "x") == Example(out="x")
    given = parse("--out", "x", "--inputs", "b.csv", "--rate", "0.5", "--workers", "4", "--quiet")
    assert given == Example(out="x", inputs=("b.csv",), rate=0.5, workers=4, quiet=True)
    assert isinstance(given.inputs, tuple)


def test_a_required_flag_is_required_and_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        parse()
    assert "the following arguments are required: --out" in capsys.readouterr().err
    parser = argparse.ArgumentParser(prog="example")
    add_arguments(parser, Example)
    text = " ".join(parser.format_help().split())
    for shown in ("(default: a.csv)", "(default: 2.5)", "(default: -1)", "(default: 50%)", "(default: off)"):
        assert shown in text


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"rate": 0}, "--rate 0: must be above 0"),
        ({"rate": float("nan")}, "--rate nan: must be a finite number"),
        ({"workers": 0}, "--workers 0: must be at least 1 and at most 64, or -1"),
        ({"workers": 65}, "--workers 65: must be at least 1 and at most 64, or -1"),
    ],
)
def test_numbers_outside_their_range_are_refused_naming_the_flag(changes, message):
    with pytest.raises(ValueError) as refused:
        Example(out="x", **changes)
    assert str(refused.value) == message
    assert Example(out="x", workers=-1).workers == -1 and Example(out="x", workers=64).workers == 64


def test_a_number_without_a_range_is_a_programming_error():
    @dataclasses.dataclass(frozen=True)
    class Unchecked(Settings):
        steps: int = option(3, "no range declared")

    with pytest.raises(TypeError, match="Unchecked.steps declares no range"):
        Unchecked()


def test_local_storage_becomes_absolute_and_urls_and_words_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Example(out="runs/one", inputs=("a.csv", "s3://bucket/b.csv"), weights="imagenet")
    absolute = with_absolute_storage(settings, words=("imagenet",))
    assert absolute.out == os.path.join(str(tmp_path), "runs", "one")
    assert absolute.inputs == (os.path.join(str(tmp_path), "a.csv"), "s3://bucket/b.csv")
    assert absolute.weights == "imagenet"
    assert with_absolute_storage(dataclasses.replace(settings, weights="w.pt")).weights == str(tmp_path / "w.pt")


def test_defaults_as_help_shows_them():
    assert [shown_default(v) for v in ("", (), None, ("a", "b"), 0.5, "5%")] == [
        "none",
        "none",
        "none",
        "a b",
        "0.5",
        "5%%",
    ]
