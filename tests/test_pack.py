import csv
import io
import json
import os
import signal
import subprocess
import tarfile
import time

import pytest
import webdataset as wds

from artdate.core import store
from artdate.core.config import PackConfig
from artdate.data import shards
from artdate.data.pipeline import register_s3
from artdate.pack.metadata import read_metadata
from artdate.pack.run import run_pack
from tests.support.helpers import (
    ROOT,
    SAMPLE_CSV,
    SAMPLE_IMAGES,
    SHARED_SAMPLE,
    artdate_command,
    flags,
    need_sample,
    pack_sample,
    requires_sample,
    run_artdate,
    wait_for_count,
)
from tests.support.museums import MuseumApi, have_fixtures, sample_images


def read_with_tarfile(url, manifest):
    """key -> labels, from every shard named in the manifest, with plain tarfile."""
    samples = {}
    for entry in manifest["shards"]:
        data = store.read_bytes(store.join(url, entry["name"]))
        assert len(data) == entry["bytes"]
        assert shards.hashlib.sha256(data).hexdigest() == entry["sha256"]
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = tar.getmembers()
            names = {m.name for m in members}
            keys = {name.split(".", 1)[0] for name in names}
            assert names == {f"{k}.{ext}" for k in keys for ext in ("jpg", "json")}
            assert len(keys) == entry["samples"]
            for key in keys:
                labels = json.load(tar.extractfile(f"{key}.json"))
                assert labels["split"] == entry["split"]
                assert key not in samples, f"{key} appears twice"
                samples[key] = labels
    return samples


def check_round_trip(url, manifest, expected_works):
    samples = read_with_tarfile(url, manifest)
    assert samples.keys() == {w.key for w in expected_works}
    for work in expected_works:
        assert samples[work.key]["year"] == work.year
        assert samples[work.key]["id"] == work.id and samples[work.key]["museum"] == work.museum
    register_s3()
    urls = shards.shard_urls(url, manifest)
    decoded = list(
        wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil").to_tuple("__key__", "jpg", "json")
    )
    assert sorted(k for k, _, _ in decoded) == sorted(samples)
    assert all(min(image.size) <= 96 for _, image, _ in decoded)
    assert manifest["packed"] == len(expected_works)
    assert manifest["splits"]["train"]["samples"] + manifest["splits"]["val"]["samples"] == len(expected_works)
    return samples


def test_round_trip_local(tmp_path):
    out = str(tmp_path / "store")
    manifest = pack_sample(out, samples_per_shard=40)
    works = read_metadata([SAMPLE_CSV], year_min=-1000, year_max=2100).works
    check_round_trip(out, manifest, works)
    assert manifest["rejected"] == 0
    assert len(manifest["shards"]) == 8  # ceil(~265 / 40) train + 1 val
    assert manifest["labels"]["train"]["count"] == manifest["splits"]["train"]["samples"]
    assert not any(".partial-" in name for name in os.listdir(out))
    assert sorted(os.listdir(out)) == sorted(
        [s["name"] for s in manifest["shards"]] + ["_pack", "manifest.json", "rejects.csv"]
    )


def test_round_trip_s3_with_parallel_encoding(s3_url):
    manifest = pack_sample(s3_url, jobs=2, samples_per_shard=64)
    works = read_metadata([SAMPLE_CSV], year_min=-1000, year_max=2100).works
    check_round_trip(s3_url, manifest, works)
    assert shards.read_manifest(s3_url)["fingerprint"] == manifest["fingerprint"]
    # The shuffle mixes museums and centuries: each full shard holds several of both (a short
    # last shard of a few works can come from one museum by chance).
    for entry in (e for e in manifest["shards"] if e["samples"] >= 30):
        with tarfile.open(fileobj=io.BytesIO(store.read_bytes(store.join(s3_url, entry["name"])))) as tar:
            labels = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
        assert len({label["museum"] for label in labels}) > 1 and len({label["year"] // 100 for label in labels}) > 2


def test_default_year_window_and_shard_size(tmp_path):
    manifest = pack_sample(str(tmp_path / "s"), year_min=1200, year_max=1930, samples_per_shard=1000)
    assert manifest["packed"] + manifest["out_of_window"] == 300
    assert manifest["out_of_window"] > 0
    assert manifest["labels"]["all"]["min"] >= 1200 and manifest["labels"]["all"]["max"] <= 1930
    assert [s["name"] for s in manifest["shards"]] == ["train-000000.tar", "val-000000.tar"]


@requires_sample
def test_bad_images_are_skipped_and_recorded(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    good = open(os.path.join(SAMPLE_IMAGES, "aic_866.jpg"), "rb").read()
    (images / "good.jpg").write_bytes(good)
    (images / "empty.jpg").write_bytes(b"")
    (images / "truncated.jpg").write_bytes(good[:2000])
    (images / "text.jpg").write_bytes(b"hello")
    metadata = tmp_path / "works.csv"
    metadata.write_text("id,year\ngood,1600\nempty,1600\ntruncated,1600\ntext,1600\nmissing,1600\nbad,16x0\n")
    out = str(tmp_path / "store")
    manifest = run_pack(
        PackConfig(metadata=(str(metadata),), out=out, images=str(images), museum="met", skip_bad_rows=True, jobs=1),
        progress=False,
    )
    assert manifest["packed"] == 1 and manifest["rejected"] == 5
    with open(os.path.join(out, "rejects.csv")) as f:
        rows = list(csv.DictReader(f))
    rejects = {row["id"]: (row["stage"], row["reason"]) for row in rows}
    where = {row["id"]: row["where"] for row in rows}
    assert rejects["empty"] == ("decode", "empty file")
    assert rejects["text"] == ("decode", "not an image")
    assert rejects["truncated"][1].startswith("corrupt or truncated image")
    assert rejects["missing"][0] == "fetch" and "missing.jpg" in rejects["missing"][1]
    assert rejects["bad"] == ("metadata", "year '16x0' is not a number")
    assert where == {
        name: f"{metadata}:{line}" for line, name in enumerate(["empty", "truncated", "text", "missing", "bad"], 3)
    }


def test_a_read_error_that_may_pass_is_transient_and_a_missing_file_final(tmp_path):
    from PIL import Image

    (tmp_path / "a-folder.jpg").mkdir()
    Image.new("RGB", (40, 30), (90, 60, 30)).save(tmp_path / "good.jpg")
    metadata = tmp_path / "works.csv"
    # /proc/self/mem answers a read at offset 0 with EIO: a real I/O error, as a failing disk or a
    # network mount gives, which the next run may not meet.
    metadata.write_text(
        "id,year,file\nio,1600,/proc/self/mem\nfolder,1600,a-folder.jpg\nmissing,1600,gone.jpg\ngood,1600,good.jpg\n"
    )
    out = str(tmp_path / "store")
    manifest = run_pack(PackConfig(metadata=(str(metadata),), out=out, museum="met", jobs=1), progress=False)
    with open(os.path.join(out, "rejects.csv")) as f:
        rejects = {row["id"]: row for row in csv.DictReader(f)}
    assert {i: row["transient"] for i, row in rejects.items()} == {"io": "yes", "folder": "", "missing": ""}
    assert "Input/output error" in rejects["io"]["reason"] and manifest["transient"] == 1


def test_rerun_of_a_finished_pack_does_nothing_and_other_settings_are_refused(tmp_path):
    out = str(tmp_path / "store")
    first = pack_sample(out, samples_per_shard=40)
    mtimes = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out) if name.endswith(".tar")}
    again = pack_sample(out, samples_per_shard=40)
    assert again["shards"] == first["shards"]
    assert mtimes == {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in mtimes}
    with pytest.raises(ValueError, match="holds a pack of other metadata or settings"):
        pack_sample(out, samples_per_shard=40, size=128)


@pytest.mark.skipif(not have_fixtures(), reason="needs ../shared/museum-fixtures and ../shared/artworks-sample")
def test_interrupted_pack_resumes_without_refetching(tmp_path, s3_url):
    images = sample_images(60)
    api = MuseumApi(images).start()
    try:
        metadata = tmp_path / "met.csv"
        metadata.write_text("id,year\n" + "".join(f"{i},{1500 + n}\n" for n, i in enumerate(images)))
        settings = dict(metadata=metadata, out=s3_url, source="met", api_url=f"met={api.root('met')}", rate=40)
        command = artdate_command(
            "pack", *flags({**settings, "samples_per_shard": 6, "size": 64, "jobs": 1, "quiet": True})
        )
        # A SIGKILL leaves pack no chance to remove its scratch files: they go in the test's own folder.
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        process = subprocess.Popen(command, env={**os.environ, "TMPDIR": str(scratch)})
        records = store.join(s3_url, "_pack")

        def finished() -> int:
            return sum(n.endswith(".tar.json") for n in store.list_names(records))

        wait_for_count(finished, 3, lambda: process.poll() is None, timeout=60)  # then interrupt pack
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not store.exists(store.join(s3_url, "manifest.json"))
        finished = [n[: -len(".json")] for n in store.list_names(records) if n.endswith(".tar.json")]
        fetched_before = api.count("/met-images/")

        api.requests.clear()
        manifest = run_pack(
            PackConfig(
                metadata=(str(metadata),),
                out=s3_url,
                source="met",
                api_url=(f"met={api.root('met')}",),
                rate=40,
                samples_per_shard=6,
                size=64,
                jobs=1,
            ),
            progress=False,
        )
        # Nothing of the finished shards was fetched again; everything else was fetched once.
        finished_ids = {
            json.load(tar.extractfile(member))["id"]
            for name in finished
            for tar in [tarfile.open(fileobj=io.BytesIO(store.read_bytes(store.join(s3_url, name))))]
            for member in tar.getmembers()
            if member.name.endswith(".json")
        }
        refetched = {path.rsplit("/", 1)[1][: -len(".jpg")] for path in api.requests if path.startswith("/met-images/")}
        assert refetched.isdisjoint(finished_ids)
        assert refetched | finished_ids == set(images)
        assert fetched_before >= len(finished_ids)
        works = read_metadata([str(metadata)], museum="met").works
        check_round_trip(s3_url, manifest, works)
    finally:
        api.stop()


def pack_cli(out, preexec_fn=None):
    need_sample()
    settings = dict(metadata=SAMPLE_CSV, images=SHARED_SAMPLE, out=out, size=96, samples_per_shard=64)
    settings.update(year_min=-1000, year_max=2100, jobs=1, quiet=True)
    return run_artdate("pack", *flags(settings), timeout=300, preexec_fn=preexec_fn)


def assert_nothing_looks_finished(out):
    names = os.listdir(out) if os.path.isdir(out) else []
    assert "manifest.json" not in names and not [n for n in names if ".partial" in n], names
    records = os.listdir(os.path.join(out, "_pack")) if "_pack" in names else []
    assert all(f"{n}.json" in records for n in names if n.endswith(".tar")), (names, records)


@pytest.mark.parametrize(
    "file_limit, full_file",
    [
        (30_000, "works.sqlite"),  # the scratch list of works (about 95 KB for the sample) fills the disk
        (300_000, ".tar"),  # a shard (about 450 KB) fills it
    ],
)
def test_a_full_disk_is_a_clear_error_leaves_nothing_finished_and_the_rerun_completes(tmp_path, file_limit, full_file):
    import resource

    def small_disk():  # the kernel refuses writes past the limit per file (EFBIG), as a full disk does (ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    out = tmp_path / "store"
    failed = pack_cli(out, small_disk)
    error = failed.stderr.strip()
    assert failed.returncode == 1 and full_file in error, error
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert_nothing_looks_finished(out)
    rerun = pack_cli(out)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((out / "manifest.json").read_text())["packed"] == 300


def test_a_really_full_disk_names_the_file_that_did_not_fit(tmp_path):
    """A filesystem that is full (a 300 KB tmpfs: smaller than the first shard), not a file size
    limit: the error named no file ("writing: No space left on device"), and the partial files stayed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        failed = pack_cli(disk / "store")
        error = failed.stderr.strip()
        assert failed.returncode == 1 and error == (
            f"artdate pack: error: {disk / 'store' / 'train-000000.tar'}: No space left on device; "
            "nothing unfinished was published"
        ), error
        assert_nothing_looks_finished(disk / "store")
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_sigterm_stops_a_pack_with_exit_143_and_the_rerun_completes(tmp_path):
    """SIGTERM (a scheduler, `kill`) ended the process with no word and no clean-up: now it stops
    as Ctrl-C does, exit 143 and the line that says to rerun; the rerun packs what is missing."""
    need_sample()
    out = tmp_path / "store"
    settings = dict(metadata=SAMPLE_CSV, images=SHARED_SAMPLE, out=out, size=96, samples_per_shard=16)
    settings.update(year_min=-1000, year_max=2100, jobs=1, quiet=True)
    process = subprocess.Popen(artdate_command("pack", *flags(settings)), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (os.path.isdir(out / "_pack") and os.listdir(out / "_pack")):  # a shard published
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 143
    assert process.stderr.read().strip().splitlines()[-1] == (
        "artdate pack: terminated; rerun the same command to resume"
    )
    assert_nothing_looks_finished(out)
    rerun = run_artdate("pack", *flags(settings), timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((out / "manifest.json").read_text())["packed"] == 300


def test_a_read_only_out_is_a_clear_error(tmp_path):
    out = tmp_path / "store"
    out.mkdir()
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i (a directory even root cannot write) is not supported on this filesystem")
    try:
        refused = pack_cli(out)
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    error = refused.stderr.strip()
    assert refused.returncode == 2 and f"{out}/" in error and "Operation not permitted" in error, error
    assert len(error.splitlines()) == 1
    assert_nothing_looks_finished(out)


PUBLIC_ART = os.path.join(os.path.dirname(ROOT), "shared", "public-art", "artworks.csv")


@pytest.mark.skipif(not os.path.exists(PUBLIC_ART), reason="needs ../shared/public-art")
def test_public_art_packs_as_it_is(tmp_path):
    # It ended with "name is too long" after 60% of the works: a museum's full name made a key
    # longer than a tar header holds.
    out = str(tmp_path / "store")
    flags = os.path.join(os.path.dirname(PUBLIC_ART), "date-flags.csv")  # its coarse years train as spans
    manifest = run_pack(
        PackConfig(
            metadata=(PUBLIC_ART,),
            out=out,
            size=32,
            year_min=-10000,
            year_max=2100,
            samples_per_shard=2000,
            jobs=1,
            coarse_dates=flags,
        ),
        progress=False,
    )
    with open(PUBLIC_ART, newline="") as f:
        rows = list(csv.DictReader(f))
    accounted = manifest["packed"] + manifest["rejected"] + manifest["out_of_window"] + manifest["duplicates_dropped"]
    assert accounted == len(rows) == 3571 and manifest["packed"] > 3500
    labels = {}
    for shard in manifest["shards"]:
        with tarfile.open(os.path.join(out, shard["name"])) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    assert len(member.name) <= 85
                    labels[member.name[: -len(".json")]] = json.load(tar.extractfile(member))
    assert len(labels) == manifest["packed"]  # one key each
    by_id = {row["id"]: row for row in rows}
    for label in labels.values():  # the original id and museum, whatever the key
        assert label["museum"] == by_id[label["id"]]["museum"].strip().lower()
    with open(flags, newline="") as f:
        flagged = {row["id"] for row in csv.DictReader(f)}
    spans = {label["id"]: (label["year"], label["year_start"], label["year_end"]) for label in labels.values()}
    assert spans["pa_wikidata-Q20200885"] == (1370, 1370, 1379)  # flagged: "year ends in 0", its decade
    assert sum(end - start == 99 for _, start, end in spans.values()) >= 50  # the flagged 1601s: centuries
    for work_id, span in spans.items():
        if work_id not in flagged:  # as the CSV dates it
            assert span == tuple(int(by_id[work_id][column]) for column in ("year", "year_start", "year_end"))


def test_a_pack_that_packed_nothing_leaves_no_finished_store_and_says_why(tmp_path, capsys):
    from artdate.cli import main

    (tmp_path / "text.jpg").write_bytes(b"hello")
    metadata = tmp_path / "works.csv"
    metadata.write_text("id,year,file\na,1600,text.jpg\nb,1600,gone.jpg\n")
    out = tmp_path / "store"
    assert main(["pack", "--metadata", str(metadata), "--out", str(out), "--jobs", "1", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "packed nothing: all 2 works were rejected (reasons in " in error and "rejects.csv" in error
    assert not (out / "manifest.json").exists() and (out / "rejects.csv").exists()
    # A nonsense option is refused before any work: nothing is read or written.
    assert main(["pack", "--metadata", str(metadata), "--out", str(tmp_path / "zero"), "--size", "0"]) == 2
    assert "--size 0: must be at least 1" in capsys.readouterr().err and not (tmp_path / "zero").exists()


def test_settings_that_give_no_work_an_image_are_one_error_before_any_work(tmp_path, capsys):
    """They failed work by work ("unexpected answer: KeyError: 'idx'" in rejects.csv), then "packed nothing"."""
    from artdate.cli import main

    metadata = tmp_path / "works.csv"
    metadata.write_text("id,year\na,1600\nb,1650\n")
    for extra, message in [
        (["--images", str(tmp_path / "{idx}.jpg")], "{idx}.jpg': unknown field {idx}; a pattern names each work's"),
        (["--images", str(tmp_path / "{id.jpg")], "{id.jpg': not a pattern"),
        ([], f"{metadata} has no file or url column and no --images was given: no work has an image"),
    ]:
        out = tmp_path / "store"
        assert main(["pack", "--metadata", str(metadata), "--out", str(out), "--jobs", "1", "--quiet", *extra]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1, error
        assert not out.exists()  # before any work: nothing written


@requires_sample
def test_a_list_of_images_to_date_packs_into_the_undated_split(tmp_path, capsys):
    """Issue 39: `id,file` rows, no dates at all: every readable image packs, as a work to date."""
    from artdate.cli import main

    names = sorted(os.listdir(SAMPLE_IMAGES))[:3]
    metadata = tmp_path / "works.csv"
    metadata.write_text(
        "id,file\n" + "".join(f"w{n},{os.path.join(SAMPLE_IMAGES, name)}\n" for n, name in enumerate(names))
    )
    out = tmp_path / "store"
    assert main(["pack", "--metadata", str(metadata), "--out", str(out), "--jobs", "1", "--quiet", "--size", "64"]) == 0
    assert capsys.readouterr().out.startswith("packed 3 (3 undated, to date: never trained on), rejected 0")
    manifest = shards.read_manifest(str(out))
    assert [s["name"] for s in manifest["shards"]] == ["undated-000000.tar"]
    assert manifest["splits"]["undated"] == {"shards": 1, "samples": 3} and manifest["labels"]["all"] == {"count": 0}
    labels = read_with_tarfile(str(out), manifest)
    assert all(label["year"] is None and label["split"] == "undated" for label in labels.values())
