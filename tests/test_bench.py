"""Every benchmark under bench/ runs here at its smallest size, so none can rot unseen (a script
broken by a change of artdate's API costs a GPU lease, or a wrong figure in bench/RESULTS.md).
The figures of such small runs mean nothing: each test checks that the script ran to its end and
printed the rows it measures."""

import glob
import os
import subprocess
import sys

import pytest

from tests.support.helpers import ROOT, requires_sample

BENCH = os.path.join(ROOT, "bench")
# script under bench/, by group (speed, scale, quality) -> (its smallest arguments, a piece of what it
# prints at the end). {tmp}: a scratch folder.
SMALLEST = {
    "speed/checkpoint_upload.py": (["--backbones", "efficientnet_lite0", "--repeats", "1"], "efficientnet_lite0"),
    "speed/input_pipeline.py": (
        ["--copies", "1", "--loader-workers", "1", "--batch-size", "16", "--passes", "1"],
        "shards, S3, uint8",
    ),
    "speed/loader.py": (
        ["--copies", "1", "--workers", "0", "1", "--pack-sizes", "64", "--image-size", "32", "--batch", "32"],
        "| local | 64 | jpeg | 1 |",
    ),
    "speed/loader_start.py": (["--loader-workers", "1", "--passes", "2"], "forkserver"),
    "speed/pack_throughput.py": (["--copies", "1", "--size", "64"], "artdate pack --jobs 1"),
    "speed/ray_train_overhead.py": (
        ["--epochs", "1", "--image-size", "32", "--worker-counts", "1", "--loader-workers", "0"],
        "Ray Train, 1 worker(s)",
    ),
    "speed/scoring_actors.py": (["--one-actor"], "Ray actors x1"),
    "speed/shared_cores.py": (["--copies", "1", "--steps", "1", "--repeats", "1"], "no dashboard (artdate)"),
    "scale/comparanda_search.py": (["--sizes", "2000", "--queries", "20", "--dim", "32", "--nprobe", "4"], "nprobe 4"),
    "scale/fetch_soak.py": (["--works", "40", "--scale", "0.02"], "| all |"),
    "scale/growing_corpus.py": (
        ["--sizes", "200", "--out", "{tmp}", "--actors", "1", "--epochs", "1", "--loader-workers", "0"],
        "| 200 |",
    ),
    "scale/met_export.py": (["--rows", "2000"], "| 2,000 |"),
    "scale/museum_requests.py": (["--works", "3"], "hours for the 2017 lists"),
    "scale/synthetic_corpus.py": (["--works", "5", "--out", "{tmp}/synth"], "works.csv"),
    "quality/date_readers.py": ([], "| Met objectDate (recorded) | undate + artdate's layer |"),
    "quality/frozen.py": (
        ["--folds", "2", "--sizes", "64", "--sets", "sample", "--recipes", "l1"],
        "| sample | sample | 64",
    ),
    "quality/recipes.py": (
        ["--folds", "2", "--recipes", "tiny", "--pack-size", "64", "--json", "{tmp}/r.json"],
        "tiny",
    ),
    "quality/shift.py": (
        ["--directions", "sample:sample", "--recipes", "tiny"],
        "| by museum | sample (all, unseen) |",
    ),
}


# Run at their smallest by bench/gpu.sh's rehearsal (tests/test_gpu_window.py), as the window runs them.
IN_THE_GPU_WINDOW = {"speed/gpu_input.py", "speed/gpu_model.py"}
# Run by the tests that already start a two-node cluster (no second start): preempt.py's run without a
# notice by test_multinode.py, many_ranks.py at 8 ranks by test_jobs.py.
ON_THE_TESTS_CLUSTER = {"scale/preempt.py", "scale/many_ranks.py"}


def module_of(script: str) -> str:
    """speed/loader.py -> bench.speed.loader: each script runs as a module from the checkout's root."""
    return "bench." + script.removesuffix(".py").replace("/", ".")


def test_every_benchmark_has_a_smallest_run():
    scripts = {os.path.relpath(path, BENCH) for path in glob.glob(os.path.join(BENCH, "*", "*.py"))}
    scripts -= {"gpu/prepare.py"} | {path for path in scripts if path.endswith("__init__.py")}
    assert scripts == set(SMALLEST) | IN_THE_GPU_WINDOW | ON_THE_TESTS_CLUSTER
    assert not glob.glob(os.path.join(BENCH, "*", "*", "*.py"))  # a deeper script would escape the table


@pytest.mark.slow  # minutes in all: Ray clusters, training and scoring, at their smallest
@requires_sample
@pytest.mark.parametrize("script", sorted(SMALLEST))
def test_a_benchmark_runs_at_its_smallest_size(script, tmp_path):
    arguments, printed = SMALLEST[script]
    result = subprocess.run(
        [sys.executable, "-m", module_of(script), *(a.replace("{tmp}", str(tmp_path)) for a in arguments)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert printed in result.stdout, result.stdout[-3000:]
