"""Image sources against a loopback server that answers with the museums' recorded payloads."""

import csv
import json
import os
import socket
import threading
import time

import pytest

from artdate import USER_AGENT
from artdate.core.config import PackConfig
from artdate.core.http_client import FetchError, HttpClient, redact
from artdate.pack.fetched_image import Excluded, TypeFilter, singular
from artdate.pack.museums import iiif_size
from artdate.pack.rejects import NothingPacked, summary_line
from artdate.pack.run import run_pack
from artdate.pack.sources import api_roots, original_name
from tests.support.helpers import labels_of, shipped_pace
from tests.support.museums import (
    SAMPLE,
    SOAK_UNKNOWN,
    MuseumApi,
    have_fixtures,
    sample_images,
    soak_weather,
    soak_works,
)

pytestmark = pytest.mark.skipif(
    not have_fixtures(), reason="needs ../shared/museum-fixtures and ../shared/artworks-sample"
)


def rejects_of(out):
    with open(os.path.join(out, "rejects.csv")) as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def pack(tmp_path, api, rows, name="works.csv", out="store", **settings):
    metadata = tmp_path / name
    columns = sorted({column for row in rows for column in row}, key=["id", "year", "museum", "file"].index)
    metadata.write_text(
        ",".join(columns) + "\n" + "".join(",".join(row.get(c, "") for c in columns) + "\n" for row in rows)
    )
    defaults = dict(
        api_url=(f"met={api.root('met')}", f"rijks={api.root('rijks')}"),
        rate=100,
        jobs=1,
        size=64,
        year_min=-5000,
        retries=1,
        block_pause=0.2,
    )
    config = PackConfig(metadata=(str(metadata),), out=str(tmp_path / out), **{**defaults, **settings})
    return run_pack(config, progress=False), str(tmp_path / out)


def test_met_api_with_failures(tmp_path, api):
    good = list(api.images)
    ids = good + ["404", "915129", "flaky429", "flaky500", "slow", "truncated", "huge", "notimage"]
    manifest, out = pack(
        tmp_path,
        api,
        [{"id": i, "year": "1600"} for i in ids],
        name="met-data.csv",
        source="met",
        timeout=0.5,
        max_bytes=5_000_000,
    )
    rejects = {i: row["reason"] for i, row in rejects_of(out).items()}
    assert manifest["packed"] == len(good) + 2  # the flaky ones succeed on their retry
    assert set(rejects) == {"404", "915129", "slow", "truncated", "huge", "notimage"}
    assert rejects["404"].startswith("the Met does not know object 404 (HTTP 404 from http://127.0.0.1")
    assert rejects["915129"] == "the Met has no public image for object 915129 (not in the public domain)"
    assert "timed out" in rejects["slow"] and "gave up after 2 attempts" in rejects["slow"]
    assert "truncated body" in rejects["truncated"]
    assert "1000000000 bytes, over the cap of 5000000" in rejects["huge"]
    assert rejects["notimage"] == "not an image"
    assert api.count("/img/flaky429") == 2 and api.count("/img/flaky500") == 2
    assert api.count("/met/objects/404") == 1  # a 404 is final: no retry


def test_the_met_web_large_image_unless_the_work_is_long_and_narrow(tmp_path, api):
    # The Wheat Field (4:5 or so) is stored from web-large; the screen (wide) and the hanging scroll
    # (tall) would be under 384 px on their short side there, so their originals are fetched.
    ids = ["436535", "53426", "45734"]
    manifest, out = pack(
        tmp_path, api, [{"id": i, "year": "1700"} for i in ids], name="met-data.csv", source="met", size=384
    )
    assert manifest["packed"] == 3
    paths = [p for p in api.requests if p.startswith("/met-images/")]
    assert sum("/web-large/" in p for p in paths) == 3
    originals = sorted(p.rsplit("/", 1)[1] for p in paths if "/original/" in p)
    assert originals == ["DP251139.jpg", "PHOTS-1262-003.jpg"]
    labels = labels_of(out, manifest)
    assert labels["436535"]["object_type"] == "Painting" and labels["45734"]["object_type"] == "Hanging scroll"
    wheat, scroll = labels["436535"], labels["45734"]
    assert max(wheat["source_width"], wheat["source_height"]) == 600  # the web-large image
    assert max(scroll["source_width"], scroll["source_height"]) == 2400 and scroll["source_width"] < 1000


def test_rijksmuseum_through_its_keyless_services(tmp_path, api, monkeypatch):
    monkeypatch.delenv("RIJKSMUSEUM_API_KEY", raising=False)
    ids = ["SK-A-2344", "RP-T-1930-54(V)", "RP-T-1981-182-1", "TEST-ELSKEN-IN-COPYRIGHT", "SK-X-0000"]
    manifest, out = pack(
        tmp_path, api, [{"id": i, "year": "1650"} for i in ids], name="rijksmuseum-data.csv", source="rijks", size=64
    )
    assert manifest["packed"] == 2 and manifest["museums"] == {"rijks": 2}
    rejects = {i: row["reason"] for i, row in rejects_of(out).items()}
    assert rejects == {
        "RP-T-1981-182-1": "the Rijksmuseum has no image of RP-T-1981-182-1 (its VisualItem has no digitally_shown_by)",
        "TEST-ELSKEN-IN-COPYRIGHT": (
            "the Rijksmuseum marks the image of TEST-ELSKEN-IN-COPYRIGHT not downloadable (Copyright)"
        ),
        "SK-X-0000": "the Rijksmuseum's search finds no object number SK-X-0000",
    }
    # The chain as the museum serves it: search, object, VisualItem, DigitalObject, info.json, image.
    assert api.count("/rijks/search/collection?objectNumber=SK-A-2344") == 1
    iiif = [p for p in api.requests if p.startswith("/iiif/")]
    assert sorted(iiif) == ["/iiif/QkOGy/full/64,/0/default.jpg"] * 2 + ["/iiif/QkOGy/info.json"] * 2
    assert not [p for p in api.requests if "/full/max/" in p]
    linked_art = [h for p, h in zip(api.requests, api.headers) if p.startswith("/rijks-id/")]
    assert linked_art and all(h["Accept"] == "application/ld+json" for h in linked_art)
    labels = labels_of(out, manifest)
    assert labels["RP-T-1930-54(V)"]["object_type"] == "drawing"  # the record's type of work, in English
    assert (labels["SK-A-2344"]["source_width"], labels["SK-A-2344"]["source_height"]) == (64, 71)  # 4649 x 5177


def test_iiif_sizes_stay_within_the_original_and_the_servers_max_area():
    assert iiif_size(4649, 5177, 384, 17_550_000) == ("384,", False)
    assert iiif_size(5177, 4649, 384, 17_550_000) == (",384", False)
    assert iiif_size(300, 200, 384, 17_550_000) == (",200", True)  # never upscaled: the whole is the largest
    side, largest = iiif_size(20_000, 10_000, 8_000, 17_550_000)  # 8,000 x 16,000 would be over the area
    assert side == ",2962" and largest and 2962 * 5924 <= 17_550_000


def test_one_pack_over_both_museums_and_a_folder_through_a_403_block(tmp_path, api):
    # Both 2017-style lists in one pack with --source auto, plus a row with its own file; the Met's
    # front blocks in the middle of the pack, and one Met work is a photograph left out by type.
    sample_file = sorted(os.listdir(os.path.join(SAMPLE, "images")))[0]
    met_good = list(api.images)
    api.met_changes["777"] = {"classification": "Photographs", "objectName": "Photograph", "department": "Photographs"}
    rows = (
        [{"id": i, "year": "1600", "museum": "met"} for i in met_good + ["436535", "915129", "404", "777"]]
        + [{"id": i, "year": "1650", "museum": "rijks"} for i in ["SK-A-2344", "RP-T-1930-54(V)", "RP-T-1981-182-1"]]
        + [{"id": "local-1", "year": "1700", "museum": "aic", "file": os.path.join(SAMPLE, "images", sample_file)}]
    )
    api.block_met(after=2, seconds=1.5)
    manifest, out = pack(
        tmp_path, api, rows, source="auto", exclude_types=("photographs",), retries=4, block_pause=0.5, concurrency=4
    )
    assert api.blocked_answers >= 1  # the block happened ...
    # ... and the host was left alone while it lasted: the requests in flight when it began, then one
    # probe after each pause (0.5 s, 1 s), not every waiting download at once.
    assert api.blocked_answers <= 4 + 2, api.blocked_answers
    assert manifest["packed"] == len(met_good) + 1 + 2 + 1 and manifest["transient"] == 0
    assert manifest["museums"] == {"aic": 1, "met": len(met_good) + 1, "rijks": 2}
    assert manifest["excluded"] == 1 and manifest["rejected"] == 3
    rejects = rejects_of(out)
    assert {i: (row["stage"], row["transient"]) for i, row in rejects.items()} == {
        "915129": ("fetch", ""),
        "404": ("fetch", ""),
        "RP-T-1981-182-1": ("fetch", ""),
        "777": ("excluded", ""),
    }
    assert rejects["777"]["reason"] == "object type 'Photographs' is excluded (--exclude-types photographs)"
    assert not [p for p in api.requests if p.endswith("/777.jpg")]  # excluded before its image was asked for
    assert all(h["User-Agent"] == USER_AGENT for h in api.headers)
    assert USER_AGENT.startswith("artdate/0.1.0 (+https://")


def test_works_still_blocked_after_the_retries_are_transient_and_a_rerun_packs_them(tmp_path, api):
    rows = [{"id": i, "year": "1600"} for i in list(api.images) + ["436535"]]
    api.block_met(after=0, seconds=3600)
    with pytest.raises(NothingPacked, match=f"all {len(rows)} works were rejected; {len(rows)} of them transient"):
        pack(tmp_path, api, rows, name="met-data.csv", source="met", retries=2, block_pause=0.1)
    out = str(tmp_path / "store")
    assert not os.path.exists(os.path.join(out, "manifest.json"))  # not a finished store of nothing
    reasons = [row["reason"] for row in rejects_of(out).values()]
    # The works waited through the pauses one work's retries would take (0.1 + 0.2 + 0.4 s), with
    # one probe after each; then the host was given up for this run, every waiting work at once. A
    # work that happened to be every probe used up its own attempts first (one run in ~15 here).
    given_up = "has blocked requests for over 0.7 s (given up for this run); transient: a rerun retries it"
    own_attempts = "(a block) from http://127.0.0.1"
    assert all(
        given_up in r or (own_attempts in r and "still blocked (gave up after 3 attempts)" in r) for r in reasons
    ), reasons
    assert sum(given_up in r for r in reasons) >= len(rows) - 1, reasons
    assert api.blocked_answers <= len(rows) + 2  # those in flight when it began, and the probes
    api.blocked_until = 0.0  # the block is over
    manifest, out = pack(tmp_path, api, rows, name="met-data.csv", source="met", retries=2, block_pause=0.1)
    assert manifest["packed"] == len(rows) and manifest["transient"] == 0


SCALE = 1 / 20  # shipped_pace: 30 s deadlines become 1.5 s, 60 s block pauses 3 s, 2 requests/s 40


def test_a_block_longer_than_the_deadline_costs_a_pause_not_works(tmp_path, api):
    # Three Met works at the shipped defaults; the Met's front blocks after the second request for
    # 6 s (scaled): the host is paused for the block pause (60 s), twice the download deadline, and
    # the work that met the block is fetched after it, not given up for the time it waited.
    rows = [{"id": i, "year": "1600"} for i in list(api.images)[:3]]
    api.block_met(after=2, seconds=6 * SCALE)
    manifest, out = pack(tmp_path, api, rows, name="met-data.csv", source="auto", **shipped_pace(SCALE))
    assert api.blocked_answers == 1
    assert manifest["packed"] == 3, rejects_of(out)


def test_a_retry_after_longer_than_the_deadline_is_waited_out_not_counted(api):
    # A 503 asking for 40 s (2 s at this scale) against the 30 s deadline (1.5 s): the wait is the
    # server's, not the download's.
    pace = shipped_pace(SCALE)
    api.retry_after["busy"] = "2"
    client = HttpClient(rate=pace["rate"], timeout=pace["timeout"], backoff=pace["backoff"])
    assert client.get(f"{api.url}/img/busy") == api.any_image("busy")
    assert api.count("/img/busy") == 2


def test_a_soak_of_the_fetch_path_loses_no_work_to_passing_trouble(tmp_path, api):
    # Both museums' chains at the shipped pace (scaled), through recurring blocks, 503 bursts, reset
    # connections and an image that drips past the deadline: every work is packed, or a final
    # reject for a final reason, after at most one rerun (bench/scale/fetch_soak.py measures it larger).
    rows = soak_works(api, 150)
    api.weather = soak_weather(SCALE, drip=rows[7]["id"])
    manifest, out = pack(tmp_path, api, rows, source="auto", **shipped_pace(SCALE))
    assert api.blocked_answers and api.outage_answers and api.reset_answers  # the weather struck
    unknown = {row["id"] for row in rows if row["id"].startswith("404")}
    assert {i for i, row in rejects_of(out).items() if not row["transient"]} == unknown
    if manifest["transient"]:
        manifest, out = pack(tmp_path, api, rows, source="auto", **shipped_pace(SCALE))
    assert manifest["packed"] == len(rows) - SOAK_UNKNOWN and set(rejects_of(out)) == unknown


def test_what_a_rerun_can_cure_is_transient_and_what_it_cannot_is_final(api):
    client = HttpClient(attempts=1, rate=1000)

    def failure(url):
        with pytest.raises(FetchError) as caught:
            client.get(url)
        return caught.value

    for status in (408, 425, 500, 502, 503, 504, 507, 520, 522):
        assert failure(f"{api.url}/status/{status}").transient, status
    for status in (400, 401, 403, 404, 405, 410, 451):
        problem = failure(f"{api.url}/status/{status}")
        assert not problem.transient and problem.status == status, status
    fast = HttpClient(attempts=1, rate=1000, timeout=0.5, max_bytes=5_000_000)
    for passing in ("/img/drip", "/img/truncated"):  # past the deadline, cut short
        with pytest.raises(FetchError) as caught:
            fast.get(api.url + passing)
        assert caught.value.transient, passing
    with pytest.raises(FetchError, match="not JSON") as caught:  # a maintenance page served as 200
        client.get_json(f"{api.url}/img/notimage")
    assert caught.value.transient
    with socket.socket() as unused:  # a port that nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert failure(f"http://127.0.0.1:{port}/img/x").transient
    for final in (f"{api.url}/img/huge", "ftp://127.0.0.1/x", "http://"):
        with pytest.raises(FetchError) as caught:
            fast.get(final)
        assert not caught.value.transient, final

    client = HttpClient(rate=1000, block_pause=0.4, attempts=8)
    gate = client.gate("http://127.0.0.1:1/x")
    first = gate.wait(5)
    gate.block(first, None, client.block_pause)
    gate.block(first, None, client.block_pause)  # a second request in flight saw the same block: no longer pause
    started = time.monotonic()
    probe = gate.wait(5)
    assert 0.3 <= probe - started < 0.7
    gate.block(probe, None, client.block_pause)  # the probe is blocked again: the pause doubles
    started = time.monotonic()
    probe = gate.wait(5)
    assert 0.7 <= probe - started < 1.2
    waiting = threading.Thread(target=gate.wait, args=(5,))
    waiting.start()  # another download waits for the probe's answer ...
    waiting.join(0.3)
    assert waiting.is_alive()
    gate.answered()  # ... which came: the block is over
    waiting.join(1)
    assert not waiting.is_alive()
    other = client.gate("http://127.0.0.2:1/x")  # another host was never paused
    started = time.monotonic()
    other.wait(5)
    assert time.monotonic() - started < 0.1


def test_the_rate_is_per_host(api):
    other = MuseumApi(sample_images(1)).start()
    try:
        client = HttpClient(rate=10)
        urls = [f"{server.url}/img/{next(iter(server.images))}" for server in (api, other)] * 6
        started = time.monotonic()
        threads = [threading.Thread(target=client.get, args=(url,)) for url in urls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    finally:
        other.stop()
    assert api.count("/img/") == 6 and other.count("/img/") == 6
    assert 0.45 <= elapsed < 1.0  # 5 gaps of 1/10 s per host; one limiter for both would take 1.1 s


def test_types_match_whole_any_case_singular_or_plural():
    assert singular("Photographs") == "photograph" and singular("Boxes") == "box" and singular("Studies") == "study"
    assert singular("Glass") == "glass"
    exclude = TypeFilter(("photographs", "Drawing"))
    with pytest.raises(Excluded, match="'Photograph' is excluded"):
        exclude.check(("Photograph",), "Photograph")
    with pytest.raises(Excluded, match="'drawings' is excluded"):
        exclude.check(("tekening", "drawings"), "drawing")
    exclude.check(("Painting", "European Paintings", "Photographs and paintings"), "Painting")  # whole names only


def test_exclude_types_reads_the_rijksmuseum_type_of_work(tmp_path, api):
    manifest, out = pack(
        tmp_path,
        api,
        [{"id": "RP-T-1930-54(V)", "year": "1640"}, {"id": "SK-A-2344", "year": "1658"}],
        name="rijksmuseum-data.csv",
        source="rijks",
        exclude_types=("Drawings",),
    )
    assert manifest["packed"] == 1 and manifest["excluded"] == 1
    assert rejects_of(out)["RP-T-1930-54(V)"]["stage"] == "excluded"
    assert api.count("/rijks-id/202117708") == 0  # nothing past the record was asked for


def test_a_single_museum_source_refuses_the_other_museums_works(tmp_path, api):
    rows = [{"id": "SK-A-2344", "year": "1658", "museum": "rijks"}, {"id": "436535", "year": "1889", "museum": "met"}]
    manifest, out = pack(tmp_path, api, rows, source="met")
    assert manifest["packed"] == 1
    assert rejects_of(out)["SK-A-2344"]["reason"] == "a work of the Rijksmuseum, not the Met: pack with --source auto"
    assert api.count("objectNumber") == 0 and api.count("/met/objects/SK-A-2344") == 0


def test_api_url_names_its_museum():
    assert api_roots(("met=http://127.0.0.1:9/met",))["met"] == "http://127.0.0.1:9/met"
    assert api_roots(())["rijks"] == "https://data.rijksmuseum.nl"
    for bad in ("http://127.0.0.1:9/met", "louvre=http://x", "met="):
        with pytest.raises(ValueError, match="expected MUSEUM=URL"):
            api_roots((bad,))


def test_a_repack_from_originals_asks_no_museum(tmp_path, api):
    api.met_changes["777"] = {"classification": "Photographs"}
    rows = [{"id": i, "year": "1600", "museum": "met"} for i in list(api.images) + ["436535", "915129", "777"]] + [
        {"id": i, "year": "1650", "museum": "rijks"} for i in ["SK-A-2344", "RP-T-1981-182-1"]
    ]
    originals = str(tmp_path / "originals")
    first, first_out = pack(tmp_path, api, rows, source="auto", originals=originals, size=96, out="first")
    assert first["packed"] == len(api.images) + 3
    assert os.path.exists(os.path.join(originals, "met", "436535.json"))
    api.stop()  # every request would fail now, as a passing failure
    second, second_out = pack(
        tmp_path,
        api,
        rows,
        source="auto",
        originals=originals,
        size=64,
        out="second",
        exclude_types=("photograph",),
        retries=0,
    )
    assert second["transient"] == 0 and second["packed"] == first["packed"] - 1 and second["excluded"] == 1
    assert {i: r["stage"] for i, r in rejects_of(second_out).items()} == {
        "915129": "fetch",
        "RP-T-1981-182-1": "fetch",
        "777": "excluded",
    }
    first_labels, second_labels = labels_of(first_out, first), labels_of(second_out, second)
    assert second_labels["SK-A-2344"]["object_type"] == first_labels["SK-A-2344"]["object_type"]


def test_a_larger_size_than_the_originals_hold_is_fetched_again(tmp_path, api):
    originals = str(tmp_path / "originals")
    rows = [{"id": "SK-A-2344", "year": "1658"}]
    pack(tmp_path, api, rows, name="rijksmuseum-data.csv", source="rijks", originals=originals, size=64, out="a")
    pack(tmp_path, api, rows, name="rijksmuseum-data.csv", source="rijks", originals=originals, size=48, out="b")
    assert api.count("/iiif/QkOGy/full/") == 1  # 64 px serves a 48 px pack
    manifest, out = pack(
        tmp_path, api, rows, name="rijksmuseum-data.csv", source="rijks", originals=originals, size=128, out="c"
    )
    assert api.requests[-1] == "/iiif/QkOGy/full/128,/0/default.jpg"
    assert labels_of(out, manifest)["SK-A-2344"]["source_width"] == 128


def test_original_names_keep_distinct_ids_apart_and_short():
    names = {original_name(i) for i in ("a.b", "a/b", "a b", "a%2Fb", "RP-T-1930-54(V)")}
    assert len(names) == 5 and all("/" not in name for name in names)
    long = original_name("x" * 400)
    assert len(long) < 150 and long != original_name("x" * 401)


def test_images_from_an_s3_folder(tmp_path, s3_server, s3_url):
    bucket = s3_url.split("/")[2]
    images = sample_images(3)
    for work_id, data in images.items():
        s3_server.client().put_object(Bucket=bucket, Key=f"imgs/{work_id}.jpg", Body=data)
    metadata = tmp_path / "works.csv"
    metadata.write_text("id,year\n" + "".join(f"{i},1600\n" for i in images) + "missing,1600\n")
    for images_url in (f"s3://{bucket}/imgs", f"s3://{bucket}/imgs/{{id}}.jpg"):
        out = str(tmp_path / images_url.rsplit("/", 1)[1].replace("{", "").replace("}", ""))
        manifest = run_pack(
            PackConfig(metadata=(str(metadata),), out=out, images=images_url, jobs=1, size=64), progress=False
        )
        assert manifest["packed"] == 3
        assert rejects_of(out)["missing"]["reason"] == f"cannot read s3://{bucket}/imgs/missing.jpg: no such file"


def test_a_key_in_a_url_is_never_shown():
    assert redact("https://x/y?key=abc&format=json") == "https://x/y?key=***&format=json"


def test_rate_limit_spaces_requests(api):
    client = HttpClient(rate=20)
    started = time.monotonic()
    for _ in range(11):
        client.get(f"{api.root('met')}/objects/436535")
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
    for url in (
        f"{api.url}/redirect?to=http://169.254.169.254/latest/meta-data/",
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/latest/",
        "http://[::ffff:169.254.169.254]/",
    ):
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
    assert body == api.any_image("retrydate")
    assert api.count("/img/retrydate") == 2 and time.monotonic() - started >= 0.9


def test_a_custom_user_agent(api):
    HttpClient(user_agent="my-lab-crawler/2 (me@example.org)").get(f"{api.url}/img/x")
    assert api.headers[-1]["User-Agent"] == "my-lab-crawler/2 (me@example.org)"


def test_works_that_failed_for_a_passing_reason_are_fetched_again_on_a_rerun(tmp_path, api):
    good = list(api.images)
    rows = [{"id": i, "year": "1600"} for i in good + ["flaky500", "404"]]
    api.down = {"flaky500"}
    api.failed_once.add("flaky500")  # down, then (once up) works at once
    settings = dict(name="met-data.csv", source="met", samples_per_shard=3)
    first, out = pack(tmp_path, api, rows, **settings)
    assert first["packed"] == len(good) and first["transient"] == 1
    rejects = rejects_of(out)
    assert set(rejects) == {"flaky500", "404"} and "HTTP 503" in rejects["flaky500"]["reason"]
    # Each row and the closing line say which rejects a rerun retries.
    assert rejects["flaky500"]["reason"].endswith("; transient: a rerun retries it")
    assert "transient" not in rejects["404"]["reason"]
    assert "rejected 2 (1 transient: rerun the same command to retry them), " in summary_line(first, out)
    requests_before = len(api.requests)

    api.down = set()  # the outage is over
    second, out = pack(tmp_path, api, rows, **settings)
    assert second["packed"] == len(good) + 1 and second["transient"] == 0
    assert set(rejects_of(out)) == {"404"}
    assert sorted(api.requests[requests_before:]) == ["/img/flaky500", "/met/objects/flaky500"]
    assert sorted(labels_of(out, second)) == sorted(good + ["flaky500"])  # each work once

    count = len(api.requests)
    assert pack(tmp_path, api, rows, **settings)[0]["packed"] == len(good) + 1
    assert len(api.requests) == count  # finished: nothing fetched


def test_the_2017_lists_in_one_pack_from_the_command_line(tmp_path, api, capsys):
    from artdate.cli import main

    (tmp_path / "met-data.csv").write_text("id,year\n436535,1889\n915129,1970\n")
    (tmp_path / "rijksmuseum-data.csv").write_text("id,year\nSK-A-2344,1658\n")
    out = tmp_path / "store"
    code = main(
        [
            "pack",
            "--metadata",
            str(tmp_path / "met-data.csv"),
            str(tmp_path / "rijksmuseum-data.csv"),
            "--source",
            "auto",
            "--api-url",
            f"met={api.root('met')}",
            "--api-url",
            f"rijks={api.root('rijks')}",
            "--exclude-types",
            "photographs",
            "--size",
            "64",
            "--jobs",
            "1",
            "--year-max",
            "2000",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.startswith("packed 2, rejected 1, ")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["museums"] == {"met": 1, "rijks": 1} and manifest["settings"]["exclude_types"] == ["photographs"]


def test_works_the_metadata_leaves_undated_take_the_museums_own_dates(tmp_path, api):
    # Issue 39: the Met's objectBeginDate/objectEndDate and the Rijksmuseum record's production
    # time-span, from the recorded payloads; the metadata's own date always wins.
    api.met_changes["777"] = {"objectDate": "", "objectBeginDate": 0, "objectEndDate": 0}  # the Met's "unknown"
    rows = [
        {"id": "436535", "year": "", "museum": "met"},  # objectDate 1889
        {"id": "53426", "year": "", "museum": "met"},  # "mid-19th century": 1834..1866
        {"id": "777", "year": "", "museum": "met"},
        {"id": "SK-A-2344", "year": "", "museum": "rijks"},  # begin_of_the_begin 1660-01-01
        {"id": "RP-T-1930-54(V)", "year": "1700", "museum": "rijks"},  # its record says 1628..1629
    ]
    originals = str(tmp_path / "originals")
    manifest, out = pack(tmp_path, api, rows, source="auto", originals=originals)
    assert manifest["splits"]["undated"]["samples"] == 4 and manifest["packed"] == 5
    assert manifest["labels"]["all"]["count"] == 1  # only the metadata's date is a label to learn from
    dates = {
        i: (r["year"], r["year_start"], r["year_end"], r["date_from"], r["split"])
        for i, r in labels_of(out, manifest).items()
    }
    assert dates == {
        "436535": (1889, 1889, 1889, "met", "undated"),
        "53426": (1850, 1834, 1866, "met", "undated"),
        "777": (None, None, None, "", "undated"),
        "SK-A-2344": (1660, 1660, 1660, "rijks", "undated"),
        "RP-T-1930-54(V)": (1700, 1700, 1700, "metadata", "train"),
    }
    api.stop()  # a repack from the originals asks no museum, and keeps the museums' dates
    again, again_out = pack(tmp_path, api, rows, source="auto", originals=originals, out="again", size=48)
    assert {i: r["year"] for i, r in labels_of(again_out, again).items()} == {i: d[0] for i, d in dates.items()}
