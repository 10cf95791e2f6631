import csv
import os
import tarfile
import time

import pytest

from artdate.config import PackConfig
from artdate.pack import run_pack
from artdate.sources import FetchError, HttpClient, RijksSource, redact
from artdate.metadata import Work
from servers import MuseumApi
from test_pack import sample_images_by_id


@pytest.fixture
def api():
    server = MuseumApi(sample_images_by_id(4), slow_seconds=2.0).start()
    yield server
    server.stop()


def rejects_of(out):
    with open(os.path.join(out, "rejects.csv")) as f:
        return {row["id"]: row["reason"] for row in csv.DictReader(f)}


def test_met_api_with_failures(tmp_path, api):
    good = list(api.images)
    ids = good + ["404", "noimage", "flaky429", "flaky500", "slow", "truncated", "huge", "notimage"]
    metadata = tmp_path / "met-data.csv"
    metadata.write_text("id,year\n" + "".join(f"{i},1600\n" for i in ids))
    out = str(tmp_path / "store")
    manifest = run_pack(
        PackConfig(metadata=(str(metadata),), out=out, source="met", api_url=f"{api.url}/met", timeout=0.5,
                   retries=1, max_bytes=5_000_000, rate=50, jobs=1, size=64),
        progress=False,
    )
    rejects = rejects_of(out)
    assert manifest["packed"] == len(good) + 2  # the flaky ones succeed on their retry
    assert set(rejects) == {"404", "noimage", "slow", "truncated", "huge", "notimage"}
    assert rejects["404"].startswith("HTTP 404 from http://127.0.0.1")
    assert rejects["noimage"] == "the Met has no public image for object noimage"
    assert "timed out" in rejects["slow"] and "gave up after 2 attempts" in rejects["slow"]
    assert "truncated body" in rejects["truncated"]
    assert "1000000000 bytes, over the cap of 5000000" in rejects["huge"]
    assert rejects["notimage"] == "not an image"
    assert api.count("/img/flaky429") == 2 and api.count("/img/flaky500") == 2
    assert api.count("/met/objects/404") == 1  # a 404 is final: no retry


def test_rijks_api_needs_the_key_from_the_environment(tmp_path, api, monkeypatch):
    monkeypatch.delenv("RIJKSMUSEUM_API_KEY", raising=False)
    with pytest.raises(ValueError, match="set RIJKSMUSEUM_API_KEY"):
        RijksSource(HttpClient())
    monkeypatch.setenv("RIJKSMUSEUM_API_KEY", api.rijks_key)
    metadata = tmp_path / "rijksmuseum-data.csv"
    metadata.write_text("id,year\n" + "".join(f"{i},1650\n" for i in api.images) + "noimage,1650\n")
    out = str(tmp_path / "store")
    manifest = run_pack(
        PackConfig(metadata=(str(metadata),), out=out, source="rijks", api_url=f"{api.url}/rijks", jobs=1, size=64),
        progress=False,
    )
    assert manifest["packed"] == len(api.images)
    assert manifest["museums"] == {"rijks": len(api.images)}
    assert rejects_of(out) == {"noimage": "the Rijksmuseum has no public image for object noimage"}


def test_a_wrong_key_is_reported_without_the_key(api):
    source = RijksSource(HttpClient(attempts=1), api_url=f"{api.url}/rijks", key="secret-value")
    with pytest.raises(FetchError) as error:
        source.fetch(Work("rijks", "SK-A-1", 1650, 1650, 1650, "train"))
    assert "HTTP 401" in str(error.value) and "secret-value" not in str(error.value)
    assert redact("https://x/y?key=abc&format=json") == "https://x/y?key=***&format=json"


def test_rate_limit_spaces_requests(api):
    client = HttpClient(rate=20)
    started = time.monotonic()
    for _ in range(11):
        client.get(f"{api.url}/met/objects/1")
    assert time.monotonic() - started >= 0.45  # 10 gaps of 1/20 s


def test_only_http_urls_are_fetched():
    with pytest.raises(FetchError, match="not an http"):
        HttpClient().get("file:///etc/passwd")


@pytest.fixture
def loopback_only(monkeypatch):
    """Connections to anything but loopback fail here (and are recorded), so a test of the refusal
    cannot send traffic off this machine even if the code under test is wrong."""
    import urllib3.util.connection

    real = urllib3.util.connection.create_connection
    attempted = []

    def guarded(address, *args, **kwargs):
        host = address[0]
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            attempted.append(host)
            raise OSError(f"test guard: no connection to {host}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", guarded)
    return attempted


def test_redirects_stay_on_http_and_off_metadata_addresses(api, loopback_only):
    client = HttpClient(attempts=1)
    with pytest.raises(FetchError, match="redirected to a URL that is not http"):
        client.get(f"{api.url}/redirect?to=file:///etc/passwd")
    for url in (f"{api.url}/redirect?to=http://169.254.169.254/latest/meta-data/", "http://169.254.169.254/",
                "http://[fd00:ec2::254]/latest/", "http://[::ffff:169.254.169.254]/"):
        with pytest.raises(FetchError, match="link-local or cloud metadata address"):
            client.get(url)
    assert loopback_only == []  # refused before connecting
    with pytest.raises(FetchError, match="cannot connect"):
        HttpClient(attempts=1, allow_link_local=True).get("http://169.254.169.254/")
    assert loopback_only == ["169.254.169.254"]  # the flag lets it through


def test_one_deadline_for_the_whole_download(api):
    started = time.monotonic()
    with pytest.raises(FetchError, match="did not arrive within the deadline of 1 s"):
        HttpClient(attempts=1, timeout=1.0).get(f"{api.url}/img/drip")  # each byte comes well within 1 s
    assert time.monotonic() - started < 3


def test_retry_after_as_an_http_date_is_honoured(api):
    started = time.monotonic()
    body = HttpClient(attempts=2, backoff=0).get(f"{api.url}/img/retrydate")
    assert body == api.images[next(iter(api.images))]
    assert api.count("/img/retrydate") == 2 and time.monotonic() - started >= 0.9


def test_works_that_failed_for_a_passing_reason_are_fetched_again_on_a_rerun(tmp_path, api):
    good = list(api.images)
    metadata = tmp_path / "met-data.csv"
    metadata.write_text("id,year\n" + "".join(f"{i},1600\n" for i in good + ["later1", "later2", "404"]))
    out = str(tmp_path / "store")
    settings = PackConfig(metadata=(str(metadata),), out=out, source="met", api_url=f"{api.url}/met", retries=1,
                          rate=100, jobs=1, size=64, samples_per_shard=3)
    api.down = {"later1", "later2"}
    first = run_pack(settings, progress=False)
    assert first["packed"] == len(good) and first["transient"] == 2
    rejects = rejects_of(out)
    assert set(rejects) == {"later1", "later2", "404"} and "HTTP 503" in rejects["later1"]
    requests_before = list(api.requests)

    api.down = set()  # the outage is over
    second = run_pack(settings, progress=False)
    assert second["packed"] == len(good) + 2 and second["transient"] == 0
    assert set(rejects_of(out)) == {"404"}
    again = api.requests[len(requests_before):]
    assert sorted(again) == sorted(["/met/objects/later1", "/img/later1", "/met/objects/later2", "/img/later2"])
    keys = []
    for shard in second["shards"]:
        with tarfile.open(os.path.join(out, shard["name"])) as tar:
            keys += [name for name in tar.getnames() if name.endswith(".jpg")]
    assert sorted(keys) == sorted(f"met_{i}.jpg" for i in good + ["later1", "later2"])  # each work once

    count = len(api.requests)
    assert run_pack(settings, progress=False)["packed"] == len(good) + 2
    assert len(api.requests) == count  # finished: nothing fetched
