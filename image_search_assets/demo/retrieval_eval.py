"""Retrieval quality: precision@k of exact nearest neighbours against known attributes.

Used to judge weights (demo vs random) on synthetic products whose category, colour and pattern
are known, through the platform's own detect -> choose box -> crop -> embed path. Search is
exact cosine (the Annoy index's own recall is checked apart), except in `served_precision`,
which asks the published indexes themselves.
"""

from __future__ import annotations

import io
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from image_search_assets.core.index.annoy_index import ServedIndex
from image_search_assets.core.inference import naive
from image_search_assets.core.inference.models import ModelSpec, load_detector, load_embedder
from image_search_assets.demo.synthetic import PALETTE, PATTERNS, draw_product_with_box


@dataclass(frozen=True)
class EvalProduct:
    category: str
    colour: str
    pattern: str
    image: Image.Image
    box: tuple[int, int, int, int]  # ground truth

    @property
    def look(self) -> str:
        return f"{self.colour}/{self.pattern}"


def draw_eval_set(
    categories: Iterable[str],
    per_combo: int,
    *,
    seed: int,
    colours: Iterable[str] = tuple(PALETTE),
    patterns: Iterable[str] = PATTERNS,
) -> list[EvalProduct]:
    """`per_combo` fresh products per (category, colour, pattern), JPEG round-tripped like the
    catalog's, so every query has true matches to fill k when per_combo > k."""
    out = []
    for cat in categories:
        for colour in colours:
            for pattern in patterns:
                for n in range(per_combo):
                    rng = random.Random(f"eval:{seed}:{cat}:{colour}:{pattern}:{n}")
                    img, box = draw_product_with_box(cat, colour, pattern, rng)
                    buf = io.BytesIO()
                    img.save(buf, "JPEG", quality=90)
                    out.append(
                        EvalProduct(cat, colour, pattern, Image.open(buf).convert("RGB"), box)
                    )
    return out


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
    label_arr = np.asarray([str(x) for x in labels])
    groups_arr = np.asarray(
        [str(g) for g in (groups if groups is not None else [""] * len(label_arr))]
    )
    if not (len(vectors) == len(label_arr) == len(groups_arr)):
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
        hits.extend((label_arr[idx][nearest] == label_arr[idx][:, None]).mean(axis=1))
    if not hits:
        raise ValueError(f"no group has more than k={k} items")
    return float(np.mean(hits))


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate_weights(
    products: Sequence[EvalProduct],
    category_names: Sequence[str],
    detector: ModelSpec,
    embedder: ModelSpec,
    *,
    score_threshold: float,
    batch_size: int = 16,
    device: str = "cpu",
) -> dict[str, Any]:
    """precision@5 and detector quality of one pair of models on `products`.

    Per category (as the platform searches: one index per category) a neighbour is a hit when
    it shares colour and pattern; pooled over all categories it must share all three.
    """
    det = load_detector(detector, device)
    emb = load_embedder(embedder, device)
    started = time.perf_counter()
    images = [p.image for p in products]
    boxes = [
        naive.choose_box(
            raw,
            p.image.width,
            p.image.height,
            class_ids=(list(category_names).index(p.category) + 1,),
            score_threshold=score_threshold,
        )
        for p, raw in zip(products, naive.detect(det, images, batch_size), strict=True)
    ]
    crops = [naive.crop(img, b) for img, b in zip(images, boxes, strict=True)]
    vectors = naive.embed(emb, crops, input_size=embedder.input_size, batch_size=batch_size)
    seconds = time.perf_counter() - started
    found = [(b, p) for b, p in zip(boxes, products, strict=True) if b.box_source == "detector"]
    cats = [p.category for p in products]
    return {
        "precision_at_5_per_category": precision_at_k(
            vectors, [p.look for p in products], 5, groups=cats
        ),
        "precision_at_5_pooled": precision_at_k(
            vectors, [f"{p.category}/{p.look}" for p in products], 5
        ),
        "detector_box_share": len(found) / len(products),
        "detector_mean_iou": float(
            np.mean([_iou((b.x1, b.y1, b.x2, b.y2), p.box) for b, p in found]) if found else 0.0
        ),
        "seconds": seconds,
        "images_per_second": len(products) / seconds,
    }


def served_precision(
    served: Mapping[str, ServedIndex], looks: Mapping[str, object], k: int = 5
) -> dict[str, Any]:
    """precision@k of published indexes as they serve: each indexed product's k nearest others
    in its category's Annoy index that share its look (`looks`: product id -> colour/pattern).

    A small catalog caps precision@k: a product with 2 look-alikes scores at most 2/k. So the
    result also gives `found_share`: hits over min(k, look-alikes in the index), over products
    that have any. Products without a known look are left out.
    """
    raw: dict[str, list[float]] = {}
    found: dict[str, list[float]] = {}
    best: list[float] = []  # the precision@k that perfect embeddings would reach here
    for category, s in served.items():
        shared = Counter(looks.get(pid) for pid in s.ids)
        for i, pid in enumerate(s.ids):
            if pid not in looks or len(s.ids) <= k:
                continue
            near = [j for j in s.index.get_nns_by_item(i, k + 1) if j != i][:k]
            hits = sum(looks.get(s.ids[j]) == looks[pid] for j in near)
            alike = shared[looks[pid]] - 1  # look-alikes of this product in the index
            raw.setdefault(category, []).append(hits / k)
            best.append(min(k, alike) / k)
            if alike > 0:
                found.setdefault(category, []).append(hits / min(k, alike))
    if not raw:
        raise ValueError(f"no served index has more than k={k} products with a known look")

    def mean(groups: dict[str, list[float]]) -> float:
        return float(np.mean([x for xs in groups.values() for x in xs]))

    return {
        f"precision_at_{k}": mean(raw),  # every product's query counts once
        f"attainable_precision_at_{k}": float(np.mean(best)),
        "found_share": mean(found),
        "per_category": {c: round(float(np.mean(xs)), 4) for c, xs in raw.items()},
        "found_share_per_category": {c: round(float(np.mean(xs)), 4) for c, xs in found.items()},
        "products": sum(len(xs) for xs in raw.values()),
    }
