"""Dating the undated (issue 39) end to end on a real local Ray: a store of dated works and works
to date, a training run that never reads the undated, scoring that dates them with ranges and
comparanda, and the report's section for them in a real browser."""

import csv
import glob
import json
import os
import shutil

import pytest

from artdate.core.config import PackConfig, ReportConfig, ScoreConfig, TrainConfig
from artdate.core.works import sample_key
from artdate.data import shards
from artdate.pack.run import run_pack
from artdate.report.run import run_report
from artdate.score.run import run_scoring
from artdate.train.run import run_training
from tests.support.helpers import (
    SAMPLE_CSV,
    SHARED_SAMPLE,
    images_shown_in_chromium,
    read_rows,
    requires_sample,
    tiny_training,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray"), requires_sample]


def test_works_to_date_are_never_trained_on_and_are_dated_with_ranges_and_comparanda(tmp_path, capfd):
    # The sample with every tenth work's dates left empty: 30 works to date beside 270 dated.
    with open(SAMPLE_CSV) as f:
        rows = list(csv.DictReader(f))
    for row in rows[::10]:
        row.update(year="", year_start="", year_end="")
    metadata = tmp_path / "works.csv"
    with open(metadata, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    undated = {sample_key(row["museum"], row["id"]) for row in rows[::10]}
    store = str(tmp_path / "shards")
    settings = dict(size=64, samples_per_shard=32, year_min=-1000, year_max=2100, jobs=1)
    manifest = run_pack(PackConfig(metadata=(str(metadata),), images=SHARED_SAMPLE, out=store, **settings), False)
    assert manifest["splits"]["undated"]["samples"] == 30 and manifest["labels"]["all"]["count"] == 270

    keys = str(tmp_path / "keys")  # every key each training step and validation pass read
    best = run_training(TrainConfig(**tiny_training(store, str(tmp_path / "run"), epochs=1, key_log=keys)))
    trained = {
        key
        for path in glob.glob(os.path.join(keys, "*.jsonl"))
        for line in open(path)
        for key in json.loads(line)["keys"]
    }
    assert len(trained) > 150 and not trained & undated

    out = str(tmp_path / "results.csv")
    run_scoring(ScoreConfig(shards=store, checkpoint=best, out=out, actors=2), progress=False)
    scored = {row["key"]: row for row in read_rows(out)}
    assert len(scored) == 300 and {k for k, row in scored.items() if row["split"] == "undated"} == undated
    for key in undated:
        row = scored[key]
        assert row["year"] == row["diff"] == row["year_start"] == row["year_end"] == ""
        assert float(row["pred_low"]) <= float(row["pred"]) <= float(row["pred_high"])
    neighbours = read_rows(out[: -len(".csv")] + ".neighbours.csv")
    nearest = {key: [n for n in neighbours if n["key"] == key] for key in undated}
    assert all(len(found) == 5 for found in nearest.values())
    assert {
        scored[sample_key(n["neighbour_museum"], n["neighbour_id"])]["split"] for f in nearest.values() for n in f
    } == {"train"}

    # --split undated scores no training works: no neighbours file, and it says so (it said nothing).
    capfd.readouterr()
    only = str(tmp_path / "only-undated.csv")
    run_scoring(ScoreConfig(shards=store, checkpoint=best, out=only, actors=1, split="undated"), progress=False)
    assert len(read_rows(only)) == 30 and not os.path.exists(only[: -len(".csv")] + ".neighbours.csv")
    assert "no neighbours file: --split undated scores none of the training works" in capfd.readouterr().err

    # A store of the works to date alone, dated against the first run's training works.
    alone = str(tmp_path / "alone.csv")
    shutil.copytree(store, tmp_path / "alone-shards", ignore=shutil.ignore_patterns("train-*", "val-*"))
    alone_manifest = shards.read_manifest(store)
    alone_manifest["shards"] = [s for s in alone_manifest["shards"] if s["split"] == "undated"]
    (tmp_path / "alone-shards" / "manifest.json").write_text(json.dumps(alone_manifest))
    config = ScoreConfig(shards=str(tmp_path / "alone-shards"), checkpoint=best, out=alone, actors=1, comparanda=out)
    run_scoring(config, progress=False)
    again = read_rows(alone[: -len(".csv")] + ".neighbours.csv")
    assert sorted((n["key"], n["neighbour_id"]) for n in again) == sorted(
        (n["key"], n["neighbour_id"]) for f in nearest.values() for n in f
    )

    summary = run_report(ReportConfig(results=out, out=str(tmp_path / "report"), gallery=4))
    assert summary["n"] == 270 and summary["undated"]["n"] == 30
    page = str(tmp_path / "report" / "report.html")
    assert "Works to date (30)" in open(page).read()
    loaded, shown, _ = images_shown_in_chromium(page, tmp_path)
    # The plots (4 of the dated works, 1 of the undated), 3 galleries of 4, and the undated
    # gallery's 4 works with their 5 comparanda each: every image decoded.
    assert loaded == shown == 5 + 12 + 4 * 6
