import dataclasses
import os
import tarfile

import pytest
import torch

from artdate.cli import main
from artdate.core.config import PredictConfig
from artdate.data import shards
from artdate.data.pipeline import decode_image, eval_transform
from artdate.model.checkpoints import load_checkpoint, save_checkpoint
from artdate.model.network import predict_years
from artdate.score.predict import predict_images
from tests.support.helpers import SAMPLE_IMAGES
from tests.support.images import image_bytes, png_bomb

IMAGE = os.path.join(SAMPLE_IMAGES, "aic_866.jpg")


def predict_year(cfg: PredictConfig):
    """The one image's prediction (predict_images, as `artdate predict IMAGE` makes it)."""
    (predicted,), failed, _ = predict_images(cfg)
    assert failed == []
    return predicted


def stored_sample_prediction(checkpoint, store_url, key):
    """The prediction for a work from its sample in the shards, as training and scoring see it."""
    model, spec, info = load_checkpoint(checkpoint)
    for url in shards.shard_urls(store_url, shards.read_manifest(store_url)):
        with tarfile.open(url) as tar:
            if f"{key}.jpg" in tar.getnames():
                image = decode_image(tar.extractfile(f"{key}.jpg").read())
    return predict_years(
        model, spec, eval_transform(spec.image_size)(image)[None], torch.device("cpu"), info["calibration"]
    )


def test_a_local_image_is_seen_as_training_saw_its_sample(tiny_checkpoint, sample_store, capsys):
    predicted = predict_year(PredictConfig(images=(IMAGE,), checkpoint=tiny_checkpoint))
    expected = stored_sample_prediction(tiny_checkpoint, sample_store, "aic_866")
    for name in ("year", "low", "high", "spread"):
        assert getattr(predicted, name) == pytest.approx(getattr(expected, name).item(), abs=1e-3)
    assert main(["predict", IMAGE, "--checkpoint", tiny_checkpoint]) == 0
    year, low, high = predicted.year, predicted.low, predicted.high
    assert low < high and capsys.readouterr().out.strip() == f"{year:.0f} ({low:.0f}-{high:.0f})"


def test_a_model_trained_to_flip_average_predicts_so(tiny_checkpoint, sample_store, tmp_path):
    """The reading is the checkpoint's: predict averages the image and its mirror image, as the
    validation that calibrated the ranges did, without being told."""
    model, spec, info = load_checkpoint(tiny_checkpoint)
    save_checkpoint(
        str(tmp_path), dataclasses.replace(spec, flip_averaging=True), model, info["metrics"], info["calibration"]
    )
    predicted = predict_year(PredictConfig(images=(IMAGE,), checkpoint=str(tmp_path)))
    plain = predict_year(PredictConfig(images=(IMAGE,), checkpoint=tiny_checkpoint))
    expected = stored_sample_prediction(str(tmp_path), sample_store, "aic_866")
    assert predicted.year == pytest.approx(expected.year.item(), abs=1e-3)
    assert predicted.low == pytest.approx(expected.low.item(), abs=1e-3)
    assert predicted.year != pytest.approx(plain.year, abs=1e-3)


def test_a_checkpoint_file_saved_under_another_name_is_read(tiny_checkpoint, tmp_path):
    import shutil

    shutil.copy(os.path.join(tiny_checkpoint, "checkpoint.pt"), tmp_path / "model.pt")
    renamed = predict_year(PredictConfig(images=(IMAGE,), checkpoint=str(tmp_path / "model.pt")))
    original = predict_year(PredictConfig(images=(IMAGE,), checkpoint=tiny_checkpoint))
    assert renamed.year == original.year


def test_http_and_s3_images(tiny_checkpoint, s3_url, s3_server, api):
    with open(IMAGE, "rb") as f:
        data = f.read()
    from_http = predict_year(PredictConfig(images=(f"{api.url}/img/aic_866",), checkpoint=tiny_checkpoint))
    bucket = s3_url.split("/")[2]
    s3_server.client().put_object(Bucket=bucket, Key="images/866.jpg", Body=data)
    from_s3 = predict_year(PredictConfig(images=(f"s3://{bucket}/images/866.jpg",), checkpoint=tiny_checkpoint))
    local = predict_year(PredictConfig(images=(IMAGE,), checkpoint=tiny_checkpoint))
    for other in (from_http, from_s3):
        assert other.year == pytest.approx(local.year)
        assert (other.low, other.high) == pytest.approx((local.low, local.high))


@pytest.mark.parametrize(
    "path, settings, message",
    [
        ("/img/notimage", {}, "not an image"),
        ("/nothing/here", {}, "HTTP 404 from http://127.0.0.1"),
        ("/img/huge", {"max_bytes": 1_000_000}, "over the cap of 1000000"),
        ("/img/aic_866", {"max_pixels": 1000}, "over the limit of 1000 pixels"),
    ],
)
def test_bad_urls_are_clear_errors(tiny_checkpoint, api, path, settings, message):
    with pytest.raises(ValueError, match=message):
        predict_year(PredictConfig(images=(f"{api.url}{path}",), checkpoint=tiny_checkpoint, **settings))


def test_bad_paths_are_clear_errors(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such image file"):
        predict_year(PredictConfig(images=(str(tmp_path / "none.jpg"),), checkpoint=tiny_checkpoint))
    with pytest.raises(ValueError, match="only local paths, s3:// and http"):
        predict_year(PredictConfig(images=("ftp://example.org/a.jpg",), checkpoint=tiny_checkpoint))
    assert main(["predict", str(tmp_path / "none.jpg"), "--checkpoint", tiny_checkpoint]) == 2
    assert "no such image file" in capsys.readouterr().err


def test_image_kinds_predict_and_hostile_images_are_one_line_errors(tiny_checkpoint, tmp_path, capsys):
    from PIL import Image

    for name, data in [
        ("cmyk.jpg", image_bytes((80, 60), "CMYK", (0, 255, 255, 0))),
        ("grey16.png", image_bytes((80, 60), "I;16", 40000, "PNG")),
        ("palette.png", image_bytes((80, 60), "P", 3, "PNG")),
        ("alpha.png", image_bytes((80, 60), "RGBA", (200, 10, 10, 0), "PNG")),
    ]:
        (tmp_path / name).write_bytes(data)
        assert main(["predict", str(tmp_path / name), "--checkpoint", tiny_checkpoint]) == 0, name
    whole = open(IMAGE, "rb").read()
    for name, data, message in [
        ("bomb.png", png_bomb(), "too many pixels"),
        ("empty.jpg", b"", "empty file"),
        ("cut.jpg", whole[: len(whole) // 2], "corrupt or truncated"),
        ("page.jpg", b"<html>moved</html>", "not an image"),
        ("big.jpg", whole, "over the cap of 1000 bytes"),
    ]:
        (tmp_path / name).write_bytes(data)
        capsys.readouterr()
        settings = ["--max-bytes", "1000"] if name == "big.jpg" else []
        assert main(["predict", str(tmp_path / name), "--checkpoint", tiny_checkpoint, *settings]) == 2, name
        error = capsys.readouterr().err.strip()
        assert message in error and str(tmp_path / name) in error and len(error.splitlines()) == 1, error
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own guard was not switched off globally


def test_a_folder_of_images_to_date_makes_a_results_csv_that_report_reads(tiny_checkpoint, tmp_path, capsys):
    """Issue 39: several images or a folder, with --out: score's columns, one process, no cluster."""
    import csv
    import shutil

    from artdate.score.score_parts import COLUMNS

    scans = tmp_path / "scans"
    scans.mkdir()
    names = sorted(os.listdir(SAMPLE_IMAGES))[:3]
    for name in names:
        shutil.copy(os.path.join(SAMPLE_IMAGES, name), scans / name)
    (scans / "notes.txt").write_text("not an image: left out of the folder's images")
    (scans / "broken.png").write_bytes(b"<html>moved</html>")
    out = tmp_path / "results.csv"
    assert main(["predict", str(scans), IMAGE, "--checkpoint", tiny_checkpoint, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"dated 4 image(s), 1 unreadable -> {out}"
    assert f"skipped {scans / 'broken.png'}: " in captured.err and "not an image" in captured.err
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [*COLUMNS, "path"]
    assert [row["id"] for row in rows] == [os.path.splitext(n)[0] for n in names] + ["aic_866"]
    assert all(row["year"] == row["diff"] == "" and row["split"] == "undated" for row in rows)
    alone = predict_year(PredictConfig(images=(IMAGE,), checkpoint=tiny_checkpoint))
    assert float(rows[-1]["pred"]) == pytest.approx(alone.year, abs=0.06)  # as dated alone: batches change nothing
    assert rows[0]["path"] == os.path.join("scans", names[0])  # under the CSV's folder: the report shows it
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert "works to date: n 4" in capsys.readouterr().out
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Works to date (4)" in page and page.count("data:image/jpeg;base64,") == 3  # the scans' thumbnails


def test_several_inputs_get_distinct_ids_once_each_and_nothing_stale_beside_out(
    tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    """x.png and x.gif are two works with two ids; one file given twice (x.jpg, ./x.jpg) is one
    work; files an earlier run left beside --out (its neighbours, a score's reference and skip
    list) go, or report shows them with these works; --out that cannot be written is named first."""
    import csv

    from PIL import Image

    image = Image.open(IMAGE).convert("RGB")
    image.save(tmp_path / "x.png")
    image.save(tmp_path / "x.gif")
    (tmp_path / "x.jpg").write_bytes(open(IMAGE, "rb").read())
    out = tmp_path / "p.csv"
    earlier = [tmp_path / "p.neighbours.csv", tmp_path / "p.reference.npz", tmp_path / "p.skipped.csv"]
    for path in earlier:
        path.write_text("an earlier run's\n")
    given = [str(tmp_path / "x.png"), str(tmp_path / "x.gif"), str(tmp_path / "x.jpg"), "./x.jpg", str(tmp_path)]
    monkeypatch.chdir(tmp_path)
    assert main(["predict", *given, "--checkpoint", tiny_checkpoint, "--out", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["id"] for row in rows) == ["x.gif", "x.jpg", "x.png"]  # x.jpg once, though given 3 times
    assert len({row["key"] for row in rows}) == 3
    assert not any(path.exists() for path in earlier)

    (tmp_path / "main.csv").write_text("a file\n")
    os.mkdir(tmp_path / "pred1")
    for bad, message in [
        ("pred1", "--out pred1 is a folder; name the file to write"),
        ("main.csv/x.csv", f"--out main.csv/x.csv: {tmp_path / 'main.csv'} is a file, not a folder"),
        ("/proc/x.csv", "--out /proc/x.csv: no file can be written in /proc"),
    ]:
        capsys.readouterr()
        assert main(["predict", "x.jpg", "--checkpoint", tiny_checkpoint, "--out", bad]) == 2, bad
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"artdate predict: error: {message}") and len(error.splitlines()) == 1, error
