"""Storage URLs: region resolution and atomic writes of any size, against a real S3 server."""

import json
import os
import subprocess
import sys

import pytest

from artdate.core import store


def test_region_comes_from_the_standard_chain_not_a_default(tmp_path):
    # A fresh process, as a user's: boto3 reads the config file once per process.
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-west-3\n")
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_DEFAULT_REGION", "AWS_REGION")}
    env["AWS_CONFIG_FILE"] = str(config)
    probe = (
        "from artdate.core import store; fs, path = store.pyarrow_filesystem('s3://bucket/runs/r1'); "
        "print(store.s3_client().meta.region_name, fs.region, path)"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["eu-west-3", "eu-west-3", "bucket/runs/r1"]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_atomic_output_appears_whole_or_not_at_all(where, tmp_path, request):
    base = request.getfixturevalue("s3_url") if where == "s3" else str(tmp_path / "out")
    url = store.join(base, "results.csv")
    piece = b"x" * 2**20
    with store.atomic_output(url) as out:
        for _ in range(70):  # 70 MB: above the multipart threshold on S3
            out.write(piece)
        assert not store.exists(url)  # nothing visible while it is written
    assert store.exists(url) and len(store.read_bytes(url)) == 70 * 2**20

    failed = store.join(base, "failed.csv")
    with pytest.raises(RuntimeError), store.atomic_output(failed) as out:
        out.write(b"half")
        raise RuntimeError("crash mid-write")
    assert not store.exists(failed)
    if where == "local":
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.csv"]  # no leftovers


def test_a_claim_is_written_once_and_names_what_differs(tmp_path):
    url = str(tmp_path / "run.json")
    identity = {"backbone": "resnet152", "year_window": (1200, 1930)}
    assert store.claim(url, identity) == {}  # claimed
    assert store.claim(url, identity) == {}  # the same run again: tuples read back as lists
    assert store.claim(url, {"backbone": "resnet50", "seed": 1}) == {
        "backbone": ("resnet152", "resnet50"),
        "seed": (None, 1),
        "year_window": ([1200, 1930], None),
    }
    assert json.loads(open(url).read())["backbone"] == "resnet152"  # the first claim stays
