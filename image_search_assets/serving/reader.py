"""IndexReader: every category's CURRENT index, followed as the daily publish moves it.

    reader = IndexReader(open_storage(root), ["tops", "pants"], cache_dir="var/serving-cache")
    reader.start()                      # loads what CURRENT names now, then polls
    answer = reader.similar_to_product("p-123", k=10)
    reader.close()

A poll reads the generation of each category's pointer (core/layout.py; a stat locally, object
metadata on GCS); when it changed, the named version is loaded and verified (by the one reader,
core/index/published.py) off the request path and swapped in under a lock. A query holds the
versions it started on until it returns, so a swap never tears an answer; the old version is
unmapped when its last holder lets go. A version that fails
verification is never served: the previous one keeps answering and the failure is counted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from image_search_assets.core.index.query import Neighbour as Neighbour  # in every Answer
from image_search_assets.core.layout import image_key, pointer_key
from image_search_assets.core.storage import Storage
from image_search_assets.serving.versions import LoadedVersion, VersionRefused, load_verified

log = logging.getLogger(__name__)


class UnknownProduct(KeyError):
    """The product id is in no served index (of the asked category)."""


class NotReady(RuntimeError):
    """A category asked for has no verified index loaded yet."""


class ModelMismatch(RuntimeError):
    """A category's served version was built by another embedder than the query vector's."""

    def __init__(self, refused: dict[str, str]) -> None:
        super().__init__("; ".join(f"{c}: {why}" for c, why in refused.items()))
        self.refused = refused


@dataclass(frozen=True)
class Answer:
    neighbours: list[Neighbour]
    versions: dict[str, str]  # category -> the version that answered
    category: str | None = None  # the product's own category (product queries)


@dataclass
class CategoryState:
    """What the reader knows of one category; counters only grow."""

    served: LoadedVersion | None = None
    generation: int | None = None
    swaps: int = 0
    failed_loads: int = 0
    last_error: str | None = None
    refused: set[str] = field(default_factory=set)
    # The pointer's optional `pin` ({"version", "reason", "pinned_at"} or None), as written by
    # whoever pinned the category; reported as is, never acted on here.
    pin: dict | None = None


class IndexReader:
    """Serves each category's current verified version and follows CURRENT in the background."""

    def __init__(
        self,
        storage: Storage,
        categories: Sequence[str],
        *,
        cache_dir: str | Path,
        poll_interval_s: float = 10.0,
    ) -> None:
        if not categories:
            raise ValueError("at least one category is required")
        self.storage = storage
        self.categories = tuple(categories)
        self.cache_dir = Path(cache_dir)
        self.poll_interval_s = poll_interval_s
        self._states = {c: CategoryState() for c in self.categories}
        self._lock = threading.Lock()  # guards the served versions and counters
        self._refresh_lock = threading.Lock()  # one poll at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, *, background: bool = True) -> IndexReader:
        """Loads what CURRENT names now; with `background`, keeps polling on a daemon thread."""
        self.refresh()
        if background and self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="index-poll", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            served = [s.served for s in self._states.values() if s.served is not None]
            for state in self._states.values():
                state.served = None
        for version in served:
            version.retire()

    def __enter__(self) -> IndexReader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a poll must never kill the thread; it is logged
                log.exception("polling CURRENT failed; the served versions keep answering")

    def refresh(self) -> list[str]:
        """One poll of every category; returns the categories whose served version changed.

        A storage error (GCS 5xx, say) propagates and leaves the category to the next poll.
        """
        with self._refresh_lock:
            return [c for c in self.categories if self._refresh(c)]

    def _refresh(self, category: str) -> bool:
        state = self._states[category]
        pointer = pointer_key(category)
        generation = self.storage.generation(pointer)
        if generation is None or generation == state.generation:
            return False
        current = self.storage.read_json(pointer)
        version = str(current["version"])
        state.pin = current.get("pin")
        if version in state.refused or (state.served and state.served.version == version):
            state.generation = generation
            return False
        try:
            loaded = load_verified(self.storage, category, version, self.cache_dir)
        except (VersionRefused, FileNotFoundError) as e:
            with self._lock:
                state.failed_loads += 1
                state.last_error = str(e)
                state.refused.add(version)
                state.generation = generation
            log.error("refused %s %s: %s", category, version, e)
            return False
        with self._lock:
            old, state.served = state.served, loaded
            state.generation = generation
            state.swaps += old is not None
        if old is not None:
            old.retire()
        log.info("serving %s %s (%d items)", category, version, len(loaded.ids))
        return True

    # -- state -------------------------------------------------------------------------------
    def ready(self) -> bool:
        """Every configured category has a verified version loaded."""
        with self._lock:
            return all(s.served is not None for s in self._states.values())

    def state(self, category: str) -> CategoryState:
        return self._states[category]

    @contextlib.contextmanager
    def hold(self, categories: Sequence[str] | None = None) -> Iterator[dict[str, LoadedVersion]]:
        """The served versions of `categories` (all loaded ones if None), held until exit."""
        wanted = self.categories if categories is None else tuple(categories)
        for category in wanted:
            if category not in self._states:
                raise KeyError(f"unknown category {category!r}")
        with self._lock:
            held = {c: s for c in wanted if (s := self._states[c].served) is not None}
            for version in held.values():
                version.acquire()
        try:
            if categories is not None and len(held) < len(wanted):
                missing = sorted(set(wanted) - set(held))
                raise NotReady(f"no verified index loaded for {missing}")
            if not held:
                raise NotReady("no verified index loaded yet")
            yield held
        finally:
            for version in held.values():
                version.release()

    # -- queries -----------------------------------------------------------------------------
    def similar_to_product(
        self, product_id: str, k: int = 10, category: str | None = None
    ) -> Answer:
        """The k nearest other items of the product's own category (or `category`'s)."""
        with self.hold(None if category is None else [category]) as held:
            home, row = next(
                ((v, r) for v in held.values() if (r := v.row(product_id)) is not None),
                (None, None),
            )
            if home is None or row is None:
                raise UnknownProduct(product_id)
            found = home.by_item(row, k + 1)
            found = [(pid, d) for pid, d in found if pid != product_id][:k]
            neighbours = [Neighbour(p, home.category, d, home.version) for p, d in found]
            return Answer(neighbours, {home.category: home.version}, home.category)

    def embedder_refusals(self, identity: str) -> dict[str, str]:
        """The served categories whose version another embedder built, and why."""
        with self._lock:
            served = {c: s.served for c, s in self._states.items() if s.served is not None}
        return {c: why for c, v in served.items() if (why := v.embedder_mismatch(identity))}

    def similar_to_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        categories: Sequence[str] | None = None,
        *,
        embedder: str | None = None,
    ) -> Answer:
        """The k nearest items across `categories` (every served one if None), nearest first.

        With `embedder` (the vector's model identity), raises ModelMismatch unless every held
        version was built by it: checked on the versions that answer, so a swap between an
        earlier check and the search cannot slip another model's index in.
        """
        with self.hold(categories) as held:
            if embedder is not None:
                refused = {
                    c: why for c, v in held.items() if (why := v.embedder_mismatch(embedder))
                }
                if refused:
                    raise ModelMismatch(refused)
            found = [
                Neighbour(pid, v.category, d, v.version)
                for v in held.values()
                for pid, d in v.by_vector(vector, k)
            ]
            found.sort(key=lambda n: n.distance)
            return Answer(found[:k], {c: v.version for c, v in held.items()})

    def vector_of(self, product_id: str) -> tuple[str, np.ndarray]:
        """(category, stored vector) of an indexed product."""
        with self.hold() as held:
            for version in held.values():
                if (row := version.row(product_id)) is not None:
                    return version.category, np.asarray(version.index.get_item_vector(row))
        raise UnknownProduct(product_id)

    def image_key(self, product_id: str) -> str | None:
        """The storage key of a served product's image, if the items table records its day."""
        with self.hold() as held:
            for version in held.values():
                if (day := version.added_on.value(product_id)) is not None:
                    return image_key(day, product_id)
        return None
