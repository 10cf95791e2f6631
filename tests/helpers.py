"""What the tests share besides fixtures: where the sample lives, packing it, and waiting for Ray
to register a checkpoint."""

import os
import time

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


def wait_for_registered(storage: str, fragment: str, still_running, timeout: float = 300) -> None:
    """Until Ray has registered a checkpoint whose metrics hold `fragment` (`"epoch":0`): its
    snapshot in the storage lists the registered ones. A checkpoint already written but not yet
    registered (not every rank has reported it) when a worker dies is not resumed from."""
    from artdate import store

    snapshot = store.join(storage, "checkpoint_manager_snapshot.json")
    deadline = time.monotonic() + timeout
    while not (store.exists(snapshot) and fragment in store.read_bytes(snapshot).decode().replace(" ", "")):
        assert still_running(), f"the run ended before a checkpoint with {fragment} was registered"
        assert time.monotonic() < deadline, f"no checkpoint with {fragment} registered in {timeout} s"
        time.sleep(0.2)
