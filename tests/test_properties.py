"""Property-based tests (hypothesis): the metadata parser on any input, the label encoding on any years."""

import csv
import io
import os
import string
import tarfile
import tempfile

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from artdate.core.config import PackConfig
from artdate.model.network import LabelEncoding
from artdate.pack.metadata import MetadataError, read_metadata
from artdate.pack.run import run_pack

# In CI (CI=true) the examples are derived from the test names, so a submission's run is
# reproducible; elsewhere each run explores new ones.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


def read_text_as_metadata(content: str, **options):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "works.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(content)
        try:
            return path, read_metadata([path], **options), None
        except MetadataError as problem:
            return path, None, problem


@settings(max_examples=200, deadline=None)
@given(
    header=st.sampled_from(["id,year\n", "id,year_start,year_end\n", "museum,id,year,title\n", "x,y\n", ""]),
    body=st.text(st.characters(blacklist_categories=("Cs",)), max_size=200),
)
def test_any_file_is_read_or_refused_with_file_and_line(header, body):
    path, result, problem = read_text_as_metadata(header + body, museum="met", year_min=-10000, year_max=2100)
    if problem is not None:
        lines = str(problem).splitlines()
        located = [line for line in lines if f"{path}:" in line]
        assert located, str(problem)  # every refusal names the file and a line
        for line in located:
            number = int(line.split(f"{path}:", 1)[1].split(":", 1)[0])
            assert 1 <= number <= (header + body).count("\n") + (header + body).count("\r") + 1
    else:
        for work in result.works:  # a work is dated within its range, or a work to date with no years at all
            assert work.id
            dated = (work.year_start, work.year, work.year_end)
            assert dated == (None, None, None) or work.year_start <= work.year <= work.year_end, dated


ROW = st.tuples(
    st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12),
    st.integers(1200, 1930),
    st.integers(0, 80),
    TEXT,
)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(ROW, max_size=20, unique_by=lambda row: row[0]))
def test_rows_written_by_a_csv_writer_round_trip(rows):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "works.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "year_start", "year_end", "title"])
            writer.writerows([(work_id, start, start + length, title) for work_id, start, length, title in rows])
        works = read_metadata([path], museum="met", year_min=1000, year_max=2100).works
    assert [(w.id, w.year_start, w.year_end, w.title) for w in works] == [
        (work_id, start, start + length, title.strip()) for work_id, start, length, title in rows
    ]
    assert all(w.year == (w.year_start + w.year_end + 1) // 2 for w in works)


ENCODING = st.builds(
    LabelEncoding, loss=st.just("bins"), year_min=st.integers(-500, 1500), bin_width=st.integers(1, 100)
).map(lambda e: LabelEncoding("bins", year_min=e.year_min, year_max=e.year_min + 700, bin_width=e.bin_width))


@settings(max_examples=200, deadline=None)
@given(encoding=ENCODING, start=st.integers(-3000, 3000), length=st.integers(0, 400))
def test_bin_targets_sum_to_one_and_cover_the_date_range(encoding, start, length):
    targets = encoding.targets(torch.tensor([start]), torch.tensor([start]), torch.tensor([start + length]))[0]
    assert torch.isclose(targets.sum(), torch.tensor(1.0))
    centers = encoding.bin_centers()
    low, high = (min(max(y, encoding.year_min), encoding.year_max) for y in (start, start + length))
    half = (encoding.bin_width - 1) / 2
    covered = (centers + half >= low) & (centers - half <= high)  # bins that touch the clamped range
    assert torch.equal(targets > 0, covered)
    assert centers[0] - half == encoding.year_min and centers[-1] + half >= encoding.year_max


@settings(max_examples=200, deadline=None)
@given(
    encoding=ENCODING,
    offset=st.integers(0, 700),
    regression=st.builds(
        LabelEncoding, loss=st.sampled_from(["mse", "l1", "huber"]), mean=st.floats(1000, 2000), std=st.floats(1, 500)
    ),
)
def test_years_round_trip_through_the_encodings(encoding, offset, regression):
    year = torch.tensor([encoding.year_min + offset])
    decoded, _, _, spread = encoding.decode(torch.log(encoding.targets(year, year, year)))
    assert abs(decoded.item() - year.item()) <= encoding.bin_width / 2 and spread.item() < 1e-3
    regression = LabelEncoding(regression.loss, regression.mean, regression.std, encoding.year_min, encoding.year_max)
    as_output = regression.targets(year, year, year)[:, None]
    assert abs(regression.decode(as_output)[0].item() - year.item()) < 1e-2  # inside the window: exact


def tiny_jpeg() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 80, 40)).save(out, "JPEG")
    return out.getvalue()


CSV_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=120).filter(
    lambda text: text.strip() == text
)


@given(st.lists(st.tuples(CSV_TEXT, CSV_TEXT), min_size=1, max_size=4, unique=True))
@settings(max_examples=15, deadline=None)
def test_any_museum_and_id_pack_and_read_back(rows):
    rows = list({(m.lower(), i): (m, i) for m, i in rows}.values())  # museums are compared in lower case
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "image.jpg"), "wb") as f:
            f.write(tiny_jpeg())
        path = os.path.join(folder, "works.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["museum", "id", "year", "file"])
            writer.writerows([museum, work_id, 1600, "image.jpg"] for museum, work_id in rows)
        out = os.path.join(folder, "store")
        manifest = run_pack(PackConfig(metadata=(path,), out=out, jobs=1, size=8, val_fraction=0), progress=False)
        assert manifest["packed"] == len(rows), manifest
        with tarfile.open(os.path.join(out, manifest["shards"][0]["name"])) as tar:
            import json

            labels = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
        assert sorted((label["museum"], label["id"]) for label in labels) == sorted((m.lower(), i) for m, i in rows)


# The modes an image file can open in, with the formats that write each (Pillow 11+).
MODE_FORMATS = {
    "1": ("PNG", "TIFF", "BMP"),
    "L": ("PNG", "TIFF", "JPEG", "WEBP", "GIF"),
    "LA": ("PNG", "TIFF"),
    "P": ("PNG", "TIFF", "GIF"),
    "PA": ("TIFF",),
    "RGB": ("PNG", "TIFF", "JPEG", "WEBP", "BMP"),
    "RGBA": ("PNG", "TIFF", "WEBP"),
    "CMYK": ("TIFF", "JPEG"),
    "YCbCr": ("TIFF",),
    "LAB": ("TIFF",),
    "I": ("TIFF",),
    "I;16": ("PNG", "TIFF"),
    "I;16B": ("TIFF",),
    "F": ("TIFF",),
}
# Each mode's values: (low, high) a generated image spans part of.
MODE_VALUES = {"I": (-(2**30), 2**30), "I;16": (0, 65535), "I;16B": (0, 65535), "F": (-1e6, 1e6), "1": (0, 1)}


def smooth_values(seed: int, low: float, high: float, size: tuple[int, int]):
    """A smooth random picture (a 3x3 grid of values blown up), from `low` to `high`: JPEG and
    shrinking keep its shape, so the packed image can be compared with it."""
    import numpy as np
    from PIL import Image

    grid = np.random.default_rng(seed).random((3, 3), dtype=np.float32)
    grid = (grid - grid.min()) / (np.ptp(grid) or 1)
    field = np.asarray(Image.fromarray(grid, "F").resize(size, Image.Resampling.BILINEAR))
    return low + field * (high - low)


def image_of_mode(mode: str, size: tuple[int, int], seed: int, band: tuple[float, float], constant: bool):
    """An image of `mode` whose values span the part `band` (fractions) of the mode's range."""
    import numpy as np
    from PIL import Image

    lowest, highest = MODE_VALUES.get(mode, (0, 255))
    low, high = (lowest + (highest - lowest) * fraction for fraction in band)
    values = smooth_values(seed, low, low if constant else high, size)
    if mode == "F":
        return Image.fromarray(values.astype(np.float32), "F")
    if mode in ("I", "I;16", "I;16B"):
        dtype = {"I": np.int32, "I;16": np.uint16, "I;16B": ">u2"}[mode]
        return Image.frombytes(mode, size, np.round(values).astype(dtype).tobytes())
    grey = Image.fromarray(np.round(values).astype(np.uint8), "L")
    if mode == "1":
        return grey.point(lambda v: 255 * v).convert("1", dither=Image.Dither.NONE)
    if mode == "P":
        return grey.convert("P", palette=Image.Palette.ADAPTIVE)
    if mode in ("LA", "PA"):  # opaque: the content test is about the picture, not transparency
        return Image.merge("LA", (grey, grey.point(lambda v: 255)))
    return grey if mode == "L" else grey.convert("RGB").convert(mode)


IMAGE = st.tuples(
    st.sampled_from(sorted(MODE_FORMATS)),
    st.integers(1, 160),
    st.integers(1, 160),
    st.integers(0, 2**31),  # the picture
    st.floats(0, 0.99).flatmap(lambda low: st.tuples(st.just(low), st.floats(low + 0.001, 1))),  # the band
    st.booleans(),  # constant
    st.integers(0, 10),  # which format
)


@given(st.lists(IMAGE, min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_every_image_mode_packs_with_its_content_or_is_refused_by_name(images):
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        sources = {}
        for n, (mode, width, height, seed, band, constant, which) in enumerate(images):
            image = image_of_mode(mode, (width, height), seed, band, constant)
            if mode == "PA":
                image = image.convert("PA")
            formats = MODE_FORMATS[mode]
            fmt = formats[which % len(formats)]
            path = os.path.join(folder, f"{n}.{fmt.lower()}")
            image.save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
            sources[str(n)] = (mode, fmt, Image.open(path))
        with open(os.path.join(folder, "works.csv"), "w") as f:
            f.write("id,year,file\n" + "".join(f"{n},1600,{n}.{fmt.lower()}\n" for n, (_, fmt, _) in sources.items()))
        out = os.path.join(folder, "store")
        manifest = run_pack(
            PackConfig(metadata=(os.path.join(folder, "works.csv"),), out=out, size=64, val_fraction=0, jobs=1),
            progress=False,
        )
        with open(os.path.join(out, "rejects.csv")) as f:
            rejected = {row["id"]: row["reason"] for row in csv.DictReader(f)}
        for work_id, reason in rejected.items():
            assert sources[work_id][0] in reason, (sources[work_id][:2], reason)  # refused by name
        packed = {}
        for shard in manifest["shards"]:
            with tarfile.open(os.path.join(out, shard["name"])) as tar:
                for member in tar.getmembers():
                    if member.name.endswith(".jpg"):
                        work_id = member.name.split("_", 1)[1][: -len(".jpg")]
                        packed[work_id] = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("L")
        assert set(packed) | set(rejected) == set(sources)
        for work_id, jpg in packed.items():
            mode, fmt, source = sources[work_id]
            deep = mode in ("I", "I;16", "I;16B", "F")
            if deep:  # the values themselves, whatever their depth and range
                reference = np.asarray(source.convert("F"), dtype=np.float64)
            else:  # 8 bits a channel: Pillow's own conversion keeps the picture
                reference = np.asarray(source.convert("RGB").convert("L"), dtype=np.float64)
            packed_values = np.asarray(jpg, dtype=np.float64)
            if np.ptp(reference) == 0:  # constant: it stays constant
                assert np.ptp(packed_values) <= 8, (mode, fmt)
                continue
            if not deep and np.ptp(reference) < 16:  # a few grey levels: JPEG may merge them
                continue
            assert np.ptp(packed_values) > 0, (mode, fmt, "became a constant image")
            if min(jpg.size) >= 8:  # enough pixels to compare shapes after JPEG and shrinking
                shrunk = np.asarray(Image.fromarray(reference.astype(np.float32), "F").resize(jpg.size))
                correlation = np.corrcoef(shrunk.ravel(), packed_values.ravel())[0, 1]
                assert correlation > 0.9, (mode, fmt, correlation)
