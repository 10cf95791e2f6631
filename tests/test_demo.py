"""The README's main command, end to end: artdate demo on a synthetic corpus, and on a folder."""

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.support.helpers import ROOT, SHARED_SAMPLE
from tests.support.museums import MuseumApi, have_fixtures, sample_images

pytestmark = pytest.mark.slow


def test_demo_beats_the_median_baseline(tmp_path):
    workdir = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "launch.py", "demo", "--workdir", str(workdir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines.pop(0).startswith("data:       synthetic: 300 generated works")
    mae, baseline = (float(part.split(" years")[0].split()[-1]) for part in lines[0].split(";"))
    assert mae < baseline, done.stdout
    assert "== 4/4 report" in done.stderr and "epoch 8/8: loss" in done.stderr  # progress shown throughout
    # A console a person reads: a screenful, each line once, none of Ray's own reporting.
    console = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(console) <= 40 and len(set(console)) == len(console), done.stderr
    assert not any(noise in done.stderr for noise in ("pid=", "Reporting training result", "WARNING")), done.stderr
    # The recipe bench/quality/recipes.py measured takes steps of 16 images, however many workers share them.
    with open(workdir / "shards" / "manifest.json") as f:
        training_works = json.load(f)["labels"]["train"]["count"]
    assert f"8 epochs of {training_works // 16} steps" in done.stderr, done.stderr[-3000:]
    assert "train efficientnet_lite0 at 128 px" in done.stderr  # the synthetic corpus's measured size
    assert lines[1].startswith("80% year ranges: ") and "of them inside" in lines[1]
    with open(workdir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len({r["key"] for r in rows}) == int(lines[2].split("(")[1].split()[0])
    assert all(int(r["pred_low"]) <= int(r["pred_high"]) for r in rows)
    assert os.path.getsize(workdir / "report" / "report.html") > 10_000


@pytest.mark.skipif(not os.path.isdir(SHARED_SAMPLE), reason="needs ../shared/artworks-sample")
def test_demo_data_is_a_folder_or_a_synthetic_corpus(tmp_path):
    # The pipeline after pack is the same either way (the test above runs it end to end).
    from artdate.core.config import DemoConfig
    from artdate.demo import demo_pack

    pack, said = demo_pack(DemoConfig(workdir=str(tmp_path), data=(SHARED_SAMPLE,)), "shards")
    assert (
        pack.metadata == (os.path.join(SHARED_SAMPLE, "artworks.csv"),) and said == f"the works of {pack.metadata[0]}"
    )
    assert pack.size == 200  # real images at public-art's own size: the 192 px recipe reads them unscaled
    # Several folders pack together (each CSV's file column relative to its own folder): one model for both.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "artworks.csv").write_text("id,year,file\nx1,1650,x1.jpg\n")
    both = (SHARED_SAMPLE, str(mine))
    pack, said = demo_pack(DemoConfig(workdir=str(tmp_path), data=both), "shards")
    assert pack.metadata == tuple(os.path.join(folder, "artworks.csv") for folder in both)
    assert said == f"the works of {pack.metadata[0]} and {pack.metadata[1]}"
    pack, said = demo_pack(DemoConfig(workdir=str(tmp_path)), "shards")
    assert said.startswith("synthetic: 300 generated works") and pack.source == "" and pack.size == 160
    with open(pack.metadata[0]) as f:
        assert len(f.readlines()) == 301
    with pytest.raises(FileNotFoundError, match="--data needs folders with an artworks.csv"):
        demo_pack(DemoConfig(workdir=str(tmp_path), data=(SHARED_SAMPLE, str(tmp_path))), "shards")
    with pytest.raises(ValueError, match="--data and --fetch each choose the demo's works"):
        demo_pack(DemoConfig(workdir=str(tmp_path), data=(SHARED_SAMPLE,), fetch=5), "shards")


def test_demo_recipe_grows_with_the_real_training_works():
    from artdate.demo import Recipe, demo_recipe

    # (synthetic, training works) -> the recipe, as bench/RESULTS.md measured it.
    recipes = {
        (True, 5000): Recipe(epochs=8, image_size=128, backbone_lr_scale=0.1),
        (False, 244): Recipe(epochs=20, image_size=128, backbone_lr_scale=0.1),
        (False, 999): Recipe(epochs=20, image_size=128, backbone_lr_scale=0.1),
        (False, 3316): Recipe(epochs=10, image_size=192, backbone_lr_scale=0.3),
    }
    assert {case: demo_recipe(*case) for case in recipes} == recipes


@pytest.mark.skipif(not have_fixtures(), reason="needs ../shared/museum-fixtures and ../shared/artworks-sample")
def test_demo_fetch_takes_works_of_the_met_list_from_the_met(tmp_path):
    from artdate.core.config import DemoConfig
    from artdate.demo import MET_LIST, demo_pack
    from artdate.pack.metadata import read_metadata
    from artdate.pack.run import run_pack

    api = MuseumApi(sample_images(4)).start()
    try:
        cfg = DemoConfig(workdir=str(tmp_path), fetch=6, api_url=(f"met={api.root('met')}",))
        pack, said = demo_pack(cfg, str(tmp_path / "shards"))
        assert said == f"6 works of {MET_LIST} from the Met's open-access API" and pack.source == "met"
        manifest = run_pack(pack, progress=False)
        assert manifest["packed"] == 6 and api.count("/met/objects/") == 6  # one record each, then its image
        again, _ = demo_pack(cfg, str(tmp_path / "shards"))
        assert again.metadata == pack.metadata  # the same works: a rerun resumes the same pack
    finally:
        api.stop()
    met_years = {w.id: w.year for w in read_metadata([MET_LIST], museum="met").works}
    drawn = read_metadata(list(pack.metadata)).works
    assert len(drawn) == 6 and all(w.museum == "met" and met_years[w.id] == w.year for w in drawn)
