"""The comparanda's search: exact, and through a faiss index for large corpora, against brute force."""

import numpy as np
import pytest

from artdate.model import comparanda

faiss = pytest.importorskip("faiss", reason="the index path needs faiss-cpu (pip install 'artdate[faiss]')")


def clustered(count: int, clusters: int = 20, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    points = centres[rng.integers(0, clusters, count)] + 0.8 * rng.standard_normal((count, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float16)


def brute_force(queries: np.ndarray, reference: np.ndarray, k: int, exclude=None):
    sims = queries.astype(np.float64) @ reference.astype(np.float64).T
    if exclude is not None:
        for row, own in enumerate(exclude):
            if own >= 0:
                sims[row, own] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_small_references_are_searched_exactly_and_large_ones_through_an_index():
    reference = clustered(500)
    assert comparanda.Search(reference).index is None  # 500 < APPROXIMATE_FROM
    assert comparanda.Search(reference, approximate_from=500).index is not None


def test_the_index_searching_every_list_finds_the_brute_force_neighbours_with_the_work_itself_left_out():
    reference = clustered(2000)
    queries = np.concatenate([reference[:50], clustered(50, seed=1)])  # training works and other works
    own = np.array(list(range(50)) + [-1] * 50)
    search = comparanda.Search(reference, approximate_from=0, nprobe=10_000)  # every list: exact
    sims, index = search.nearest(queries, 5, own)
    assert index.shape == (100, 5) and not (index == own[:, None]).any()
    assert (index == brute_force(queries, reference, 5, own)).mean() > 0.99  # float16 ties may swap
    expected = np.sum(queries.astype(np.float32)[:, None, :] * reference.astype(np.float32)[index], axis=2)
    assert np.allclose(sims, expected, atol=1e-3)


def test_the_index_searching_a_few_lists_finds_most_of_the_true_neighbours():
    reference = clustered(20_000, clusters=100)
    queries = clustered(20_200, clusters=100)[20_000:]  # new works of the same clusters (same centres)
    search = comparanda.Search(reference, approximate_from=0, nprobe=8)
    lists = search.index.nlist
    _, index = search.nearest(queries, 5)
    exact = brute_force(queries, reference, 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(index, exact)])
    assert lists > 8 and recall > 0.8, (lists, recall)
