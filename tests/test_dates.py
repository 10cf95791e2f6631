"""Dates written as text, read by edtf behind dates.py's layer: each form the docs promise a range
for, through pack, and the texts no rule reads."""

import json
import tarfile

import pytest

from artdate.core.config import PackConfig
from artdate.pack.dates import read_date
from artdate.pack.metadata import MetadataError
from artdate.pack.run import run_pack
from tests.support.museums import have_fixtures, sample_images

# text -> (year_start, year_end) as docs/commands.md's date rules promise; None: an undated work
FORMS = {
    "1652": (1652, 1652),
    "dated 1652": (1652, 1652),
    "c. 1650": (1645, 1655),  # a circa widens by 5 years each side
    "ca. 1650": (1645, 1655),
    "1665–67": (1665, 1667),  # an en dash, the end year shortened
    "1560/68": (1560, 1568),
    "17th century": (1600, 1699),
    "1800s": (1800, 1899),
    "1890s": (1890, 1899),
    "early 1890s": (1890, 1893),  # thirds, sharing their boundary years
    "mid-19th century": (1833, 1866),
    "late 1800s": (1866, 1899),
    "first half of the 17th century": (1600, 1649),
    "second half of the 17th century": (1650, 1699),
    "third quarter of the 18th century": (1750, 1774),
    "18th–19th century": (1700, 1899),
    "before 1700": (1690, 1700),  # edtf's open start: the ten years up to it
    "after 1700": (1700, 1710),
    "ca. 50–40 BCE": (-55, -35),  # BCE negative, on both ends
    "16th century BCE": (-1599, -1500),
    "-2118": (-2118, -2118),
    "50": (50, 50),
    "probably 19th century": (1800, 1899),
    "n.d.": None,
    "undated": None,
}
UNREAD = ["Edo period", "1890 or 1891", "May 5, 1890", "1652, retouched 1660", "1700–1650", "3rd millennium B.C."]


@pytest.mark.parametrize("text", sorted(FORMS))
def test_each_form_reads_as_the_docs_promise(text):
    assert read_date(text) == FORMS[text]


@pytest.mark.parametrize("text", UNREAD)
def test_a_text_no_rule_reads_is_an_error_never_a_guess(text):
    with pytest.raises(ValueError, match=f"date {text!r}: "):
        read_date(text)


@pytest.mark.skipif(not have_fixtures(), reason="needs ../shared/artworks-sample")
def test_every_form_through_pack_and_a_text_no_rule_reads_names_file_line_and_text(tmp_path):
    image = next(iter(sample_images(1).values()))
    (tmp_path / "scans").mkdir()
    lines = ["id,date,file"]
    for n, text in enumerate(FORMS):
        (tmp_path / "scans" / f"w{n}.jpg").write_bytes(image)
        lines.append(f'w{n},"{text}",w{n}.jpg')
    sheet = tmp_path / "dates.csv"
    sheet.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = dict(images=str(tmp_path / "scans"), size=32, jobs=1, year_min=-5000, year_max=2100)
    manifest = run_pack(PackConfig(metadata=(str(sheet),), out=str(tmp_path / "store"), **settings), progress=False)
    read = {}
    for shard in manifest["shards"]:
        with tarfile.open(tmp_path / "store" / shard["name"]) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    labels = json.load(tar.extractfile(member))
                    read[labels["date_text"]] = labels
    assert set(read) == set(FORMS)
    for text, span in FORMS.items():
        labels = read[text]
        if span is None:
            assert (labels["year"], labels["split"]) == (None, "undated"), text
        else:
            assert (labels["year_start"], labels["year_end"]) == span, text
            assert labels["split"] in ("train", "val"), text

    bad = tmp_path / "bad.csv"
    bad.write_text('id,date,file\nw0,c. 1650,w0.jpg\nw1,"Edo period",w1.jpg\n', encoding="utf-8")
    with pytest.raises(MetadataError, match=rf"{bad}:3: date 'Edo period': no rule reads it"):
        run_pack(PackConfig(metadata=(str(bad),), out=str(tmp_path / "never"), **settings), progress=False)
