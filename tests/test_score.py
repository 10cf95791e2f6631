"""Batch scoring with a pool of Ray actors on a real local Ray."""

import csv
import json
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time

import numpy as np
import pytest
import torch

from artdate.core.config import PredictConfig, ScoreConfig
from artdate.core.placement import ClusterTooSmall
from artdate.data import partition, pipeline, shards
from artdate.model.checkpoints import load_checkpoint
from artdate.model.network import predict_years
from artdate.score.predict import predict_images
from artdate.score.run import run_scoring
from artdate.score.score_parts import CLAIM_FILE, COLUMNS
from tests.support.helpers import (
    ROOT,
    SAMPLE_IMAGES,
    alive_actors,
    artdate_command,
    flags,
    pack_sample,
    parts_kept,
    read_rows,
    wait_for_count,
)
from tests.support.servers import kill_session

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def start_score_command(store_url, checkpoint, out, **popen):
    """`artdate score` with one actor, as a user would start it, in a process of its own. One image
    per batch keeps the tiny model busy long enough for a test to act mid-run on a fast machine."""
    settings = dict(shards=store_url, checkpoint=checkpoint, out=out, actors=1, batch_size=1, quiet=True)
    command = artdate_command("score", *flags(settings))
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, **{"stderr": subprocess.DEVNULL, **popen})


def expected_predictions(store_url, checkpoint, embedded=None):
    """Plain single-process predictions: key -> (year, calibrated low, high); with a dict
    `embedded`, key -> the embedding the year head read."""
    model, spec, info = load_checkpoint(checkpoint)
    manifest = shards.read_manifest(store_url)
    loader = pipeline.make_loader(
        partition.store_slices(store_url, manifest), pipeline.eval_transform(spec.image_size), 32, loader_workers=0
    )
    found = {}
    for batch in loader:
        features = []
        predicted = predict_years(
            model, spec, batch.image, torch.device("cpu"), info["calibration"], features, batch.museum
        )
        found.update(zip(batch.key, zip(predicted.year.tolist(), predicted.low.tolist(), predicted.high.tolist())))
        if embedded is not None:
            embedded.update(zip(batch.key, features[0].numpy()))
    return found


def check_neighbours_against_brute_force(out, rows, embedded):
    """Each work's 5 neighbours are the 5 training works of largest cosine similarity, itself left out."""
    with open(out[: -len(".csv")] + ".neighbours.csv") as f:
        listed = list(csv.DictReader(f))
    train = [r for r in rows if r["split"] == "train"]
    train_keys = [r["key"] for r in train]
    reference = np.stack([embedded[k] for k in train_keys])
    by_key = {}
    for n in listed:
        by_key.setdefault(n["key"], []).append(n)
    assert set(by_key) == {r["key"] for r in rows} and all(len(v) == 5 for v in by_key.values())
    same = 0
    for row in rows:
        similarity = reference @ embedded[row["key"]]
        if row["key"] in train_keys:
            similarity[train_keys.index(row["key"])] = -np.inf
        best = np.argsort(-similarity)[:5]
        found = by_key[row["key"]]
        assert [int(n["rank"]) for n in found] == [1, 2, 3, 4, 5]
        assert [float(n["similarity"]) for n in found] == pytest.approx(similarity[best].tolist(), abs=5e-3)
        assert all((n["neighbour_museum"], n["neighbour_id"]) != (row["museum"], row["id"]) for n in found)
        same += {(n["neighbour_museum"], n["neighbour_id"]) for n in found} == {
            (train[i]["museum"], train[i]["id"]) for i in best
        }
    assert same >= 0.95 * len(rows)  # float16 embeddings may swap a near tie at rank 5


def test_two_actors_score_every_work_once_and_match_a_plain_loop(tmp_path, sample_store, tiny_checkpoint):
    out = str(tmp_path / "results.csv")
    summary = run_scoring(
        ScoreConfig(shards=sample_store, checkpoint=tiny_checkpoint, out=out, actors=2), progress=False
    )
    rows = read_rows(out)
    manifest = shards.read_manifest(sample_store)
    assert list(rows[0]) == COLUMNS
    assert len(rows) == len({(r["museum"], r["id"]) for r in rows}) == manifest["packed"] == summary["rows"]
    embedded = {}
    expected = expected_predictions(sample_store, tiny_checkpoint, embedded)
    check_neighbours_against_brute_force(out, rows, embedded)
    # predict finds a training work's own image as its nearest comparandum, then the works score listed.
    work = next(r for r in rows if r["split"] == "train" and r["museum"] == "aic")
    image = os.path.join(SAMPLE_IMAGES, f"{work['museum']}_{work['id']}.jpg")
    ((predicted,), _, _) = predict_images(PredictConfig(images=(image,), checkpoint=tiny_checkpoint, comparanda=out))
    nearest = predicted.nearest
    assert (nearest[0]["neighbour_museum"], nearest[0]["neighbour_id"]) == ("aic", work["id"])
    assert nearest[0]["similarity"] > 0.99
    with open(out[: -len(".csv")] + ".neighbours.csv") as f:
        listed = [n["neighbour_id"] for n in csv.DictReader(f) if n["key"] == work["key"]]
    assert [n["neighbour_id"] for n in nearest[1:]] == listed[:4]
    for row in rows:
        year, low, high = expected[row["key"]]
        assert float(row["pred"]) == pytest.approx(year, abs=0.06)
        assert (int(row["pred_low"]), int(row["pred_high"])) == (round(low), round(high)) and low < high
        assert float(row["range_level"]) == 0.8
        assert float(row["diff"]) == pytest.approx(float(row["pred"]) - int(row["year"]), abs=0.11)
        assert row["split"] in ("train", "val") and row["shard"].endswith(".tar") and float(row["spread"]) > 0
    assert not os.path.exists(out + ".parts")

    # Only the validation split, with JPEGs decoded where the model runs (nvJPEG on a GPU; here the
    # same code on the CPU) and read by a loader process: the same predictions as before.
    val_only = str(tmp_path / "val.csv")
    run_scoring(
        ScoreConfig(
            shards=sample_store,
            checkpoint=tiny_checkpoint,
            out=val_only,
            split="val",
            decode_on="device",
            loader_workers=1,
        ),
        progress=False,
    )
    assert {r["split"] for r in read_rows(val_only)} == {"val"}
    assert not os.path.exists(str(tmp_path / "val.neighbours.csv"))  # no training works to compare with
    assert len(read_rows(val_only)) == manifest["splits"]["val"]["samples"]
    by_key = {r["key"]: r["pred"] for r in rows}
    assert all(r["pred"] == by_key[r["key"]] for r in read_rows(val_only))


def test_a_scorer_decodes_the_next_batch_off_its_own_thread(sample_store, tiny_checkpoint, monkeypatch):
    """A GPU actor must not wait on JPEG decoding: the loader runs in a thread of its own while
    the model scores the batch before. Every sample still comes back once, in shard order."""
    from artdate.score.run import Scorer

    decoding_threads = set()
    decode = pipeline.decode_image
    monkeypatch.setattr(
        pipeline, "decode_image", lambda jpg: decoding_threads.add(threading.get_ident()) or decode(jpg)
    )
    manifest = shards.read_manifest(sample_store)
    shard = manifest["shards"][0]
    url = partition.store_slices(sample_store, manifest)[0].url
    rows, skips, features = Scorer(tiny_checkpoint, batch_size=4).score(url, shard["samples"], shard["split"])
    assert features.shape == (len(rows), 1280) and np.allclose(
        np.linalg.norm(features.astype(np.float32), axis=1), 1, atol=1e-2
    )
    assert decoding_threads and threading.get_ident() not in decoding_threads
    keys = [sample["__key__"] for sample in pipeline.read_slice(partition.Slice(url, 0, shard["samples"]))]
    assert [row["key"] for row in rows] == keys and len(keys) == shard["samples"] and not skips


def test_a_killed_actor_is_replaced_and_the_file_is_complete(tmp_path, tiny_checkpoint, capfd):
    store_url = str(tmp_path / "shards")
    manifest = pack_sample(store_url, samples_per_shard=8)
    out = str(tmp_path / "results.csv")
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.update(
            summary=run_scoring(
                ScoreConfig(shards=store_url, checkpoint=tiny_checkpoint, out=out, actors=2), progress=False
            )
        )
    )
    thread.start()
    wait_for_count(lambda: parts_kept(out), 3, thread.is_alive)  # kill mid-run: some shards done, most still to come
    (victim, *_) = alive_actors("Scorer")
    os.kill(victim, signal.SIGKILL)
    thread.join(180)
    assert "summary" in outcome
    rows = read_rows(out)
    assert len(rows) == len({r["key"] for r in rows}) == manifest["packed"]
    assert "actor died while scoring" in capfd.readouterr().err


def test_rerun_after_an_interruption_scores_only_what_is_missing(tmp_path, tiny_checkpoint):
    store_url = str(tmp_path / "shards")
    manifest = pack_sample(store_url, samples_per_shard=8)
    out = str(tmp_path / "results.csv")
    process = start_score_command(store_url, tiny_checkpoint, out)
    wait_for_count(lambda: parts_kept(out), 3, lambda: process.poll() is None)
    parts = out + ".parts"
    process.send_signal(signal.SIGINT)  # Ctrl-C
    process.wait(60)
    assert not os.path.exists(out)
    kept = len([n for n in os.listdir(parts) if n.endswith(".tar.csv")])
    summary = run_scoring(ScoreConfig(shards=store_url, checkpoint=tiny_checkpoint, out=out, actors=2), progress=False)
    assert summary["scored_now"] == len(manifest["shards"]) - kept
    rows = read_rows(out)
    assert len(rows) == len({r["key"] for r in rows}) == manifest["packed"]


def test_clear_errors(tmp_path, sample_store, tiny_checkpoint):
    out = str(tmp_path / "r.csv")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        run_scoring(ScoreConfig(shards=sample_store, checkpoint=str(tmp_path / "nothing"), out=out), progress=False)
    with pytest.raises(FileNotFoundError, match="not a finished artdate store"):
        run_scoring(ScoreConfig(shards=str(tmp_path), checkpoint=tiny_checkpoint, out=out), progress=False)
    # A corrupt shard: the others are kept, the command fails naming it, and a rerun with the shard
    # repaired scores only that shard.
    store_url = str(tmp_path / "shards")
    manifest = pack_sample(store_url, samples_per_shard=100)
    broken = os.path.join(store_url, manifest["shards"][0]["name"])
    shutil.copy(broken, tmp_path / "good.tar")
    with open(broken, "r+b") as f:
        f.truncate(os.path.getsize(broken) // 3)
    with pytest.raises(ValueError, match=rf"{manifest['shards'][0]['name']}: \d+ of \d+ samples readable"):
        run_scoring(ScoreConfig(shards=store_url, checkpoint=tiny_checkpoint, out=out), progress=False)
    kept = os.listdir(out + ".parts")  # the good parts, their embeddings, and _run.json
    assert (
        sum(n.endswith(".tar.csv") for n in kept)
        == sum(n.endswith(".features.npy") for n in kept)
        == len(manifest["shards"]) - 1
        and "_run.json" in kept
    )
    shutil.copy(tmp_path / "good.tar", broken)
    summary = run_scoring(ScoreConfig(shards=store_url, checkpoint=tiny_checkpoint, out=out), progress=False)
    assert summary["scored_now"] == 1 and summary["rows"] == manifest["packed"]


def test_more_actors_than_the_cluster_can_place_score_with_those_that_started(
    tmp_path, sample_store, tiny_checkpoint, capfd, monkeypatch
):
    from artdate.score import run as score

    monkeypatch.setattr(score, "WAIT_REPORT_SECONDS", 1)
    out = str(tmp_path / "results.csv")
    # 4 actors of 1 CPU on this 2-CPU Ray: two can never be placed. Before, their shards waited forever.
    summary = run_scoring(
        ScoreConfig(shards=sample_store, checkpoint=tiny_checkpoint, out=out, actors=4), progress=False
    )
    assert summary["rows"] == len({r["key"] for r in read_rows(out)}) == shards.read_manifest(sample_store)["packed"]
    assert "of 4 scoring actor(s) (1 CPU each) are waiting for the cluster to place them" in capfd.readouterr().err

    # An actor this Ray (started here: it cannot grow) can never place fails at once, not after
    # --start-timeout (900 s as shipped).
    started = time.monotonic()
    with pytest.raises(
        ClusterTooSmall,
        match=r"asked for 1 scoring actor\(s\) x 64 CPU, but the local Ray .*: 0 fit; lower --cpus-per-actor",
    ):
        run_scoring(
            ScoreConfig(
                shards=sample_store, checkpoint=tiny_checkpoint, out=str(tmp_path / "never.csv"), cpus_per_actor=64
            ),
            progress=False,
        )
    assert time.monotonic() - started < 60


def corrupt_last_image(shard_path):
    """Replace the JPEG of a shard's last sample by garbage, keeping the sample (and the count)."""
    with tarfile.open(shard_path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    by_key = {}
    for name, payload in members:
        key, extension = name.rsplit(".", 1)
        by_key.setdefault(key, {})[extension] = payload
    keys = list(by_key)
    by_key[keys[-1]]["jpg"] = b"this is not a jpeg"
    shards.write_tar(shard_path, ((k, by_key[k]["jpg"], json.loads(by_key[k]["json"])) for k in keys))
    return keys[-1]


def test_an_undecodable_sample_is_recorded_and_the_run_completes(tmp_path, tiny_checkpoint):
    store_url = str(tmp_path / "shards")
    manifest = pack_sample(store_url, samples_per_shard=50)
    shard = os.path.join(store_url, manifest["shards"][0]["name"])
    bad_key = corrupt_last_image(shard)  # the last sample of its shard: its skip used to go uncounted
    out = str(tmp_path / "results.csv")
    summary = run_scoring(ScoreConfig(shards=store_url, checkpoint=tiny_checkpoint, out=out, actors=1), progress=False)
    rows = read_rows(out)
    assert summary["rows"] == len(rows) == manifest["packed"] - 1 and summary["unreadable"] == 1
    assert bad_key not in {r["key"] for r in rows}
    (skip,) = read_rows(str(tmp_path / "results.skipped.csv"))
    assert skip["key"] == bad_key and skip["shard"] == shard and "undecodable" in skip["reason"]


def test_a_crash_during_clean_up_leaves_parts_that_still_name_their_checkpoint(
    tmp_path, sample_store, tiny_checkpoint, monkeypatch
):
    from artdate.core import store

    out = str(tmp_path / "results.csv")
    deleted, real_delete = [], store.delete

    def crash_after_two_parts(url):
        if url.startswith(out + ".parts") and len(deleted) == 2:
            raise KeyboardInterrupt  # the driver dies half-way through removing the parts
        deleted.append(url)
        real_delete(url)

    monkeypatch.setattr(store, "delete", crash_after_two_parts)
    with pytest.raises(KeyboardInterrupt):
        run_scoring(ScoreConfig(shards=sample_store, checkpoint=tiny_checkpoint, out=out, actors=1), progress=False)
    assert os.path.exists(os.path.join(out + ".parts", CLAIM_FILE))
    monkeypatch.undo()
    other = os.path.join(os.path.dirname(tiny_checkpoint), "checkpoint_other")
    shutil.copytree(tiny_checkpoint, other)
    with pytest.raises(ValueError, match="holds partial results of"):
        run_scoring(ScoreConfig(shards=sample_store, checkpoint=other, out=out, actors=1), progress=False)


def test_the_driver_killed_with_its_ray_then_rerun(tmp_path, tiny_checkpoint):
    store_url = str(tmp_path / "shards")
    manifest = pack_sample(store_url, samples_per_shard=8)
    out = str(tmp_path / "results.csv")
    # Its own session: SIGKILL to every process in it takes the driver and the Ray it started, as a lost machine would.
    process = start_score_command(store_url, tiny_checkpoint, out, start_new_session=True)
    wait_for_count(lambda: parts_kept(out), 3, lambda: process.poll() is None)
    kill_session(process)
    assert not os.path.exists(out)
    summary = run_scoring(ScoreConfig(shards=store_url, checkpoint=tiny_checkpoint, out=out, actors=2), progress=False)
    assert 0 < summary["scored_now"] < len(manifest["shards"])
    rows = read_rows(out)
    assert len(rows) == len({r["key"] for r in rows}) == manifest["packed"]


def test_a_second_score_into_the_same_out_is_refused_while_the_first_runs(tmp_path, tiny_checkpoint):
    from artdate.core.lease import LeaseHeld

    store_url = str(tmp_path / "shards")
    manifest = pack_sample(store_url, samples_per_shard=8)
    out = str(tmp_path / "results.csv")
    first = start_score_command(store_url, tiny_checkpoint, out, stderr=subprocess.PIPE, text=True)
    wait_for_count(lambda: parts_kept(out), 1, lambda: first.poll() is None)
    parts = out + ".parts"
    # Before, both scored everything and the first to finish deleted the other's parts.
    with pytest.raises(LeaseHeld, match=rf"another run \(pid {first.pid} on .*\) is writing --out {out}"):
        run_scoring(ScoreConfig(shards=store_url, checkpoint=tiny_checkpoint, out=out, actors=1), progress=False)
    assert first.wait(180) == 0, first.stderr.read()[-2000:]
    rows = read_rows(out)
    assert len(rows) == len({r["key"] for r in rows}) == manifest["packed"]
    assert not os.path.exists(parts)
