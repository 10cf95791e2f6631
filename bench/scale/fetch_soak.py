"""A soak of the fetch path: what blocks, 503 bursts, reset connections and a dripping image cost a
pack of both museums at the shipped pace, and that they cost no work.

Packs `--works` works (9 in 10 of the Met, 1 in 10 of the Rijksmuseum, 5 unknown to the Met) with
`--source auto` against tests/support/museums.py (the museums' recorded payloads on loopback), three
times on fresh servers: in clear weather (the baseline), with the Met's recurring blocks alone,
and with all the weather of museums.soak_weather. Every time setting of pack and of the
weather is its shipped or real value times `--scale` (the rate divided by it), so the ratios
between them stay as shipped; the hours column scales the wall time back. A run that leaves
transient rejects is rerun once. Prints requests per packed work and the time lost to the weather
against the clear run.

    python -m bench.scale.fetch_soak [--works 3000] [--scale 0.02]
"""

import argparse
import os
import tempfile
import time

from artdate.core.config import PackConfig
from artdate.pack.run import run_pack
from tests.support import museums
from tests.support.helpers import shipped_pace


def soak(works: int, scale: float, weather: str, scratch: str) -> dict:
    """One soak on a fresh server; its figures."""
    api = museums.MuseumApi(museums.sample_images(8)).start()
    try:
        rows = museums.soak_works(api, works)
        if weather == "blocks":
            full = museums.soak_weather(scale, drip="")
            api.weather = museums.Weather(block_period=full.block_period, block_seconds=full.block_seconds)
        elif weather == "all":
            api.weather = museums.soak_weather(scale, drip=rows[7]["id"])
        metadata = os.path.join(scratch, f"{weather}.csv")
        with open(metadata, "w") as f:
            f.write("id,year,museum\n" + "".join(f"{r['id']},{r['year']},{r['museum']}\n" for r in rows))
        config = PackConfig(
            metadata=(metadata,),
            out=os.path.join(scratch, weather),
            source="auto",
            size=128,
            api_url=(f"met={api.root('met')}", f"rijks={api.root('rijks')}"),
            **shipped_pace(scale),
        )
        started = time.monotonic()
        first = run_pack(config, progress=False)
        seconds = time.monotonic() - started
        last = run_pack(config, progress=False) if first["transient"] else first
        return {
            "weather": weather,
            "seconds": seconds,
            "requests": len(api.requests),
            "blocked": api.blocked_answers,
            "outage": api.outage_answers,
            "resets": api.reset_answers,
            "first_packed": first["packed"],
            "first_transient": first["transient"],
            "packed": last["packed"],
            "final": last["rejected"],
            "transient": last["transient"],
        }
    finally:
        api.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--works", type=int, default=3000)
    parser.add_argument("--scale", type=float, default=0.02, help="every time setting times this (rates divided)")
    args = parser.parse_args()
    pace = shipped_pace(args.scale)
    print(
        f"{args.works} works, time scale {args.scale:g}: --rate {pace['rate']:g} --timeout {pace['timeout']:g} "
        f"--block-pause {pace['block_pause']:g} --backoff {pace['backoff']:g} --retries {pace['retries']}\n"
    )
    print(
        "| weather | run 1 s | hours at the shipped pace | x clear | requests / packed work "
        "| blocked / 503 / reset answers | run 1: packed, transient | after the rerun: packed, final, transient |"
    )
    print("|---|---|---|---|---|---|---|---|")
    clear = None
    with tempfile.TemporaryDirectory() as scratch:
        for weather in ("clear", "blocks", "all"):
            r = soak(args.works, args.scale, weather, scratch)
            clear = clear or r["seconds"]
            print(
                f"| {weather} | {r['seconds']:.1f} | {r['seconds'] / args.scale / 3600:.2f} | "
                f"{r['seconds'] / clear:.2f} | {r['requests'] / r['packed']:.2f} | "
                f"{r['blocked']} / {r['outage']} / {r['resets']} | {r['first_packed']}, {r['first_transient']} | "
                f"{r['packed']}, {r['final']}, {r['transient']} |",
                flush=True,
            )
            assert r["final"] == museums.SOAK_UNKNOWN and r["transient"] == 0, r


if __name__ == "__main__":
    main()
