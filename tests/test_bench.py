"""Every benchmark under bench/ runs here at its smallest size, so none can rot unseen (a script
broken by a change of artdate's API costs a GPU lease, or a wrong figure in bench/RESULTS.md).
The figures of such small runs mean nothing: each test checks that the script ran to its end and
printed the rows it measures."""

import glob
import os
import subprocess
import sys

import pytest
from helpers import ROOT, requires_sample

BENCH = os.path.join(ROOT, "bench")
# script -> (its smallest arguments, a piece of what it prints at the end). {tmp}: a scratch folder.
SMALLEST = {
    "checkpoint.py": (["--backbones", "efficientnet_lite0", "--repeats", "1"], "efficientnet_lite0"),
    "comparanda.py": (["--sizes", "2000", "--queries", "20", "--dim", "32", "--nprobe", "4"], "nprobe 4"),
    "dates.py": ([], "| Met objectDate (recorded) | undate + artdate's layer |"),
    "data.py": (["--copies", "1", "--loader-workers", "1", "--batch-size", "16", "--passes", "1"], "shards, S3, uint8"),
    "fetch_soak.py": (["--works", "40", "--scale", "0.02"], "| all |"),
    "frozen.py": (["--folds", "2", "--sizes", "64", "--sets", "sample", "--recipes", "l1"], "| sample | sample | 64"),
    "loader.py": (
        ["--copies", "1", "--workers", "0", "1", "--pack-sizes", "64", "--image-size", "32", "--batch", "32"],
        "| local | 64 | jpeg | 1 |",
    ),
    "loader_start.py": (["--loader-workers", "1", "--passes", "2"], "forkserver"),
    "met_export.py": (["--rows", "2000"], "| 2,000 |"),
    "museums.py": (["--works", "3"], "hours for the 2017 lists"),
    "pack.py": (["--copies", "1", "--size", "64"], "artdate pack --jobs 1"),
    "preempt.py": (["--ways", "none", "--at", "2", "--batch-size", "16"], "| none |"),
    "ranks.py": (["--workers", "2"], "| 2 |"),
    "recipes.py": (["--folds", "2", "--recipes", "tiny", "--pack-size", "64", "--json", "{tmp}/r.json"], "tiny"),
    "scale.py": (["--sizes", "200", "--out", "{tmp}", "--actors", "1", "--epochs", "1"], "| 200 |"),
    "shift.py": (["--directions", "sample:sample", "--recipes", "tiny"], "| by museum | sample (all, unseen) |"),
    "score.py": (["--one-actor"], "Ray actors x1"),
    "synth.py": (["--works", "5", "--out", "{tmp}/synth"], "works.csv"),
    "train.py": (["--epochs", "1", "--image-size", "32", "--worker-counts", "1"], "Ray Train, 1 worker(s)"),
}


# Run at their smallest by bench/gpu.sh's rehearsal (tests/test_gpu_window.py), as the window runs them.
IN_THE_GPU_WINDOW = {"gpu_input.py", "gpu_model.py"}


def test_every_benchmark_has_a_smallest_run():
    scripts = {os.path.basename(path) for path in glob.glob(os.path.join(BENCH, "*.py"))} - {"common.py"}
    assert scripts == set(SMALLEST) | IN_THE_GPU_WINDOW


@pytest.mark.slow  # minutes in all: Ray clusters, training and scoring, at their smallest
@requires_sample
@pytest.mark.parametrize("script", sorted(SMALLEST))
def test_a_benchmark_runs_at_its_smallest_size(script, tmp_path):
    arguments, printed = SMALLEST[script]
    result = subprocess.run(
        [sys.executable, os.path.join(BENCH, script), *(a.replace("{tmp}", str(tmp_path)) for a in arguments)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert printed in result.stdout, result.stdout[-3000:]
