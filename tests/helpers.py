"""What the tests share besides fixtures: where the sample lives, and packing it."""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The sample's works (facts) ship in metadata/sample; its images stay in ../shared, where they were
# copied to: a test that needs them skips without it.
SAMPLE_CSV = os.path.join(ROOT, "metadata", "sample", "artworks.csv")
SHARED_SAMPLE = os.path.join(os.path.dirname(ROOT), "shared", "artworks-sample")
SAMPLE_IMAGES = os.path.join(SHARED_SAMPLE, "images")
requires_sample = pytest.mark.skipif(
    not os.path.isdir(SAMPLE_IMAGES), reason="needs the sample's images in ../shared/artworks-sample"
)


def need_sample() -> None:
    if not os.path.isdir(SAMPLE_IMAGES):
        pytest.skip("needs the sample's images in ../shared/artworks-sample")


def pack_sample(out: str, samples_per_shard: int = 32, size: int = 96) -> dict:
    from artdate.config import PackConfig
    from artdate.pack import run_pack

    need_sample()
    settings = PackConfig(
        metadata=(SAMPLE_CSV,),
        images=SHARED_SAMPLE,
        out=out,
        size=size,
        samples_per_shard=samples_per_shard,
        year_min=-1000,
        year_max=2100,
        jobs=1,
    )
    return run_pack(settings, progress=False)
