"""Write a synthetic corpus of dated works (artdate/pack/synthetic.py) for the benchmarks.

python -m bench.scale.synthetic_corpus --works 20000 --out bench/out/synth-20000
"""

import argparse

from artdate.pack.synthetic import generate

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--works", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(generate(args.works, args.out, args.seed))
