"""Every command: bad input gives exit 2 and one line naming the file, row, URL or option; no traceback."""

import argparse
import os
import subprocess
import sys

import pytest
from helpers import ROOT, SAMPLE_CSV, SAMPLE_IMAGES


def artdate(*argv, env=None):
    done = subprocess.run(
        [sys.executable, "-m", "artdate.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
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
