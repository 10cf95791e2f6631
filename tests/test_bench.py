"""Benchmarks that run where the suite cannot (a short GPU lease) start and print their rows here
on the CPU: a lease is too short to spend on a script broken by a change of artdate's API."""

import os
import subprocess
import sys

from helpers import ROOT, requires_sample


@requires_sample
def test_gpu_input_measures_every_input_path_on_the_cpu():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "gpu_input.py"), "--device", "cpu", "--backbone", "resnet18"]
        + ["--image-size", "64", "--copies", "1", "--batch", "32", "--loader-workers", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("train ", "score "))]
    assert [row[0] for row in rows] == ["train"] * 3 + ["score"] * 3
    assert all(float(row[-2]) > 0 and float(row[-1]) > 0 for row in rows)  # img/s and the ratio, each measured
