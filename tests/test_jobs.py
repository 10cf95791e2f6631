"""launch.py --address: artdate commands as Ray jobs on a two-node cluster, data in SeaweedFS."""

import subprocess
import sys

import pytest

from artdate.core import store
from artdate.model.checkpoints import run_checkpoints
from bench.scale import many_ranks
from tests.support.helpers import ROOT, flags, pack_sample, tiny_training

pytestmark = pytest.mark.slow


def launch(nodes, *argv, timeout=600):
    return subprocess.run(
        [sys.executable, "launch.py", "--address", nodes.dashboard_url, *argv],
        cwd=ROOT,
        env=nodes.environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def jobs_on(nodes):
    """How many jobs the cluster has seen (asked with the cluster's token settings)."""
    count = (
        "import sys; from ray.job_submission import JobSubmissionClient; "
        "print(len(JobSubmissionClient(sys.argv[1]).list_jobs()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", count, nodes.dashboard_url],
        env=nodes.environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return int(done.stdout.strip().splitlines()[-1])


def test_train_and_score_jobs_run_across_both_nodes(ray_nodes, s3_url):
    manifest = pack_sample(s3_url)
    root = s3_url.rsplit("/", 1)[0]
    storage, results = root + "/runs/job", root + "/results.csv"
    trained = launch(ray_nodes, "train", *flags(tiny_training(s3_url, storage, epochs=1, cpus_per_worker=2)))
    assert trained.returncode == 0, trained.stderr[-3000:] + trained.stdout[-3000:]
    assert "submitted raysubmit_" in trained.stderr
    assert trained.stdout.count("epoch 1/1: loss") == 1  # the job's logs streamed to this terminal, once
    assert "RayTrainWorker" not in trained.stdout and "Reporting training result" not in trained.stdout
    (metrics,) = run_checkpoints(storage).values()
    assert sorted(metrics["node_per_rank"]) == ["127.0.0.2", "127.0.0.3"]

    submitted = launch(
        ray_nodes,
        "--no-wait",
        "score",
        "--shards",
        s3_url,
        "--checkpoint",
        storage,
        "--out",
        results,
        "--actors",
        "2",
        "--cpus-per-actor",
        "2",
        "--quiet",
    )
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = submitted.stdout.strip()
    assert job_id.startswith("raysubmit_")
    followed = launch(ray_nodes, "logs", job_id)
    assert followed.returncode == 0 and f"scored {manifest['packed']} works" in followed.stdout
    status = launch(ray_nodes, "status", job_id)
    assert status.stdout.startswith(f"{job_id} SUCCEEDED")
    assert store.read_bytes(results).decode().count("\n") == manifest["packed"] + 1


def test_local_storage_on_a_multi_node_cluster_is_refused_before_submission(ray_nodes, tmp_path):
    before = jobs_on(ray_nodes)
    refused = launch(ray_nodes, "train", "--shards", str(tmp_path / "shards"), "--storage", "s3://bucket/run")
    assert refused.returncode == 2
    assert "storage must be shared (s3://)" in refused.stderr and f"--shards {tmp_path}/shards" in refused.stderr
    assert jobs_on(ray_nodes) == before


def test_a_failing_job_returns_its_exit_code(ray_nodes, s3_url):
    failed = launch(
        ray_nodes,
        "score",
        "--shards",
        s3_url + "/nothing-here",
        "--checkpoint",
        s3_url + "/none",
        "--out",
        s3_url + "/r.csv",
    )
    assert failed.returncode == 2  # artdate's exit code for bad input, passed through from the job
    assert "not a finished artdate store" in failed.stdout
    assert "FAILED" in failed.stderr


def test_an_unreachable_address_is_a_clear_error():
    unreachable = subprocess.run(
        [sys.executable, "launch.py", "--address", "http://127.0.0.9:9", "status", "x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unreachable.returncode == 3
    assert "cannot reach the Ray cluster at http://127.0.0.9:9" in unreachable.stderr


def test_ctrl_c_leaves_the_job_running_and_logs_follows_it(ray_nodes, s3_url, tiny_checkpoint, tmp_path):
    import os
    import signal
    import time

    manifest = pack_sample(s3_url, samples_per_shard=8)
    checkpoint = s3_url.rsplit("/", 1)[0] + "/checkpoint_tiny"
    for name in os.listdir(tiny_checkpoint):
        store.upload_file(os.path.join(tiny_checkpoint, name), store.join(checkpoint, name))
    results = s3_url.rsplit("/", 1)[0] + "/results.csv"
    errors = open(tmp_path / "stderr", "w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "launch.py",
            "--address",
            ray_nodes.dashboard_url,
            "score",
            "--shards",
            s3_url,
            "--checkpoint",
            checkpoint,
            "--out",
            results,
            "--actors",
            "1",
            "--quiet",
        ],
        cwd=ROOT,
        env=ray_nodes.environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )
    deadline = time.monotonic() + 120
    while "submitted raysubmit_" not in (tmp_path / "stderr").read_text():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(2)  # following the logs now
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 130
    said = (tmp_path / "stderr").read_text()
    job_id = said.split("submitted ")[1].split()[0]
    assert (
        f"{job_id} goes on; follow it with: python launch.py --address {ray_nodes.dashboard_url} logs {job_id}" in said
    )
    followed = launch(ray_nodes, "logs", job_id)  # no stdin: it was not stopped, it finishes
    assert followed.returncode == 0 and f"scored {manifest['packed']} works" in followed.stdout


def test_eight_ranks_with_fewer_validation_shards_than_ranks_validate_every_work_once(ray_nodes, s3_url):
    """bench/scale/many_ranks.py at 8 ranks (of 0.5 CPU) on this module's cluster, submitted through
    launch.py: 2 validation shards for 8 ranks, every rank trains, every validation work once."""
    outputs: list = []
    ((workers, _, fewest, most, _, val_n, val_samples, val_shards, ranks),) = rows = many_ranks.measure(
        ray_nodes, s3_url.rsplit("/", 1)[0], [8], outputs
    )
    assert val_shards < 8 and ranks == workers == 8
    assert 0 < fewest <= most <= fewest + 1  # balanced within one sample
    assert val_n == val_samples
    ((stdout, stderr),) = outputs
    assert "device: CPU, 8 worker(s)" in stdout + stderr
    assert "(RayTrainWorker pid=" in stdout  # --verbose: the workers' own output too
    assert "| 8 | 0.5 |" in many_ranks.table(rows)


def test_the_job_upload_holds_the_code_and_no_data_outputs_or_secrets(tmp_path, monkeypatch):
    """Compared with the zip Ray's own packaging makes from the same excludes."""
    import zipfile

    from ray._private.runtime_env.packaging import _zip_files

    from artdate import jobs

    checkout = tmp_path / "checkout"
    files = {
        "artdate/cli.py": "code",
        "launch.py": "code",
        "pyproject.toml": "[project]",
        "metadata/met-data.csv": "id,year",
        "my-works.csv": "id,year",
        ".env": "AWS_SECRET_ACCESS_KEY=x",
        "metadata/.env": "KEY=x",
        "shards/train-000000.tar": "data",
        "runs/r/checkpoint_1/checkpoint.pt": "weights",
        "results.csv": "id,pred",
        "demo-run/results.csv": "id,pred",
        "artdate/__pycache__/cli.pyc": "bytes",
        "notes/secret.txt": "mine",
    }
    for name, content in files.items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(content)
    monkeypatch.setattr(jobs, "ROOT", str(checkout))
    monkeypatch.chdir(checkout)
    excludes = jobs.upload_excludes(["pack", "--metadata", "my-works.csv", "--out", "s3://b/shards"])
    _zip_files(str(checkout), excludes, str(tmp_path / "job.zip"), include_gitignore=True)
    uploaded = sorted(zipfile.ZipFile(tmp_path / "job.zip").namelist())
    assert uploaded == ["artdate/cli.py", "launch.py", "metadata/met-data.csv", "my-works.csv", "pyproject.toml"]
    assert jobs.upload_size(str(checkout), excludes) == (5, sum(len(files[name]) for name in uploaded))
    excludes = jobs.upload_excludes(["train", "--shards", "s3://b/shards", "--storage", "s3://b/run"])
    assert "!/my-works.csv" not in excludes  # only a pack's own inputs travel with it


def test_every_storage_option_must_be_shared_and_options_are_never_abbreviated():
    from artdate.jobs import local_storage

    shared = ["--shards", "s3://b/shards", "--storage", "s3://b/run"]
    assert local_storage(["train", *shared]) == []
    assert local_storage(["train", *shared, "--weights", "imagenet"]) == []
    assert local_storage(["train", *shared, "--weights", "./r152.pt"]) == ["--weights ./r152.pt"]
    assert local_storage(["predict", "painting.jpg", "--checkpoint", "s3://b/run"]) == ["images painting.jpg"]
    several = ["predict", "https://x.org/a.jpg", "scans/", "--checkpoint", "s3://b/run", "--out", "dated.csv"]
    assert local_storage(several) == ["images scans/", "--out dated.csv"]
    assert local_storage(["predict", "https://x.org/a.jpg", "--checkpoint", "s3://b/run"]) == []
    assert local_storage(["report", "s3://b/results.csv", "--out", "report"]) == ["--out report"]
    assert local_storage(["demo"]) == ["--workdir demo-run"]  # the default counts too
    assert local_storage(["demo", "--workdir", "s3://b/d", "--data", "s3://b/art", "mine"]) == ["--data mine"]
    abbreviated = subprocess.run(
        [sys.executable, "launch.py", "train", *shared, "--weig", "./r152.pt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert abbreviated.returncode == 2 and "unrecognized arguments: --weig ./r152.pt" in abbreviated.stderr
