"""What finding the comparanda costs as the corpus grows: artdate's exact search against faiss.

`score` compares every scored work with every training work (comparanda.nearest: cosine
similarity by matrix products in blocks, exact). Its cost grows with the square of the corpus.
This measures, at growing reference sizes (the training works), the seconds per 1,000 query works
and the memory of:
- exact, artdate: comparanda.Search below its APPROXIMATE_FROM (torch, float32, blocks of 1,024
  queries; the build is the float32 copy of the float16 embeddings);
- exact, faiss: IndexFlatIP (the same search in faiss's BLAS kernels);
- approximate: comparanda.Search from APPROXIMATE_FROM, the faiss IndexIVFFlat score builds
  (4 sqrt(N) lists, `--nprobe` of them searched), whose build (k-means on a sample, then adding
  every work) is timed apart; recall@5 is the share of the exact 5 nearest it finds.
The embeddings are synthetic unit vectors in clusters of about 200 works (as a model's are: works
of one school and century lie together), the query works new draws from the same clusters;
`--dim` 1280 as EfficientNet-Lite0's features (ResNet152's are 2048). A whole corpus of N works
against its training works costs the build plus N/1,000 times the per-1,000 figure.

    python -m bench.scale.comparanda_search [--sizes 10000 100000 1000000] [--queries 2000] [--dim 1280]
"""

import argparse
import os
import resource
import time

import numpy as np

from artdate.model import comparanda

K = comparanda.K


def embeddings(centres: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors around the `centres`, float16 as score keeps them."""
    out = np.empty((count, centres.shape[1]), dtype=np.float16)
    for start in range(0, count, 100_000):  # in blocks: 1M x 1280 float32 at once would be 5 GB more
        n = min(100_000, count - start)
        block = centres[rng.integers(0, len(centres), n)] + 1.5 * rng.standard_normal(
            (n, centres.shape[1]), dtype=np.float32
        )
        out[start : start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


def measure(size: int, dim: int, query_count: int, nprobe: int, rng: np.random.Generator) -> list[tuple]:
    """(search, build s, s per 1,000 query works, recall@5, index MB) of each search at one size."""
    import faiss

    centres = rng.standard_normal((max(16, size // 200), dim), dtype=np.float32)  # a cluster per 200 works
    reference = embeddings(centres, size, rng)
    queries = embeddings(centres, query_count, rng).astype(np.float32)  # other works of the same clusters
    comparanda.nearest(queries[:10], reference[:1000], K)  # warm-up: torch's first matrix product
    per_1000 = 1000 / query_count
    rows = []

    # artdate's own searches, as score builds them (comparanda.Search): exact, then the IVF index.
    started = time.perf_counter()
    exact_search = comparanda.Search(reference, approximate_from=size + 1)  # the float32 copy is its build
    build = time.perf_counter() - started
    started = time.perf_counter()
    _, exact = exact_search.nearest(queries, K)
    seconds = (time.perf_counter() - started) * per_1000
    rows.append(("exact, artdate", build, seconds, 1.0, exact_search.reference.nbytes))
    del exact_search

    as_float = reference.astype(np.float32)
    started = time.perf_counter()
    flat = faiss.IndexFlatIP(dim)
    flat.add(as_float)
    build = time.perf_counter() - started
    started = time.perf_counter()
    _, found = flat.search(queries, K)
    seconds = (time.perf_counter() - started) * per_1000
    rows.append(("exact, faiss flat", build, seconds, recall(found, exact), as_float.nbytes))
    del flat, as_float

    started = time.perf_counter()
    ivf = comparanda.Search(reference, approximate_from=0, nprobe=nprobe)
    build = time.perf_counter() - started
    started = time.perf_counter()
    _, found = ivf.nearest(queries, K)
    seconds = (time.perf_counter() - started) * per_1000
    rows.append((f"IVF{ivf.index.nlist}, nprobe {nprobe}", build, seconds, recall(found, exact), 2 * reference.nbytes))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--nprobe", type=int, default=16)
    args = parser.parse_args()
    import faiss

    rng = np.random.default_rng(0)
    print(f"dim {args.dim}, {args.queries} query works per size, {os.cpu_count()} cores, faiss {faiss.__version__}")
    print(
        f"{'reference':>10}{'search':>22}{'build s':>9}{'s/1k works':>12}{'vs exact':>10}"
        f"{'recall@5':>10}{'index MB':>10}{'whole corpus':>14}"
    )
    for size in args.sizes:
        rows = measure(size, args.dim, args.queries, args.nprobe, rng)
        exact_s = rows[0][2]
        for name, build, per_1000, found_share, index_bytes in rows:
            whole = build + per_1000 * size / 1000
            print(
                f"{size:>10}{name:>22}{build:>9.1f}{per_1000:>12.3f}{exact_s / per_1000:>9.1f}x"
                f"{found_share:>10.3f}{index_bytes / 2**20:>10.0f}{whole / 60:>11.1f} min",
                flush=True,
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB; 'whole corpus': build + N query works against N training works")


if __name__ == "__main__":
    main()
