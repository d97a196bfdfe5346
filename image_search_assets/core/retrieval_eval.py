"""Retrieval quality: precision@k of exact nearest neighbours against known attributes.

Used to judge embedders (demo weights vs random) on synthetic products whose category, colour
and pattern are known. Search is exact cosine (the Annoy index's own recall is checked apart).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def precision_at_k(
    vectors: np.ndarray,
    labels: Sequence[object],
    k: int = 5,
    groups: Sequence[object] | None = None,
) -> float:
    """Mean share of each item's k nearest others (cosine) whose label equals its own.

    `groups` restricts each search to the item's group, like the platform's one index per
    category. Items whose group has fewer than k + 1 members are left out: they cannot fill k.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    labels = np.asarray([str(x) for x in labels])
    groups_arr = np.asarray(
        [str(g) for g in (groups if groups is not None else [""] * len(labels))]
    )
    if not (len(vectors) == len(labels) == len(groups_arr)):
        raise ValueError("vectors, labels and groups must have one row per item")
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    hits: list[float] = []
    for group in np.unique(groups_arr):
        idx = np.flatnonzero(groups_arr == group)
        if len(idx) <= k:
            continue
        sims = unit[idx] @ unit[idx].T
        np.fill_diagonal(sims, -np.inf)
        nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        hits.extend((labels[idx][nearest] == labels[idx][:, None]).mean(axis=1))
    if not hits:
        raise ValueError(f"no group has more than k={k} items")
    return float(np.mean(hits))
