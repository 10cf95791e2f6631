import os

import pytest

from artdate.pack.metadata import MetadataError, coarse_span, read_coarse_dates, read_metadata
from tests.support.helpers import ROOT, SAMPLE_CSV

# metadata/SOURCE.md: 30178 Rijksmuseum rows lie in 1200..1930; 292 of them repeat a row exactly.
RIJKS_IN_WINDOW = 29886


def write(tmp_path, text, name="works.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_reads_the_bundled_sample():
    result = read_metadata([SAMPLE_CSV], year_min=-1000, year_max=2100)
    assert len(result.works) == 300
    assert {w.museum for w in result.works} == {"aic", "met", "nga", "cma", "si"}
    work = next(w for w in result.works if w.museum == "aic" and w.id == "878")
    assert (work.year, work.year_start, work.year_end) == (1869, 1868, 1870)
    assert work.file == "images/aic_878.jpg"


def test_original_lists_with_museum_from_file_name():
    met = os.path.join(ROOT, "metadata", "met-data.csv")
    rijks = os.path.join(ROOT, "metadata", "rijksmuseum-data.csv")
    result = read_metadata([met, rijks])  # default window 1200..1930, as in 2017
    counts = {m: sum(w.museum == m for w in result.works) for m in ("met", "rijks")}
    assert counts == {"met": 41558, "rijks": RIJKS_IN_WINDOW}
    assert result.duplicates == 294  # the Rijksmuseum file repeats 294 rows exactly
    assert len({(w.museum, w.id) for w in result.works}) == len(result.works)


def test_works_without_a_year_are_undated_works_to_date_not_bad_rows(tmp_path):
    # Issue 39: an empty year, or no year column at all, lists works to date.
    mixed = write(tmp_path, "id,year,year_start,year_end,file\na,1500,,,a.jpg\nb,,,,b.jpg\nc,1100,,,c.jpg\n")
    result = read_metadata([mixed], museum="met", val_fraction=0)
    works = {w.id: w for w in result.works}
    assert (works["b"].year, works["b"].year_start, works["b"].split) == (None, None, "undated")
    assert works["a"].split == "train" and "c" not in works and result.out_of_window == 1  # the window drops no undated
    only_ids = write(tmp_path, "id,file\nx,x.jpg\ny,y.jpg\n", "to-date.csv")
    assert [(w.id, w.split) for w in read_metadata([only_ids], museum="met").works] == [
        ("x", "undated"),
        ("y", "undated"),
    ]
    assert [w.id for w in read_metadata([write(tmp_path, "id\nz\n", "ids.csv")], museum="met").works] == ["z"]
    with pytest.raises(MetadataError, match=r":2: year 'soon' is not a number"):  # a year given must be a year
        read_metadata([write(tmp_path, "id,year\nq,soon\n", "bad.csv")], museum="met")
    assert read_metadata([write(tmp_path, "id,year\nu,\n", "u.csv")], museum="met").works[0].labels()["year"] is None


def test_year_window_filters_and_counts(tmp_path):
    path = write(tmp_path, "id,year\na,1100\nb,1500\nc,1931\n")
    result = read_metadata([path], museum="met")
    assert [w.id for w in result.works] == ["b"]
    assert result.out_of_window == 2


def test_range_gives_the_middle_year(tmp_path):
    path = write(tmp_path, "museum,id,year_start,year_end\nmet,1,1600,1650\nmet,2,1601,1602\n")
    years = {w.id: (w.year, w.year_start, w.year_end) for w in read_metadata([path]).works}
    assert years == {"1": (1625, 1600, 1650), "2": (1602, 1601, 1602)}


@pytest.mark.parametrize(
    "row, message",
    [
        ("a,c. 1631", "year 'c. 1631' is not a number"),
        ("a,1631.5", "not a whole year"),
        (",1631", "empty id"),
        ("a,99999", "outside any sane range"),
        ("a,1600,extra", "wrong number of fields"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path, f"id,year\nok,1500\n{row}\n")
    with pytest.raises(MetadataError) as error:
        read_metadata([path], museum="met")
    assert f"{path}:3: " in str(error.value)
    assert message in str(error.value)


def test_start_after_end_is_an_error(tmp_path):
    path = write(tmp_path, "museum,id,year_start,year_end\nmet,a,1700,1650\n")
    with pytest.raises(MetadataError, match=r":2: year_start 1700 is after year_end 1650"):
        read_metadata([path])


def test_conflicting_duplicate_names_both_lines(tmp_path):
    path = write(tmp_path, "id,year\na,1500\nb,1600\na,1501\n")
    with pytest.raises(MetadataError, match=r"works.csv:4: conflicting duplicate of .*works.csv:2"):
        read_metadata([path], museum="met")


def test_contradictory_rows_are_bad_rows_not_dropped_or_packed(tmp_path):
    path = write(tmp_path, "id,year,year_start,year_end,file\na,1900,1600,1700,a.jpg\nb,1650,,,b.jpg\nb,1650,,,c.jpg\n")
    with pytest.raises(MetadataError) as error:
        read_metadata([path], museum="met")
    assert f"{path}:2: year 1900 is outside its own range year_start..year_end 1600..1700" in str(error.value)
    assert f"{path}:4: conflicting duplicate of {path}:3: file differ" in str(error.value)


def test_a_csv_that_is_not_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("id,year,title\na,1600,Vue\nb,1650,Café\n".encode("latin-1"))
    with pytest.raises(MetadataError, match=rf"^{path}:3: not UTF-8 \(byte 0xe9\); save the file as UTF-8$"):
        read_metadata([str(path)], museum="met")
    path.write_bytes("id,année\na,1600\n".encode("latin-1"))  # in the header
    with pytest.raises(MetadataError, match=rf"^{path}:1: not UTF-8"):
        read_metadata([str(path)], museum="met")


def test_exact_duplicates_are_dropped_and_counted(tmp_path):
    path = write(tmp_path, "id,year\na,1500\na,1500\nb,1600\n")
    result = read_metadata([path], museum="met")
    assert sorted(w.id for w in result.works) == ["a", "b"]
    assert result.duplicates == 1


def test_rows_of_two_csvs_naming_one_image_through_images_are_exact_duplicates(tmp_path):
    """With --images the file column is read under it, not the CSV's folder: two CSVs in two
    folders whose rows agree name the same image (they were a "conflicting duplicate")."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = write(tmp_path / "one", "id,year,file\na,1500,a.jpg\n")
    second = write(tmp_path / "two", "id,year,file\na,1500,a.jpg\n")
    result = read_metadata([first, second], museum="met", images=str(tmp_path / "images"))
    assert [w.id for w in result.works] == ["a"] and result.duplicates == 1
    with pytest.raises(MetadataError, match="conflicting duplicate .* file's folder differ"):
        read_metadata([first, second], museum="met")  # without --images: two files of the same name


def test_skip_bad_rows_lists_them(tmp_path):
    path = write(tmp_path, "id,year\na,1500\nb,oops\nc,1600.5\n")
    result = read_metadata([path], museum="met", skip_bad_rows=True)
    assert [w.id for w in result.works] == ["a"]
    assert [(r.id, r.where.rsplit(":", 1)[1]) for r in result.rejected] == [("b", "3"), ("c", "4")]


def test_museum_from_column_option_whole_word_of_file_name_or_a_neutral_default(tmp_path):
    # "at least id,year" is the contract: no museum anywhere is not an error.
    (work,) = read_metadata([write(tmp_path, "id,year,file\na,1500,a.jpg\n", "list.csv")]).works
    assert work.museum == "unknown" and work.key == "unknown_a"
    # "metadata" contains "met", but not as a word: no museum is guessed from it.
    assert read_metadata([write(tmp_path, "id,year\na,1500\n", "my-metadata.csv")]).works[0].museum == "unknown"
    for name, museum in [("met-data.csv", "met"), ("rijksmuseum-data.csv", "rijks"), ("2017_rijks.csv", "rijks")]:
        assert read_metadata([write(tmp_path, "id,year\na,1500\n", name)]).works[0].museum == museum
    assert read_metadata([write(tmp_path, "id,year\na,1500\n", "met-data.csv")], museum="cma").works[0].museum == "cma"
    path = write(tmp_path, "museum,id,year\nnga,a,1500\n", "met-data.csv")
    assert read_metadata([path], museum="cma").works[0].museum == "nga"  # the column wins


def test_missing_columns_are_errors(tmp_path):
    with pytest.raises(MetadataError, match=r"list2.csv:1: needs an id column"):
        read_metadata([write(tmp_path, "name,date\na,1500\n", "list2.csv")], museum="met")
    with pytest.raises(MetadataError, match="cannot read"):
        read_metadata([str(tmp_path / "missing.csv")], museum="met")


def test_ids_that_once_shared_a_key_keep_their_own(tmp_path):
    path = write(tmp_path, "museum,id,year\ncma,1917.4,1500\ncma,1917-4,1600\ncma,1917/4,1700\ncma,1917 4,1800\n")
    keys = {w.key for w in read_metadata([path]).works}  # before: all four were cma_1917-4
    assert len(keys) == 4 and "cma_1917-4" in keys


def test_split_is_deterministic_and_independent_of_row_order(tmp_path):
    rows = [f"{i},{1300 + i % 600}" for i in range(2000)]
    forward = write(tmp_path, "id,year\n" + "\n".join(rows) + "\n", "a.csv")
    backward = write(tmp_path, "id,year\n" + "\n".join(reversed(rows)) + "\n", "b.csv")
    first = {w.id: w.split for w in read_metadata([forward], museum="met", val_fraction=0.2, seed=7).works}
    again = {w.id: w.split for w in read_metadata([backward], museum="met", val_fraction=0.2, seed=7).works}
    other_seed = {w.id: w.split for w in read_metadata([forward], museum="met", val_fraction=0.2, seed=8).works}
    assert first == again
    assert first != other_seed
    assert 0.17 < sum(s == "val" for s in first.values()) / len(first) < 0.23


def test_coarse_years_by_hand():
    assert coarse_span(1601) == (1601, 1700)  # Wikidata's century precision: the 17th century
    assert coarse_span(1650) == (1650, 1659) and coarse_span(1700) == (1700, 1709)
    assert coarse_span(1655) == (1655, 1655)  # a year that is not a round number stands for itself


def test_works_marked_coarse_train_as_the_span_their_year_stands_for(tmp_path):
    works = write(
        tmp_path,
        "museum,id,year,year_start,year_end\nmet,a,1650,,\nmet,b,1601,,\nrijks,a,1650,,\n"
        "met,c,,1640,1660\nmet,d,1650,,\n",
    )
    flags = write(tmp_path, "museum,id,flag\nmet,a,year ends in 0\n,b,coarse estimate\nmet,c,ranged\n", "flags.csv")
    marked = read_coarse_dates(flags)
    assert marked == {("met", "a"), ("", "b"), ("met", "c")}
    spans = {(w.museum, w.id): (w.year, w.year_start, w.year_end) for w in read_metadata([works], coarse=marked).works}
    assert spans == {
        ("met", "a"): (1650, 1650, 1659),  # the decade; the year itself is still what errors are measured on
        ("met", "b"): (1601, 1601, 1700),  # no museum in the flags: any museum's b
        ("rijks", "a"): (1650, 1650, 1650),  # another museum's a is not marked
        ("met", "c"): (1650, 1640, 1660),  # a range the data gives is kept
        ("met", "d"): (1650, 1650, 1650),  # not marked
    }
    with pytest.raises(MetadataError, match=r"bad.csv:1: needs an id column, has \['work', 'flag'\]"):
        read_coarse_dates(write(tmp_path, "work,flag\na,x\n", "bad.csv"))
    with pytest.raises(MetadataError, match=r"empty.csv:3: empty id"):
        read_coarse_dates(write(tmp_path, "id,flag\na,x\n ,y\n", "empty.csv"))
