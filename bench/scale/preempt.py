"""What losing a node costs a training run, with and without a preemption notice.

Real Ray on the two-node loopback cluster of the tests (one rank per node), the sample packed in
SeaweedFS, 2 epochs. Inside epoch 1, once rank 0 has trained --at steps, the worker node is lost
in one of three ways, and a replacement node joins at once:

- notice: `ray drain-node ... PREEMPTION` with an 8 s deadline; the node goes 3 s after it (the
  cloud takes it back; earlier, Ray counts an unexpected death). --max-failures 0.
- interval: no notice, SIGKILL; --checkpoint-every 0.1 (6 s) took checkpoints inside the epoch.
- none: no notice, SIGKILL; only the checkpoint at the end of epoch 0.

From the --key-log (each step's keys and time) and the checkpoints' metrics it prints, per way:
the samples trained and then lost (the resumed weights never saw them), their seconds as a share
of an epoch measured in the same run (the baseline), the time from Ray's taking the notice to the
registered checkpoint, and from the node's loss to the first resumed step.

    python -m bench.scale.preempt [--at 12] [--ways notice interval none]
"""

import argparse
import glob
import json
import os
import re
import statistics
import tempfile
import time

from bench.common import loopback_cluster
from tests.support.cluster_runs import start_training, two_node_training
from tests.support.helpers import LOADER_PROCESS, pack_sample, trained_in_epoch, wait_for_count, wait_for_registered
from tests.support.servers import RayNodes

DEADLINE_S = 8


def step_times(keys: str, epoch: int) -> list[tuple[int, list[tuple[int, float]]]]:
    """Rank 0's attempts at `epoch` in the order they ran: the step each started from, and its
    (step, time) entries. Two attempts can start from the same step (the epoch's start)."""
    attempts = []
    for path in glob.glob(os.path.join(keys, f"epoch{epoch}-from*-rank0-*.jsonl")):
        entries = [json.loads(line) for line in open(path)]
        if entries:
            attempts.append((int(re.search(r"-from(\d+)-", path).group(1)), [(e["step"], e["time"]) for e in entries]))
    return sorted(attempts, key=lambda attempt: attempt[1][0][1])


def samples_read(keys: str, epoch: int) -> int:
    """Samples every rank's every attempt of `epoch` trained on (a sample lost and trained again counts twice)."""
    paths = glob.glob(os.path.join(keys, f"epoch{epoch}-from*-rank*.jsonl"))
    return sum(len(json.loads(line)["keys"]) for path in paths for line in open(path))


def wait_for_step(keys: str, epoch: int, step: int, still_running, timeout: float = 300) -> None:
    """Until rank 0 has trained step `step` of `epoch`."""

    def reached() -> int:
        return max((s for _, steps in step_times(keys, epoch) for s, _ in steps), default=-1)

    wait_for_count(reached, step, still_running, timeout)


def lose_node(nodes: RayNodes, way: str, storage: str, still_running) -> dict:
    """Lose the worker node `way`: when it was lost (time.time()) and, with a notice, the seconds
    from the notice to the registered preemption checkpoint."""
    registered = None
    if way == "notice":
        node = nodes.worker_node_id()
        sent = time.monotonic()
        nodes.drain_worker(node, DEADLINE_S, "spot reclaim (bench)")
        noticed = time.monotonic()  # Ray has the notice (the CLI's own start took most of the wait)
        wait_for_registered(storage, '"reason":"preemption"', still_running, timeout=DEADLINE_S)
        registered = time.monotonic() - noticed
        time.sleep(max(0.0, sent + DEADLINE_S + 3 - time.monotonic()))  # as the test does
    lost_at = time.time()
    nodes.kill_worker()
    nodes.start_worker()
    return {"lost_at": lost_at, "notice_to_checkpoint_s": registered}


def one_run(nodes: RayNodes, s3_url: str, way: str, at: int, work: str, batch_size: int) -> dict:
    from artdate.model.checkpoints import run_checkpoints

    storage = s3_url.rsplit("/", 1)[0] + f"/runs/{way}"
    keys = os.path.join(work, way)
    settings = two_node_training(
        s3_url,
        storage,
        epochs=2,
        batch_size=batch_size,
        workers="2",
        keep_checkpoints=20,
        max_failures=0 if way == "notice" else 1,
        max_preemptions=2,
        preemption_poll_steps=1,
        checkpoint_every=0.1 if way == "interval" else 0.0,
        key_log=keys,
        **LOADER_PROCESS,
    )
    driver = start_training(nodes, settings)
    wait_for_registered(storage, '"epoch":0', lambda: driver.poll() is None)
    wait_for_step(keys, 1, at, lambda: driver.poll() is None)
    loss = lose_node(nodes, way, storage, lambda: driver.poll() is None)
    out, err = driver.communicate(timeout=900)
    if driver.returncode != 0:
        raise RuntimeError(f"{way}: the run failed\n{err[-3000:]}")

    ((_, epoch0),) = step_times(keys, 0)
    epoch_s = (epoch0[-1][1] - epoch0[0][1]) * len(epoch0) / (len(epoch0) - 1)  # step to step, n steps
    resumed_from, resumed = step_times(keys, 1)[-1]
    kept, _ = trained_in_epoch(keys, 1)
    lost_samples = samples_read(keys, 1) - len(kept)  # trained, then lost with the node
    kinds = [m["reason"] for m in run_checkpoints(storage).values()]
    return {
        "way": way,
        "steps_per_epoch": len(epoch0),
        "samples_per_epoch": samples_read(keys, 0),
        "epoch_s": epoch_s,
        "resumed_at_step": resumed_from,
        "lost_samples": lost_samples,
        "lost_s": lost_samples * epoch_s / samples_read(keys, 0),
        "notice_to_checkpoint_s": loss["notice_to_checkpoint_s"],
        "loss_to_resumed_step_s": resumed[0][1] - loss["lost_at"],
        "checkpoints": {kind: kinds.count(kind) for kind in sorted(set(kinds))},
    }


def table(rows: list[dict], at: int, batch_size: int) -> str:
    lines = [
        f"\nlost at rank 0's step {at} of epoch 1; global batch {2 * batch_size}; deadline {DEADLINE_S} s",
        "| way | samples lost | lost s | lost / epoch | notice -> checkpoint s | loss -> resumed step s | epoch s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        notice = f"{r['notice_to_checkpoint_s']:.1f}" if r["notice_to_checkpoint_s"] is not None else "-"
        lines.append(
            f"| {r['way']} | {r['lost_samples']} of {r['samples_per_epoch']} | {r['lost_s']:.1f}"
            f" | {r['lost_s'] / r['epoch_s']:.2f}x | {notice} | {r['loss_to_resumed_step_s']:.1f}"
            f" | {r['epoch_s']:.1f} |"
        )
    lines.append(f"median epoch {statistics.median(r['epoch_s'] for r in rows):.1f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--at", type=int, default=12, help="rank 0's step of epoch 1 at which the node is lost")
    parser.add_argument("--ways", nargs="+", default=["notice", "interval", "none"])
    parser.add_argument("--batch-size", type=int, default=4, help="per worker (2 workers): a global batch of twice it")
    args = parser.parse_args()

    rows = []
    with loopback_cluster("preempt") as (bucket, nodes), tempfile.TemporaryDirectory() as work:
        s3_url = f"{bucket}/shards"
        pack_sample(s3_url)
        for way in args.ways:
            rows.append(one_run(nodes, s3_url, way, args.at, work, args.batch_size))
            print(json.dumps(rows[-1]), flush=True)

    print(table(rows, args.at, args.batch_size))


if __name__ == "__main__":
    main()
