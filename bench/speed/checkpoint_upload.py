"""What a checkpoint costs the training step loop, to decide whether Ray Train's ASYNC upload pays.

A checkpoint is rank 0's local write (artdate's save_checkpoint: weights, AdamW state, metrics)
and then the upload to the run's storage, done the way Ray Train does it (pyarrow copy_files
with the run's filesystem) into SeaweedFS on loopback. With CheckpointUploadMode.SYNC (artdate
today) the loop waits for both; with ASYNC it waits for the local write only. The figures are
ratios to the local write measured in the same run, per backbone, with the share of a
15-minute --checkpoint-every interval that each mode stalls.

    python -m bench.speed.checkpoint_upload [--backbones resnet152 efficientnet_lite0] [--repeats 3]
"""

import argparse
import os
import statistics
import tempfile
import time

import torch

from artdate.core import store
from artdate.core.config import TrainConfig
from artdate.model import ranges
from artdate.model.checkpoints import save_checkpoint
from artdate.model.network import LabelEncoding, ModelSpec, build_model
from artdate.train.loop import make_optimizer

INTERVAL_S = 15 * 60  # the --checkpoint-every of cluster/kuberay/rayjob.yaml


def trained_state(backbone: str):
    """A model and an AdamW optimizer after one step (so the optimizer holds its two moments)."""
    encoding = LabelEncoding(loss="bins", bin_width=50)
    spec = ModelSpec(backbone, 64, encoding, pack_size=384, pack_quality=90)
    model = build_model(backbone, encoding.num_outputs, weights="none")
    optimizer = make_optimizer(model, TrainConfig(shards="", storage=""))
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    return spec, model, optimizer


def one_checkpoint(spec, model, optimizer, filesystem, prefix: str) -> tuple[float, float, int]:
    """(seconds to write it locally, seconds to upload it, bytes)."""
    import pyarrow.fs

    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        training_state = {"optimizer": optimizer.state_dict(), "epoch": 0, "inside_epoch": None}
        calibration = ranges.RangeCalibration(level=0.8, margin=0.0, n=0)
        save_checkpoint(directory, spec, model, {"epoch": 0}, calibration, training_state)
        written = time.perf_counter()
        pyarrow.fs.copy_files(directory, prefix, destination_filesystem=filesystem)
        uploaded = time.perf_counter()
        size = sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))
    return written - started, uploaded - written, size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet152", "efficientnet_lite0"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from tests.support.servers import SeaweedS3

    s3 = SeaweedS3().start()
    os.environ.update(s3.environment())
    try:
        s3.make_bucket("bench")
        filesystem, path = store.pyarrow_filesystem("s3://bench/runs")
        print(
            "| backbone | checkpoint MB | local write s | upload s | SYNC stall / write | ASYNC stall / write "
            "| SYNC share of 15 min | ASYNC share |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for backbone in args.backbones:
            spec, model, optimizer = trained_state(backbone)
            runs = [
                one_checkpoint(spec, model, optimizer, filesystem, f"{path}/{backbone}-{n}")
                for n in range(args.repeats)
            ]
            write = statistics.median(r[0] for r in runs)
            upload = statistics.median(r[1] for r in runs)
            size_mb = runs[0][2] / 1e6
            sync, async_ = write + upload, write
            print(
                f"| {backbone} | {size_mb:.0f} | {write:.2f} | {upload:.2f} | {sync / write:.2f}x | 1.00x "
                f"| {sync / INTERVAL_S:.2%} | {async_ / INTERVAL_S:.2%} |"
            )
    finally:
        s3.stop()


if __name__ == "__main__":
    main()
