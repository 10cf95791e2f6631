"""What fetching from the museums costs per work: requests per host and bytes downloaded.

Runs `artdate pack --source auto` against tests/support/museums.py (the museums' recorded
payloads on loopback; images are the sample's real images at the size each request asks for)
and counts what the server answered. Then prints the hours a full run of the 2017 lists takes
at a given rate per host, and what the Rijksmuseum's images would weigh without IIIF sizing.

    python -m bench.scale.museum_requests [--works 60] [--size 384] [--rate 2]
"""

import argparse
import collections
import os
import tempfile

from artdate.core.config import PackConfig
from artdate.pack.run import run_pack
from tests.support import museums

FULL_LISTS = {"met": 41_876, "rijks": 30_742}  # rows of metadata/met-data.csv and rijksmuseum-data.csv
HOSTS = {
    "/met/": "collectionapi (Met)",
    "/met-images/": "images.metmuseum.org",
    "/rijks/": "data.rijksmuseum.nl",
    "/rijks-id/": "id.rijksmuseum.nl",
    "/iiif/": "iiif.micr.io",
}


def host_of(path: str) -> str:
    return next(host for prefix, host in HOSTS.items() if path.startswith(prefix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--works", type=int, default=60, help="works per museum")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--rate", type=float, default=2.0, help="requests per second per host, for the hours")
    args = parser.parse_args()
    images = museums.sample_images(args.works)
    for n in range(args.works):  # Rijksmuseum objects reshaped from the Milkmaid's record, all shown by its image
        museums.RIJKS_OBJECTS[f"BENCH-{n}"] = (f"3{n:08d}", None, "202108369")
    api = museums.MuseumApi(images).start()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            metadata = os.path.join(scratch, "works.csv")
            with open(metadata, "w") as f:
                f.write(
                    "id,year,museum\n"
                    + "".join(f"{i},1650,met\n" for i in images)
                    + "".join(f"BENCH-{n},1650,rijks\n" for n in range(args.works))
                )
            config = PackConfig(
                metadata=(metadata,),
                out=os.path.join(scratch, "store"),
                source="auto",
                size=args.size,
                api_url=(f"met={api.root('met')}", f"rijks={api.root('rijks')}"),
                rate=200,
                jobs=1,
            )
            manifest = run_pack(config, progress=False)
        assert manifest["packed"] == 2 * args.works, manifest
        requests, sent = collections.Counter(), collections.Counter()
        for path, size in api.sent:
            requests[host_of(path)] += 1
            sent[host_of(path)] += size
        # One 24 MP image as full/max would send it (the Milkmaid: 4649 x 5177), stand-in pixels.
        full = len(api.resized("QkOGy", size=(4649, 5177)))
    finally:
        api.stop()

    print(f"{args.works} works per museum, --size {args.size}, {manifest['packed']} packed\n")
    print("| host | requests / work | KB / work |")
    print("|---|---|---|")
    museum_of = {host: ("met" if "met" in host.lower() else "rijks") for host in HOSTS.values()}
    for host in HOSTS.values():
        print(f"| {host} | {requests[host] / args.works:.2f} | {sent[host] / args.works / 1e3:.1f} |")
    print(f"\nhours for the 2017 lists at {args.rate:g} requests/s per host (the busiest host decides):")
    for museum, works in FULL_LISTS.items():
        busiest = max(requests[h] for h in HOSTS.values() if museum_of[h] == museum) / args.works
        total = sum(requests[h] for h in HOSTS.values() if museum_of[h] == museum) / args.works
        print(
            f"  {museum}: {total:.2f} requests/work, busiest host {busiest:.2f}/work -> "
            f"{works * busiest / args.rate / 3600:.1f} h for {works:,} works, {works * total:,.0f} requests"
        )
    iiif = sent["iiif.micr.io"] / args.works
    print(
        f"\nRijksmuseum image bytes per work: {iiif / 1e3:.1f} KB sized by IIIF vs {full / 1e6:.2f} MB for full/max "
        f"({full / iiif:.0f}x; the full image is the sample upscaled, which compresses better than a real 24 MP scan)"
    )


if __name__ == "__main__":
    main()
