import json
import os
import shutil
import subprocess
import tarfile

import pandas as pd
import pytest
from PIL import Image

from artdate.core.config import ReportConfig
from artdate.data import shards
from artdate.report.metrics import read_results
from artdate.report.run import run_report
from tests.support.helpers import SAMPLE_IMAGES, images_shown_in_chromium, requires_sample

# Hand-built: errors (pred - year) of -120, -30, 0, 10, 60 and 200.
ROWS = [
    ("met", 1, 1500, 1380),
    ("met", 2, 1520, 1490),
    ("rijks", 3, 1610, 1610),
    ("rijks", 4, 1640, 1650),
    ("rijks", 5, 1700, 1760),
    ("met", 6, 1890, 2090),
]


def write_csv(tmp_path, rows=ROWS):
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "results.csv"
    path.write_text("museum,id,year,pred\n" + "".join(f"{m},{i},{y},{p}\n" for m, i, y, p in rows))
    return str(path)


def test_summary_matches_the_hand_computed_figures(tmp_path):
    summary = run_report(ReportConfig(results=write_csv(tmp_path), out=str(tmp_path / "out")))
    # The figures label each bin as plots.py writes it: whole years ("1500.0" before).
    assert [str(b) for b in sorted(read_results(write_csv(tmp_path))["bin"].unique())] == [
        "1500",
        "1600",
        "1700",
        "1850",
    ]
    errors = [-120, -30, 0, 10, 60, 200]
    assert summary["n"] == 6
    assert summary["mae"] == sum(abs(e) for e in errors) / 6 == 70.0
    assert summary["median_ae"] == 45.0  # (30 + 60) / 2
    assert summary["rmse"] == pytest.approx((sum(e * e for e in errors) / 6) ** 0.5, rel=1e-15)
    assert summary["bias"] == sum(errors) / 6 == 20.0
    assert (summary["within_25"], summary["within_50"], summary["within_100"]) == (2 / 6, 3 / 6, 4 / 6)
    bins = {b["bin_start"]: (b["n"], b["mae"], b["bias"]) for b in summary["per_bin"]}
    assert bins == {1500: (2, 75.0, -75.0), 1600: (2, 5.0, 5.0), 1700: (1, 60.0, 60.0), 1850: (1, 200.0, 200.0)}
    assert summary["per_museum"]["rijks"]["mae"] == pytest.approx(70 / 3, rel=1e-15)
    assert summary["per_museum"]["met"]["n"] == 3
    on_disk = json.load(open(tmp_path / "out" / "summary.json"))
    assert on_disk == json.loads(json.dumps(summary))
    assert sorted(os.listdir(tmp_path / "out")) == [
        "error_per_bin.png",
        "pred_vs_year.png",
        "report.html",
        "summary.json",
        "works_per_bin.png",
    ]


def test_many_museums_show_the_largest_and_group_the_rest(tmp_path):
    # 14 museums: m00 holds 14 works, m01 13, ..., m13 1 (each work off by its museum's number of
    # years); the 11 largest keep a row each and the 3 smallest (3 + 2 + 1 works) share one.
    rows = [(f"m{m:02d}", 1600, 1600 + m) for m in range(14) for _ in range(14 - m)]
    path = tmp_path / "results.csv"
    path.write_text("museum,year,pred\n" + "".join(f"{m},{y},{p}\n" for m, y, p in rows))
    summary = run_report(ReportConfig(results=str(path), out=str(tmp_path / "out")))
    museums = summary["per_museum"]
    assert list(museums) == [f"m{m:02d}" for m in range(11)] + ["other museums (3)"]
    assert museums["m03"] == {**museums["m03"], "n": 11, "mae": 3.0}
    other = museums["other museums (3)"]
    assert other["n"] == 6 and other["mae"] == pytest.approx((3 * 11 + 2 * 12 + 1 * 13) / 6)
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<td>other museums (3)</td>" in html and "<td>m10</td>" in html and "<td>m13</td>" not in html


def test_range_coverage_and_the_century_confusion_match_the_hand_computed_figures(tmp_path):
    # (split, year, pred, low, high): the validation works' years fall inside 3 of 4 ranges.
    rows = [
        ("train", 1500, 1380, 1300, 1450),
        ("train", 1610, 1610, 1600, 1620),
        ("val", 1520, 1490, 1450, 1530),
        ("val", 1540, 1620, 1600, 1700),
        ("val", 1700, 1760, 1700, 1800),
        ("val", 1890, 1810, 1750, 1890),
    ]
    path = tmp_path / "results.csv"
    path.write_text(
        "split,year,pred,pred_low,pred_high,range_level\n"
        + "".join(f"{s},{y},{p},{lo},{hi},0.8\n" for s, y, p, lo, hi in rows)
    )
    summary = run_report(ReportConfig(results=str(path), out=str(tmp_path / "out")))
    assert summary["held_out"] == "validation works"
    # The headline is the held-out works' (errors 30, 80, 60, 80), not all six works' (61.7).
    assert summary["headline"]["mae"] == 250 / 4 and summary["headline"]["n"] == 4
    ranges = summary["ranges"]
    assert ranges["level"] == 0.8 and ranges["coverage"] == 3 / 4 and ranges["width"] == (80 + 100 + 100 + 140) / 4
    assert [(b["bin_start"], b["n"], b["coverage"]) for b in ranges["per_bin"]] == [
        (1500, 2, 0.5),
        (1700, 1, 1.0),
        (1850, 1, 1.0),
    ]
    assert summary["per_split"]["train"]["coverage"] == 1 / 2  # 1500 is outside 1300-1450
    assert summary["coverage"] == 4 / 6
    # Validation works: true 1500s -> predicted 1400s and 1600s, 1700s -> 1700s, 1800s -> 1800s.
    assert summary["centuries"] == {
        "centuries": [1400, 1500, 1600, 1700, 1800],
        "counts": [[0, 0, 0, 0, 0], [1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]],
    }
    assert "range_reliability.png" in os.listdir(tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<b>75%</b> inside" in page and "(1600-1700)" in page
    assert "These figures are those of the 4 validation works (the model never trained on them; all 6" in page
    assert '<div class="card">MAE (years)<b>62.5</b></div>' in page
    path.write_text(path.read_text().replace("1600,1700", "1600,soon"))
    with pytest.raises(ValueError, match="line 5: pred_high 'soon' is not a finite number"):
        read_results(str(path))
    # A report of results without ranges into the same folder: the earlier figure of ranges goes
    # (it stayed, as if of these results).
    run_report(ReportConfig(results=write_csv(tmp_path / "plain"), out=str(tmp_path / "out")))
    assert "range_reliability.png" not in os.listdir(tmp_path / "out")
    assert "pred_vs_year.png" in os.listdir(tmp_path / "out")


@requires_sample
def test_the_2017_file_format_with_image_paths(tmp_path):
    sample = SAMPLE_IMAGES
    names = sorted(os.listdir(sample))[:4]
    (tmp_path / "img").mkdir()
    for name in names:
        shutil.copy(os.path.join(sample, name), tmp_path / "img" / name)
    csv = tmp_path / "results.csv"
    csv.write_text(
        "year,diff,pred,path\n"
        + "".join(f"{1600 + 40 * i},{abs(40 * i - 50)},{1650},img/{n}\n" for i, n in enumerate(names))
    )
    out = tmp_path / "out"
    summary = run_report(ReportConfig(results=str(csv), out=str(out), gallery=2))
    assert summary["mae"] == (50 + 10 + 30 + 70) / 4
    page = (out / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 6  # 2 per gallery, all found
    assert "per_museum" not in summary


@pytest.mark.parametrize(
    "content, message",
    [
        ("year,guess\n1500,1600\n", r"needs columns year and pred; missing \['pred'\]"),
        ("year,pred\n1500,1600\n1600,soon\n", r"line 3: pred 'soon' is not a finite number"),
        # It was "Cannot convert non-finite values (NA or inf) to integer", naming nothing.
        ("year,pred\n1500,1600\n1600,inf\n", r"r.csv: line 3: pred 'inf' is not a finite number"),
        ("year,pred\n-inf,1600\n", r"r.csv: line 2: year '-inf' is not a finite number"),
        ("", "not a readable CSV"),
    ],
)
def test_unusable_results_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "r.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_results(str(path))
    with pytest.raises(FileNotFoundError, match="no such results file"):
        read_results(str(tmp_path / "missing.csv"))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium; .ci/run does)")
def test_report_renders_in_chromium(tmp_path, sample_store, tiny_checkpoint):
    # Results that point into the shards, as artdate score writes them: galleries come from the tars.
    manifest = shards.read_manifest(sample_store)
    rows = []
    with tarfile.open(shards.shard_urls(sample_store, manifest)[0]) as tar:
        for member in tar:
            if member.name.endswith(".json"):
                labels = json.load(tar.extractfile(member))
                rows.append((labels["museum"], labels["id"], labels["year"], member.name[:-5]))
    csv = tmp_path / "results.csv"
    shard = shards.shard_urls(sample_store, manifest)[0]
    csv.write_text(
        "museum,id,year,pred,shard,key\n"
        + "".join(f"{m},{i},{y},{y + (k % 7 - 3) * 40},{shard},{key}\n" for k, (m, i, y, key) in enumerate(rows))
    )
    out = tmp_path / "out"
    # --run: the training run's learning curves lead the page (a checkpoint URL finds its run).
    summary = run_report(ReportConfig(results=str(csv), out=str(out), gallery=4, run=tiny_checkpoint))
    assert [entry["epoch"] for entry in summary["learning_curve"]] == [0, 1]
    # Chromium loads the page; a script added to a copy counts the images that actually decoded.
    loaded, shown, dom = images_shown_in_chromium(str(out / "report.html"), tmp_path)
    assert (loaded, shown) == (16, 16)  # 4 plots + 3 galleries x 4
    assert 'alt="learning_curves.png"' in dom
    assert f"<b>{summary['mae']:.1f}</b>" in dom and "Per 50-year bin" in dom and "Per museum" in dom
    screenshot = tmp_path / "page.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,900",
            f"--screenshot={screenshot}",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    image = Image.open(screenshot).convert("L")
    assert image.size == (1280, 900) and image.getextrema()[0] < 100  # something dark was drawn: text, plots


def test_images_come_only_from_listed_shards_and_the_csvs_folder(tmp_path, sample_store):
    from artdate.report.gallery import find_images

    image = open(os.path.join(SAMPLE_IMAGES, "aic_866.jpg"), "rb").read()
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "inside.jpg").write_bytes(image)
    (tmp_path / "outside.jpg").write_bytes(image)
    manifest = shards.read_manifest(sample_store)
    shard = shards.shard_urls(sample_store, manifest)[0]
    with tarfile.open(shard) as tar:
        key = next(m.name for m in tar if m.name.endswith(".jpg"))[:-4]
    unlisted = tmp_path / "copy.tar"  # the same bytes, but not a shard of any store
    unlisted.write_bytes(open(shard, "rb").read())
    rows = pd.DataFrame(
        {
            "year": [1600] * 5,
            "pred": [1600] * 5,
            "path": ["inside.jpg", "../outside.jpg", str(tmp_path / "outside.jpg"), "", ""],
            "shard": ["", "", "", shard, str(unlisted)],
            "key": ["", "", "", key, key],
        }
    )
    found = find_images(rows, str(folder / "results.csv"))
    assert sorted(found) == [0, 3]
    assert found[0] == image


def test_comparanda_show_under_the_gallery_and_their_estimate_is_measured(tmp_path):
    # Two validation works with 3 neighbours each: medians 1610 and 1700, against true 1600 and
    # 1750 (errors 10 and 50: knn MAE 30); the model's errors there are 20 and 40 (MAE 30 too).
    results = tmp_path / "results.csv"
    results.write_text(
        "key,museum,id,year,pred,split\nmet_1,met,1,1600,1620,val\nmet_2,met,2,1750,1710,val\n"
        "met_3,met,3,1650,1650,train\n"
    )
    (tmp_path / "results.neighbours.csv").write_text(
        "key,rank,neighbour_id,neighbour_museum,neighbour_year,similarity\n"
        "met_1,1,3,met,1650,0.91\nmet_1,2,7,rijks,1610,0.85\nmet_1,3,8,rijks,1500,0.80\n"
        "met_2,1,3,met,1650,0.70\nmet_2,2,9,met,1700,0.60\nmet_2,3,10,met,1800,0.50\n"
    )
    summary = run_report(ReportConfig(results=str(results), out=str(tmp_path / "out")))
    assert summary["comparanda"] == {"k": 3, "works": "validation works", "n": 2, "knn_mae": 30.0, "model_mae": 30.0}
    page = (tmp_path / "out" / "report.html").read_text()
    assert "nearest dated works: <span title='met 3 (similarity 0.91)'>1650</span>" in page
    assert "Their median year alone dates the validation works at a mean error of <b>30.0</b>" in page


def test_a_run_without_checkpoints_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--run .*nothing: no checkpoints of a training run there"):
        run_report(ReportConfig(results=write_csv(tmp_path), out=str(tmp_path / "out"), run=str(tmp_path / "nothing")))


def test_the_learning_curve_is_the_longest_history_even_past_a_checkpoint_inside_the_last_epoch(tmp_path):
    from artdate.model.checkpoints import CHECKPOINT_FILE, METRICS_FILE
    from artdate.report.run import learning_curve

    curve = [{"epoch": 0, "train_loss": 2.0, "val_mae": 90.0, "val_median_ae": 70.0, "val_range_width": 300.0}]
    ended = curve + [{**curve[0], "epoch": 1, "val_mae": 80.0}]
    # Epoch 1's checkpoint at step 8 (inside it: the curve up to epoch 0), written before epoch 1's end.
    for name, metrics in [
        ("checkpoint_2026-12-02_08-00-00", {"epoch": 1, "reason": "interval", "history": curve}),
        ("checkpoint_2026-12-02_08-05-00", {"epoch": 1, "reason": "epoch", "history": ended}),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / METRICS_FILE).write_text(json.dumps(metrics))
        (tmp_path / name / CHECKPOINT_FILE).write_bytes(b"")
    assert learning_curve(str(tmp_path)) == ended


def test_ids_that_read_as_missing_values_keep_their_names(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("museum,id,year,pred\nmet,NaN,1600,1650\nnull,null,1700,1690\nmet,NA,1800,1700\n")
    run_report(ReportConfig(results=str(path), out=str(tmp_path / "out"), gallery=3))
    page = (tmp_path / "out" / "report.html").read_text()
    for caption in ("met NaN", "null null", "met NA"):
        assert f"<figcaption>{caption}<br>" in page, caption
    assert set(json.load(open(tmp_path / "out" / "summary.json"))["per_museum"]) == {"met", "null"}


def test_the_command_line_says_which_works_its_figures_are_of(tmp_path, capsys):
    from artdate.cli import main

    path = tmp_path / "results.csv"  # the training works are read well, the validation works badly
    path.write_text("id,split,year,pred\n1,train,1600,1600\n2,train,1700,1700\n3,val,1800,1900\n")
    assert main(["report", str(path), "--out", str(tmp_path / "out"), "--gallery", "0"]) == 0
    assert capsys.readouterr().out.startswith("validation works: n 1, MAE 100.0 y, ")
    (tmp_path / "a-file").write_text("x")
    assert main(["report", str(path), "--out", str(tmp_path / "a-file")]) == 2  # bad input, not a failed disk
    assert "--out " in capsys.readouterr().err
