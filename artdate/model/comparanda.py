"""Comparanda: for every scored work, the dated training works nearest to it in the model's own
embedding space (the features its year head reads), so a curator sees which works a guess rests on.

`score` keeps each shard's embeddings beside its part (`{part}.features.npy`, unit length,
float16). When the parts are complete, every work is compared with every training work (cosine
similarity) and the k nearest, the work itself left out, go to `results.neighbours.csv`. The
comparison is exact (matrix products in blocks) up to APPROXIMATE_FROM training works; from there
it goes through a faiss inverted-file index built once (`pip install 'artdate[faiss]'`), since
exact search grows with the square of the corpus: minutes for the 2017 lists, hours for a
million works (bench/scale/comparanda_search.py measured both). The training works' embeddings are kept as
`results.reference.npz`, so `predict --comparanda results.csv` finds an image's neighbours with
the same checkpoint.
"""

from __future__ import annotations

import csv
import io
import logging

import numpy as np

from artdate.core import store

log = logging.getLogger(__name__)

NEIGHBOUR_COLUMNS = [
    "key",
    "rank",
    "neighbour_id",
    "neighbour_museum",
    "neighbour_year",
    "similarity",
    "neighbour_shard",  # where its image is (the report shows it)
]
K = 5
QUERY_BLOCK = 1024  # queries compared at once: a block x reference similarity matrix in memory
APPROXIMATE_FROM = 200_000  # training works from which a faiss index finds the neighbours
NPROBE = 16  # of the index's 4 sqrt(N) lists, how many each query searches


def features_name(part_name: str) -> str:
    return part_name[: -len(".csv")] + ".features.npy"


def array_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def read_array(url: str) -> np.ndarray:
    return np.load(io.BytesIO(store.read_bytes(url)), allow_pickle=False)


def neighbours_url(out: str) -> str:
    return (out[: -len(".csv")] if out.endswith(".csv") else out) + ".neighbours.csv"


def reference_url(out: str) -> str:
    return (out[: -len(".csv")] if out.endswith(".csv") else out) + ".reference.npz"


def part_rows(part: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(part.decode())))


def nearest(queries: np.ndarray, reference: np.ndarray, k: int, exclude: np.ndarray | None = None):
    """(similarities, indices) of the k reference rows nearest each query (unit vectors: cosine
    similarity); `exclude[i]` is a reference index query i may not take (itself), or -1."""
    import torch  # here, so that report (which reads the neighbours file) needs no torch

    k = min(k, len(reference) - (exclude is not None))
    reference_t = torch.from_numpy(reference.astype(np.float32, copy=False)).T
    sims, index = [], []
    for start in range(0, len(queries), QUERY_BLOCK):
        block = torch.from_numpy(queries[start : start + QUERY_BLOCK].astype(np.float32)) @ reference_t
        if exclude is not None:
            own = torch.from_numpy(exclude[start : start + QUERY_BLOCK])
            rows = torch.nonzero(own >= 0).squeeze(1)
            block[rows, own[rows]] = -torch.inf
        top = block.topk(k, dim=1)
        sims.append(top.values)
        index.append(top.indices)
    return torch.cat(sims).numpy(), torch.cat(index).numpy()


class Search:
    """The nearest reference rows to queries by cosine similarity: exact, or from `approximate_from`
    reference rows through a faiss IVF index (4 sqrt(N) lists, `nprobe` of them searched per
    query), built once for all the queries to come."""

    def __init__(self, reference: np.ndarray, approximate_from: int = APPROXIMATE_FROM, nprobe: int = NPROBE):
        self.index = ivf_index(reference, nprobe) if len(reference) >= approximate_from else None
        # Exact search reads float32: converted once here, not again for every part's queries.
        self.reference = reference if self.index is not None else reference.astype(np.float32)

    def nearest(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None):
        """As `nearest`, through the index when there is one."""
        if self.index is None:
            return nearest(queries, self.reference, k, exclude)
        k = min(k, len(self.reference) - (exclude is not None))
        sims, index = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k + (exclude is not None))
        if exclude is not None:  # the query's own row out: the first k of the others, in order
            others = np.argsort(index == exclude[:, None], axis=1, kind="stable")[:, :k]
            sims, index = np.take_along_axis(sims, others, axis=1), np.take_along_axis(index, others, axis=1)
        return sims, index


def ivf_index(reference: np.ndarray, nprobe: int):
    """A faiss inverted-file index over the unit-length rows, or None (exact search) without faiss."""
    try:
        import faiss
    except ImportError:
        log.warning(
            "comparanda: %d training works are searched exactly, which grows with the square of the corpus; "
            "pip install 'artdate[faiss]' for an index",
            len(reference),
        )
        return None
    lists = max(1, min(int(4 * len(reference) ** 0.5), len(reference) // 39))  # faiss wants 39 per list
    dim = reference.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(len(reference), min(len(reference), 39 * lists), replace=False)
    index.train(reference[np.sort(sample)].astype(np.float32))
    for start in range(0, len(reference), 100_000):  # in blocks: no whole float32 copy beside the index's own
        index.add(reference[start : start + 100_000].astype(np.float32))
    index.nprobe = nprobe
    return index


def write_comparanda(
    parts: str, part_names: list[str], out: str, checkpoint: str, k: int = K, reference_from: str = ""
) -> int:
    """Write `out`'s neighbours file and reference from the parts; returns the rows written (0
    when there are no training works to compare with). The training works are the parts' own,
    or with `reference_from` those of another results file scored with the same checkpoint (a
    store of works to date alone)."""
    reference = saved_reference(reference_from, checkpoint) if reference_from else training_reference(parts, part_names)
    if not reference["keys"]:
        for url in (neighbours_url(out), reference_url(out)):  # an earlier run's, of other works
            if store.exists(url):
                store.delete(url)
        return 0
    features = reference["features"]
    search = Search(features)
    position = {key: i for i, key in enumerate(reference["keys"])}
    written = 0
    with store.atomic_output(neighbours_url(out)) as file:
        file.write(",".join(NEIGHBOUR_COLUMNS).encode() + b"\n")
        for name in part_names:
            rows = part_rows(store.read_bytes(store.join(parts, name)))
            queries = read_array(store.join(parts, features_name(name)))
            own = np.array([position.get(row["key"], -1) for row in rows], dtype=np.int64)
            sims, index = search.nearest(queries, k, own)
            table = neighbour_rows([row["key"] for row in rows], sims, index, reference)
            file.write(store.csv_bytes(table, NEIGHBOUR_COLUMNS, header=False))
            written += len(table)
    saved = io.BytesIO()
    np.savez(
        saved,
        keys=np.asarray(reference["keys"]),
        ids=np.asarray(reference["ids"]),
        museums=np.asarray(reference["museums"]),
        years=np.asarray(reference["years"]),
        shards=np.asarray(reference["shards"]),
        features=features,
        checkpoint=np.asarray(checkpoint),
    )
    store.write_bytes(reference_url(out), saved.getvalue())
    return written


def training_reference(parts: str, part_names: list[str]) -> dict:
    """The training works among the parts: keys, ids, museums, years, shards and features."""
    reference: dict = {"keys": [], "ids": [], "museums": [], "years": [], "shards": [], "features": []}
    for name in part_names:
        rows = part_rows(store.read_bytes(store.join(parts, name)))
        features = read_array(store.join(parts, features_name(name)))
        train = [i for i, row in enumerate(rows) if row["split"] == "train"]
        for column, field in (("keys", "key"), ("ids", "id"), ("museums", "museum"), ("shards", "shard")):
            reference[column] += [rows[i][field] for i in train]
        reference["years"] += [int(rows[i]["year"]) for i in train]
        if train:
            reference["features"].append(features[train])
    if reference["features"]:
        reference["features"] = np.concatenate(reference["features"])
    return reference


def saved_reference(results: str, checkpoint: str) -> dict:
    """The training works another score run kept beside `results` (its .reference.npz), which
    must be of the same checkpoint: embeddings of two models do not compare."""
    url = reference_url(results)
    if not store.exists(url):
        raise FileNotFoundError(
            f"{url}: no comparanda beside {results} (score writes them when it scores the training split)"
        )
    with np.load(io.BytesIO(store.read_bytes(url)), allow_pickle=False) as saved:
        if str(saved["checkpoint"]) != checkpoint:
            raise ValueError(
                f"{url} holds embeddings of {saved['checkpoint']}, not of {checkpoint}: neighbours need "
                "the same checkpoint"
            )
        names = ("keys", "ids", "museums", "years", "shards", "features")
        return {name: saved[name].tolist() if name != "features" else saved[name] for name in names}


def neighbour_rows(keys: list[str], sims: np.ndarray, index: np.ndarray, reference: dict) -> list[dict]:
    """The neighbours file's rows (NEIGHBOUR_COLUMNS): for the work of each key, its nearest
    training works of `reference` at `index` (a row a work, nearest first) with their similarity."""
    return [
        {
            "key": key,
            "rank": rank + 1,
            "neighbour_id": str(reference["ids"][j]),
            "neighbour_museum": str(reference["museums"][j]),
            "neighbour_year": int(reference["years"][j]),
            "similarity": round(float(sims[i, rank]), 4),
            "neighbour_shard": str(reference["shards"][j]),
        }
        for i, key in enumerate(keys)
        for rank, j in enumerate(index[i])
    ]


def image_neighbours(reference: dict, features: np.ndarray, keys: list[str], k: int = K) -> list[list[dict]]:
    """For each row of `features` (predict's images, of `keys`), the neighbours file's rows of
    the k training works of a `saved_reference` nearest to it."""
    sims, index = nearest(features, reference["features"], k)
    return [neighbour_rows([key], sims[i : i + 1], index[i : i + 1], reference) for i, key in enumerate(keys)]
