"""Museum exports as they are published: the Met's MetObjects.csv against the recorded Met
payloads, and any other export through --columns."""

import csv
import json
import os

import pytest

from artdate.cli import main
from artdate.core.config import PackConfig
from artdate.core.exports import MET_HEADER
from artdate.pack.rejects import summary_line
from artdate.pack.run import run_pack
from tests.support.exports import read_export_in_a_fresh_process, write_synthetic_met_export
from tests.support.helpers import labels_of
from tests.support.museums import have_fixtures, recorded_met_objects, sample_images

pytestmark = pytest.mark.skipif(
    not have_fixtures(), reason="needs ../shared/museum-fixtures and ../shared/artworks-sample"
)


def met_row(record: dict, **changes) -> dict:
    """A MetObjects.csv row of a Met API record (the export and the API share their fields)."""
    fields = {
        "Object ID": record["objectID"],
        "Object Number": record.get("accessionNumber", ""),
        "Is Public Domain": "True" if record.get("isPublicDomain") else "False",
        "Department": record.get("department", ""),
        "Object Name": record.get("objectName", ""),
        "Title": record.get("title", ""),
        "Artist Display Name": record.get("artistDisplayName", ""),
        "Object Date": record.get("objectDate", ""),
        "Object Begin Date": record.get("objectBeginDate", ""),
        "Object End Date": record.get("objectEndDate", ""),
        "Classification": record.get("classification", ""),
        "Dimensions": record.get("dimensions", ""),  # the lyre's holds a \r\n inside quotes
        **changes,
    }
    return {column: str(fields.get(column, "")) for column in MET_HEADER}


def write_met_export(path, rows: list[dict]) -> str:
    """As the Met publishes it: UTF-8 with a byte-order mark, every field quoted where it must be."""
    with open(path, "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, MET_HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def test_the_mets_export_packs_as_it_is(tmp_path, api):
    recorded = {i: json.loads(text) for i, text in recorded_met_objects().items()}
    title = 'Wheat Field, with Cypresses\n(the "Met" copy), 1889'  # commas, quotes and a newline inside quotes
    rows = [met_row(record) for record in recorded.values()]
    rows[[r["Object ID"] for r in rows].index("436535")]["Title"] = title
    rows += [
        met_row(recorded["436535"], **{"Object ID": "900001", "Classification": "Photographs"}),
        met_row(
            recorded["436535"], **{"Object ID": "777", "Object Date": "", "Object Begin Date": 0, "Object End Date": 0}
        ),
    ]
    api.met_changes["777"] = {"objectDate": "", "objectBeginDate": 0, "objectEndDate": 0}  # undated there too
    export = write_met_export(tmp_path / "MetObjects.csv", rows)
    out = str(tmp_path / "store")
    config = PackConfig(
        metadata=(export,),
        out=out,
        source="met",
        api_url=(f"met={api.root('met')}",),
        exclude_types=("photographs",),
        year_min=-5000,
        year_max=2000,
        size=64,
        jobs=1,
        rate=100,
    )
    manifest = run_pack(config, progress=False)
    not_public = {i for i, record in recorded.items() if not record["isPublicDomain"]}
    assert not_public == {"915129", "544016", "545782"}
    asked = {path.rsplit("/", 1)[1] for path in api.requests if path.startswith("/met/objects/")}
    assert asked == set(recorded) - not_public | {"777"}  # never the other rights, nor the excluded photograph
    assert manifest["not_public_domain"] == 3 and manifest["excluded"] == 1 and manifest["rejected"] == 0
    line = summary_line(manifest, out)
    assert line.startswith("packed 7 (1 undated, to date: never trained on), rejected 0, excluded 1 by type, ")
    assert "3 not public domain (never requested)" in line
    with open(os.path.join(out, "rejects.csv")) as f:
        excluded = list(csv.DictReader(f))
    assert [(r["id"], r["stage"]) for r in excluded] == [("900001", "excluded")]
    assert excluded[0]["reason"] == "object type 'Photographs' is excluded (--exclude-types photographs)"
    labels = labels_of(out, manifest)
    dates = {i: (r["year_start"], r["year_end"], r["date_text"], r["museum"]) for i, r in labels.items()}
    assert dates == {  # the Met's own begin and end years, its Object Date kept beside them
        "436535": (1889, 1889, "1889", "met"),
        "53426": (1834, 1866, "mid-19th century", "met"),
        "45734": (1667, 1682, "late 17th century", "met"),
        "544679": (-1395, -1331, "ca. 1390–1336 BCE", "met"),
        "546960": (-1550, -1550, "ca. 1550–1458 B.C.", "met"),  # the API's quirk, kept as the Met gives it
        "548235": (-3650, -3650, "ca. 3650–3300 B.C.", "met"),
        "777": (None, None, "", "met"),  # no date: a work to date
    }
    assert labels["436535"]["title"] == title and labels["436535"]["split"] in ("train", "val")


def test_columns_read_another_export_and_refuse_what_it_lacks(tmp_path, capsys):
    # A collection spreadsheet of another shape: its own names, the date as text, images beside it.
    images = sorted(sample_images(3).items())
    (tmp_path / "scans").mkdir()
    for name, data in images:
        (tmp_path / "scans" / f"{name}.jpg").write_bytes(data)
    sheet = tmp_path / "collection.csv"
    sheet.write_text(
        "Accession No,Object title,Maker,Date,Scan\n"
        f'A.1,"Portrait, with a dog",Anon.,c. 1650,{images[0][0]}.jpg\n'
        f"A.2,Landscape,Anon.,1665–67,{images[1][0]}.jpg\n"
        f"A.3,Study,Anon.,n.d.,{images[2][0]}.jpg\n",
        encoding="utf-8",
    )
    columns = ["id=Accession No", "title=Object title", "artist=Maker", "date=Date", "file=Scan"]
    out = tmp_path / "store"
    argv = ["pack", "--metadata", str(sheet), "--images", str(tmp_path / "scans"), "--size", "32", "--jobs", "1"]
    assert main([*argv, "--quiet", "--out", str(out), "--columns", *columns]) == 0
    assert capsys.readouterr().out.startswith("packed 3 (1 undated, to date: never trained on), rejected 0, ")
    manifest = json.loads((out / "manifest.json").read_text())
    labels = labels_of(str(out), manifest)
    assert {i: (r["year_start"], r["year_end"], r["date_text"], r["title"]) for i, r in labels.items()} == {
        "A.1": (1645, 1655, "c. 1650", "Portrait, with a dog"),
        "A.2": (1665, 1667, "1665–67", "Landscape"),
        "A.3": (None, None, "n.d.", "Study"),
    }
    assert manifest["settings"]["columns"] == columns

    # An unknown name, or a column the file lacks: one line, exit 2, before any work (no store).
    for wrong, message in [
        ("accession=Accession No", "--columns 'accession=Accession No': artdate has no column 'accession'; it has id,"),
        ("date=Dated", f"{sheet}:1: --columns date='Dated': no such column; the file has ['Accession No', "),
    ]:
        assert main([*argv, "--quiet", "--out", str(tmp_path / "never"), "--columns", "id=Accession No", wrong]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"artdate pack: error: {message}") and error.count("\n") == 1
        assert not (tmp_path / "never").exists()


@pytest.mark.slow  # about a minute on 2 cores: a 230 MB file written and read
def test_an_export_of_the_mets_size_is_read_with_flat_memory(tmp_path):
    # 500,000 rows in MetObjects.csv's shape (the real header, rows as long as the Met's): the read
    # takes as much memory as one of 5,000 rows, the works in a scratch file, the excluded too.
    small = read_export_in_a_fresh_process(write_synthetic_met_export(str(tmp_path / "small.csv"), 5_000))
    large = read_export_in_a_fresh_process(write_synthetic_met_export(str(tmp_path / "MetObjects.csv"), 500_000))
    assert large[:3] == (214_286, 250_000, 35_714)  # public domain, not, photographs among the public domain
    assert large[4] < small[4] + 10, f"peak RSS {large[4]:.0f} MB at 500k rows against {small[4]:.0f} MB at 5k"
    assert large[4] < 60
