"""The Met's export at its size: time and peak memory of reading a file in MetObjects.csv's
shape (the real header, synthetic rows as long as the Met's) as `artdate pack` reads it, each
size in a fresh process, with --exclude-types photographs.

    python -m bench.scale.met_export [--rows 50000 500000]
"""

import argparse
import os
import tempfile

from tests.support.exports import read_export_in_a_fresh_process, write_synthetic_met_export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000, 500_000])
    args = parser.parse_args()
    print("| rows | file MB | works | not public domain | excluded | read s | rows/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for rows in args.rows:
            path = write_synthetic_met_export(os.path.join(scratch, f"MetObjects-{rows}.csv"), rows)
            works, not_public, excluded, seconds, rss = read_export_in_a_fresh_process(path)
            print(
                f"| {rows:,} | {os.path.getsize(path) / 1e6:.0f} | {works:,} | {not_public:,} | {excluded:,} "
                f"| {seconds:.1f} | {rows / seconds:,.0f} | {rss:.0f} |"
            )
            os.remove(path)


if __name__ == "__main__":
    main()
