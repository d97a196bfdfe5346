"""Adding items to an Annoy index being built on disk, as whole blocks of its file.

Annoy's add_item takes one Python list per vector and converts it a float at a time: at 100k
items of 576 floats that loop took longer than the rest of the index step together. In an
on-disk build Annoy keeps its nodes in the file, mapped shared, so items written into the file
are the items Annoy sees. An item node is fixed by Annoy's file format (annoylib.h, each
metric's Node): a descendant count of 1, the fields derived from the vector, and the vector.
That layout is checked once per metric against nodes Annoy wrote itself (`layout`); a metric
whose layout does not match, or that this module does not know, takes add_item's path.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

# Items written per write call: 4096 nodes of dim 576 are 9.5 MB.
WRITE_BLOCK = 4096


def _dtype(metric: str, dim: int) -> np.dtype | None:
    if metric == "angular":
        # n_descendants, then a union of children[2] whose first slot holds norm (v.v).
        fields = [("n", "i4"), ("norm", "f4"), ("child", "i4"), ("v", "f4", (dim,))]
    elif metric in ("euclidean", "manhattan"):
        # n_descendants, a (a split plane's offset, 0 for an item), children[2].
        fields = [("n", "i4"), ("a", "f4"), ("children", "i4", (2,)), ("v", "f4", (dim,))]
    else:
        return None
    return np.dtype(fields)  # packed, as Annoy's nodes are


def _encode(vectors: np.ndarray, out: np.ndarray) -> None:
    """Fills `out` (a block of nodes) with the items `vectors`, as add_item would."""
    out["n"] = 1
    out["v"] = vectors
    if "norm" in (out.dtype.names or ()):
        v = out["v"]
        out["norm"] = np.einsum("ij,ij->i", v, v)
        out["child"] = 0
    else:
        out["a"] = 0
        out["children"] = 0


@functools.cache
def _layout_holds(metric: str) -> bool:
    """Whether `_encode` writes the bytes Annoy's add_item writes, on this Annoy build.

    The probe's values are exact in float32 (quarters, sums of their squares), so a norm
    summed in another order is still the same float.
    """
    dtype = _dtype(metric, 4)
    if dtype is None:
        return False
    probe = np.array([[1, 0, 0.5, -2], [0, 0, 0, 0], [0.25, -1, 2, 1.5]], np.float32)
    index = AnnoyIndex(4, metric)  # type: ignore[arg-type]  # a known metric
    for i, v in enumerate(probe):
        index.add_item(i, v.tolist())
    index.build(1, n_jobs=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.ann"
        index.save(str(path))
        index.unload()
        written = path.read_bytes()
    mine = np.empty(len(probe), dtype)
    _encode(probe, mine)
    return len(written) % dtype.itemsize == 0 and written[: mine.nbytes] == mine.tobytes()


def layout(metric: str, dim: int) -> np.dtype | None:
    """The item node of `metric` as a numpy record, or None where add_item must be used."""
    return _dtype(metric, dim) if _layout_holds(metric) else None


def add_items(index: AnnoyIndex, path: Path, vectors: np.ndarray, metric: str) -> None:
    """Adds `vectors` as items 0..n-1 to `index`, an on-disk build into `path`."""
    n = len(vectors)
    dtype = layout(metric, vectors.shape[1]) if n > 1 else None
    if dtype is None:
        for i, v in enumerate(vectors):
            index.add_item(i, v.tolist())
        return
    # Annoy's own add_item for the last item grows the file to all n nodes and counts them;
    # the others are written beside its mapping, through the same page cache.
    index.add_item(n - 1, vectors[n - 1].tolist())
    block = np.empty(min(WRITE_BLOCK, n - 1), dtype)
    with open(path, "r+b") as f:
        for start in range(0, n - 1, WRITE_BLOCK):
            part = block[: min(WRITE_BLOCK, n - 1 - start)]
            _encode(vectors[start : start + len(part)], part)
            data = part.view(np.uint8).data
            offset = start * dtype.itemsize
            while data:
                written = os.pwrite(f.fileno(), data, offset)
                data, offset = data[written:], offset + written
    if index.get_n_items() != n:
        raise RuntimeError(f"Annoy holds {index.get_n_items()} items after adding {n}")
