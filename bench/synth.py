"""Write a synthetic corpus of dated works (artdate/synthetic.py) for the benchmarks.

python bench/synth.py --works 20000 --out bench/out/synth-20000
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from artdate.synthetic import generate  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--works", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(generate(args.works, args.out, args.seed))
