"""The one reader of a published index version: its manifest, ids and Annoy file, checked.

Publish verifies what it wrote with it, serving loads what it serves with it, and rollback, the
asset checks, the CLI and the demo's evaluation read versions through it. A version opens only
if it holds what its manifest says: both files' checksums, dense Annoy ids 0..n-1 naming
distinct products, the manifest's count, and a query that answers.
Tables are read with pyarrow alone and ids are numpy arrays: serving and `image-search query`
import this module without pandas (half a second of import).
On local storage the Annoy file is mapped where it lies (a later prune unlinks it, which leaves
the mapping valid) unless a private copy is asked for; otherwise it is copied into
`cache_root/<category>/<version>/` and mapped from there, so a reader that keeps that cache
re-downloads nothing whose checksum holds.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from annoy import AnnoyIndex

from image_search_assets.core import layout
from image_search_assets.core.storage import LocalStorage, Storage, file_sha256


class VersionRefused(RuntimeError):
    """A published version failed verification on load; it is never served."""


@dataclass
class Version:
    """An opened, verified version. `cache_dir` holds its copied Annoy file, if any."""

    category: str
    version: str
    manifest: dict[str, Any]
    index: AnnoyIndex
    ids: np.ndarray  # product ids (fixed-width unicode), position = Annoy id
    cache_dir: Path | None = None


def stamp(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """Which file, at which state: the same stamp, the same bytes as when it was taken (a
    rename keeps it; a rewrite changes the inode or the modification time)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def columns(data: bytes, names: list[str]) -> list[list[Any]]:
    """Columns of a Parquet table as lists, with pyarrow alone."""
    # ParquetFile.read, not pq.read_table (which goes through pyarrow.dataset), and to_pylist,
    # not to_numpy: both alternatives import pandas.
    table = pq.ParquetFile(io.BytesIO(data)).read(columns=names)
    return [table[name].to_pylist() for name in names]


def strings(values: list[Any]) -> np.ndarray:
    return np.asarray(values, dtype=str)  # fixed-width unicode: str() of each value


def read_manifest(storage: Storage, category: str, version: str) -> dict[str, Any]:
    return storage.read_json(layout.manifest_key(category, version))


def _ids(storage: Storage, category: str, version: str, manifest: dict[str, Any]) -> np.ndarray:
    vdir = layout.version_dir(category, version)
    data = storage.read_bytes(layout.ids_key(category, version))
    if hashlib.sha256(data).hexdigest() != manifest["sha256"][layout.IDS_FILE]:
        raise VersionRefused(f"{vdir}: {layout.IDS_FILE} checksum mismatch with the manifest")
    annoy_ids, pids = columns(data, ["annoy_id", "product_id"])
    numbers = np.asarray(annoy_ids, dtype=np.int64)
    order = np.argsort(numbers, kind="stable")
    if not np.array_equal(numbers[order], np.arange(len(order))):
        raise VersionRefused(f"{vdir}: {layout.IDS_FILE}: Annoy ids are not dense 0..n-1")
    return strings(pids)[order]


def _annoy_path(
    storage: Storage,
    key: str,
    want_sha: str,
    cache: Path,
    *,
    private: bool,
    hashed: tuple[int, ...] | None,
) -> tuple[Path, bool]:
    """A local path of the Annoy file whose checksum matches; (path, copied into `cache`).

    `hashed`: the stamp of the file whose checksum the manifest holds; that very file (local
    storage renamed it into place) is not hashed again.
    """
    if isinstance(storage, LocalStorage) and not private:
        with storage.local_copy(key) as stored:  # on local storage, the stored file itself
            path, copied = Path(stored), False
        if hashed is not None and stamp(path) == hashed:
            return path, copied
    else:
        path, copied = cache / layout.ANN_FILE, True
        if path.exists() and file_sha256(path) == want_sha:
            return path, copied
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f".{layout.ANN_FILE}.partial"
        storage.download_to(key, partial)  # streamed: the file is never held in memory
        partial.replace(path)
    if file_sha256(path) != want_sha:
        raise VersionRefused(f"{Path(key).parent}: {layout.ANN_FILE} checksum mismatch")
    return path, copied


def problem(index: AnnoyIndex, ids: np.ndarray, manifest: dict[str, Any]) -> str | None:
    """What makes a loaded version unservable, or None."""
    count = int(manifest["count"])
    if index.get_n_items() != count or len(ids) != count:
        return f"holds {index.get_n_items()} items and {len(ids)} ids, not {count}"
    if len(np.unique(ids)) != len(ids):
        return "the id map repeats a product id"
    # One tree's leaf is enough to answer: every page a query touches is mapped in, and all
    # trees' leaves are most of the file.
    if count and not index.get_nns_by_item(0, 1, search_k=1):
        return "a query returned no neighbour"
    return None


def open_version(
    storage: Storage,
    category: str,
    version: str,
    cache_root: Path,
    *,
    private: bool = False,
    hashed: tuple[int, ...] | None = None,
) -> Version:
    """Loads a version and checks it (see the module doc); raises VersionRefused if it fails.

    `private`: map a copy even on local storage (an offline reader whose copy nothing prunes).
    """
    vdir = layout.version_dir(category, version)
    cache = cache_root / category / version
    try:
        manifest = read_manifest(storage, category, version)
        ids = _ids(storage, category, version, manifest)
        ann = layout.ann_key(category, version)
        want = manifest["sha256"][layout.ANN_FILE]
        path, copied = _annoy_path(storage, ann, want, cache, private=private, hashed=hashed)
        index = AnnoyIndex(int(manifest["dim"]), manifest["metric"])
        index.load(str(path))  # mmap: pages come in as queries touch them
    except VersionRefused:
        shutil.rmtree(cache, ignore_errors=True)
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        shutil.rmtree(cache, ignore_errors=True)
        raise VersionRefused(f"{vdir}: {type(e).__name__}: {e}") from e
    found = problem(index, ids, manifest)
    if found:
        index.unload()
        shutil.rmtree(cache, ignore_errors=True)
        raise VersionRefused(f"{vdir}: {found}")
    return Version(category, version, manifest, index, ids, cache if copied else None)


def read_ids(storage: Storage, category: str, version: str) -> list[str]:
    """A version's product ids by Annoy id, checked against its manifest (no index loaded)."""
    try:
        ids = _ids(storage, category, version, read_manifest(storage, category, version))
    except (OSError, KeyError, ValueError, TypeError) as e:
        vdir = layout.version_dir(category, version)
        raise VersionRefused(f"{vdir}: {type(e).__name__}: {e}") from e
    return [str(x) for x in ids]
