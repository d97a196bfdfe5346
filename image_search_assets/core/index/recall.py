"""Recall@k of an Annoy index against exact search, the figure a publish records.

Exact search is brute force over every item; a publish bounds how many queries it spends
on it (RECALL_WORK), the recall_at_10 asset check measures the configured sample.
"""

from __future__ import annotations

import numpy as np
from annoy import AnnoyIndex

# Exact search compares every sampled query with this many items at once: a (queries x items)
# similarity block of 200 x 4096 floats is 3.3 MB, where all of 1M items would take 800 MB.
EXACT_ITEM_BLOCK = 4096
RECALL_K = 10  # the manifest's recall_at_10
# The recall reference compares each sampled query with every item: queries x items x dim
# multiply-adds. A publish bounds that work, which would otherwise grow with the index (200
# queries at 1M items of 576 floats: over 2 s of a core); the recall_at_10 asset check
# measures the full `recall_sample` after. Up to ~25k items of 576 floats that is still all
# 200 queries; never fewer than 50 (recall@10 within about +-0.04 at 95%).
RECALL_WORK = 3_000_000_000
RECALL_MIN_QUERIES = 50


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force top-k by cosine (vectors are unit-norm), the recall reference.

    One pass over the items in blocks, every query at once: the vectors are read once, and
    the similarity block stays small (200 queries x EXACT_ITEM_BLOCK floats: 3.3 MB).
    """
    n = vectors.shape[0]
    k = min(k, n)
    best_sims = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), k), np.int64)
    for start in range(0, n, EXACT_ITEM_BLOCK):
        sims = queries @ vectors[start : start + EXACT_ITEM_BLOCK].T
        if sims.shape[1] > k:
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
        both_sims = np.concatenate([best_sims, np.take_along_axis(sims, top, 1)], axis=1)
        both_ids = np.concatenate([best_ids, top + start], axis=1)
        keep = np.argpartition(-both_sims, k - 1, axis=1)[:, :k]
        best_sims = np.take_along_axis(both_sims, keep, 1)
        best_ids = np.take_along_axis(both_ids, keep, 1)
    order = np.argsort(-best_sims, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, 1)


def recall_rows(n: int, sample: int, seed: int = 0) -> np.ndarray:
    """The indexed rows whose neighbours recall is measured on."""
    return np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False)


def publish_recall_queries(n: int, dim: int, recall_sample: int) -> int:
    """How many sampled queries a publish measures recall@10 on (RECALL_WORK)."""
    bounded = max(RECALL_MIN_QUERIES, RECALL_WORK // max(1, n * dim))
    return min(recall_sample, n, bounded)


def annoy_answers(index: AnnoyIndex, rows: np.ndarray, k: int, search_k: int = -1) -> list:
    """Annoy's k nearest items to each of `rows` (items of the index)."""
    k = min(k, index.get_n_items())
    return [index.get_nns_by_item(int(row), k, search_k=search_k) for row in rows]


def recall_of(answers: list, truth: np.ndarray) -> float:
    """Mean recall of Annoy's `answers` against the exact neighbours `truth`, row by row."""
    if truth.size == 0:
        return 1.0
    hits = sum(len(set(got) & set(want.tolist())) for got, want in zip(answers, truth, strict=True))
    return hits / truth.size


def recall_at_k(
    index: AnnoyIndex,
    vectors: np.ndarray,
    *,
    k: int = 10,
    sample: int = 200,
    search_k: int = -1,
    seed: int = 0,
) -> float:
    """Mean recall@k of Annoy against exact search, over a sample of the indexed vectors."""
    n = vectors.shape[0]
    if n == 0:
        return 1.0
    rows = recall_rows(n, sample, seed)
    answers = annoy_answers(index, rows, k, search_k)
    return recall_of(answers, exact_neighbours(vectors, vectors[rows], k))
