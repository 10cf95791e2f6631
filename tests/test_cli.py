"""Every command: bad input gives exit 2 and one line naming the file, row, URL or option; no traceback."""

import argparse
import os

import pytest

from tests.support.helpers import SAMPLE_CSV, SAMPLE_IMAGES, run_artdate


def artdate(*argv, env=None):
    done = run_artdate(*argv, env=env, timeout=300)
    return done.returncode, done.stderr.strip()


@pytest.fixture
def no_pred_csv(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("id,year,prediction\n1,1600,1650\n")
    return str(path)


def test_bad_input_to_every_command_is_one_line_and_exit_2(
    tmp_path, sample_store, tiny_checkpoint, no_pred_csv, s3_url
):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    bucket = s3_url.split("/")[2]
    cases = [
        (["pack", "--metadata", str(tmp_path / "none.csv"), "--out", str(tmp_path / "s")], "none.csv: cannot read"),
        (["pack", "--metadata", SAMPLE_CSV, "--out", str(a_file / "store"), "--year-min", "-1000"], "a-file"),
        (
            ["train", "--shards", str(tmp_path / "none"), "--storage", str(tmp_path / "run")],
            "not a finished artdate store",
        ),
        (
            ["score", "--shards", sample_store, "--checkpoint", str(tmp_path), "--out", str(tmp_path / "r.csv")],
            f"no checkpoint at {tmp_path}",
        ),
        (["report", no_pred_csv, "--out", str(tmp_path / "report")], "needs columns year and pred; missing ['pred']"),
        (["predict", f"s3://{bucket}-missing/a.jpg", "--checkpoint", tiny_checkpoint], f"{bucket}-missing"),
        (
            ["predict", os.path.join(SAMPLE_IMAGES, "aic_866.jpg"), "--checkpoint", f"s3://{bucket}/no-run"],
            f"no checkpoint at s3://{bucket}/no-run",
        ),
        (["predict", str(tmp_path), "--checkpoint", tiny_checkpoint], f"{tmp_path}: a folder with no image in it"),
        (
            ["score", "--shards", sample_store, "--checkpoint", tiny_checkpoint, "--out", str(tmp_path)],
            f"--out {tmp_path} is a folder; name the results file",
        ),
        (
            ["score", "--shards", sample_store, "--checkpoint", tiny_checkpoint, "--out", str(a_file / "r.csv")],
            f"--out {a_file / 'r.csv'}: {a_file} is a file, not a folder",
        ),
        (
            ["predict", os.path.join(SAMPLE_IMAGES, "aic_866.jpg"), "--checkpoint", str(a_file)],
            f"{a_file} is not a readable checkpoint",
        ),
    ]
    for argv, message in cases:
        code, error = artdate(*argv)
        assert code == 2 and message in error and len(error.splitlines()) == 1 and "Traceback" not in error, (
            argv,
            error,
        )
    code, error = artdate(
        "predict", f"s3://{bucket}/a.jpg", "--checkpoint", tiny_checkpoint, env={"AWS_SECRET_ACCESS_KEY": "wrong"}
    )
    assert code == 2 and error.startswith("artdate predict: error: S3 refused") and len(error.splitlines()) == 1, error


def test_help_shows_every_default():
    from artdate.cli import COMMANDS, build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in COMMANDS:
        command = subparsers.choices[name]
        command.format_help()  # renders (a '%' in a default would break it)
        for action in command._actions:
            if action.option_strings and not action.required and action.dest != "help":
                assert "(default: " in action.help, (
                    f"artdate {name} --help: {action.option_strings[0]} shows no default"
                )
    train = " ".join(subparsers.choices["train"].format_help().split())
    assert "--epochs EPOCHS passes over the training split (default: 10)" in train
    assert "--resume continue the run in --storage" in train and "(default: off)" in train


def out_of_range(accepted) -> list[float]:
    """Values just outside a Range (not one of its special values), and NaN and infinity."""
    values = [float("nan"), float("inf")]
    for bound, step in ((accepted.at_least, -1), (accepted.above, 0), (accepted.at_most, 1), (accepted.below, 0)):
        if bound is not None:
            value = bound + step
            while value in accepted.also:
                value += step or -1
            values.append(value)
    return values


def test_every_numeric_option_is_checked_against_its_declared_range():
    import dataclasses
    from typing import get_type_hints

    from artdate.cli import COMMANDS

    checked = 0
    for config_class, _, _ in COMMANDS.values():
        required = {f.name: "x" for f in dataclasses.fields(config_class) if f.default is f.default_factory}
        config_class(**required)  # the defaults are in range; a number with no declared range fails here
        hints = get_type_hints(config_class)
        for f in dataclasses.fields(config_class):
            if hints[f.name] not in (int, float):
                continue
            flag = "--" + f.name.replace("_", "-")
            for value in out_of_range(f.metadata["range"]):
                with pytest.raises(ValueError, match=f"^{flag} "):
                    config_class(**required, **{f.name: value})
                checked += 1
    assert checked > 60


def test_nonsense_options_are_refused_before_any_work(tmp_path):
    # Issue 36's reproductions: each exited 0, or hung (score --actors 0), before.
    cases = [
        (
            ["score", "--shards", "s", "--checkpoint", "c", "--out", "r.csv", "--actors", "0"],
            "--actors 0: must be at least 1",
        ),
        (["score", "--shards", "s", "--checkpoint", "c", "--out", "r.csv", "--batch-size", "-1"], "--batch-size -1"),
        (["pack", "--metadata", "m.csv", "--out", str(tmp_path / "s"), "--quality", "200"], "at most 100"),
        (
            ["pack", "--metadata", "m.csv", "--out", str(tmp_path / "s"), "--jobs", "-3"],
            "--jobs -3: must be at least 0",
        ),
        (
            ["pack", "--metadata", "m.csv", "--out", "s", "--year-min", "1900", "--year-max", "1800"],
            "is after --year-max",
        ),
        (["report", "r.csv", "--out", str(tmp_path / "r"), "--gallery", "-3"], "--gallery -3: must be at least 0"),
        (["train", "--shards", "s", "--storage", "r", "--gpus-per-worker", "-0.5"], "must be at least 0, or -1"),
    ]
    for argv, message in cases:
        code, error = artdate(*argv)
        assert code == 2 and message in error and len(error.splitlines()) == 1, (argv, error)
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()
