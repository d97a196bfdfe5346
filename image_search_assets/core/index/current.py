"""CURRENT: the pointer that names the version each category serves, and every move of it.

The pointer (its key in core/layout.py) holds {"version", "date", "count", "previous": [...],
"pin"}; this module is its one reader and writer. Every write is a compare-and-swap on the
object's generation (a generation-match precondition on GCS), so two writers never both win.
Serving only moves forward on its own: a publish for a day older than the served one leaves
CURRENT where it is (a backfill or re-run of an old day must not bring back removed products).
An operator moves it on purpose (pins.py): a pin in the pointer holds it on a version, and
`advance` then writes nothing until the pin is cleared.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from image_search_assets.core import layout
from image_search_assets.core.layout import pointer_key
from image_search_assets.core.storage import PreconditionFailed, Storage

# A lost compare-and-swap re-reads the pointer and decides again; past this many losses in a
# row something is writing in a loop, and the caller hears about it.
CAS_ATTEMPTS = 5


class PointerError(RuntimeError):
    """An operator's move of CURRENT that cannot be made (nothing published, no such version)."""


@dataclass(frozen=True)
class Pin:
    version: str
    reason: str
    pinned_at: str


@dataclass(frozen=True)
class Pointer:
    version: str
    date: str
    count: int
    previous: tuple[str, ...] = ()
    pin: Pin | None = None

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "previous": list(self.previous)}


@dataclass(frozen=True)
class Advance:
    """What a publish did to CURRENT: moved or not, why, and the version served after it."""

    moved: bool
    reason: str
    serving: str

    def as_json(self) -> dict[str, Any]:
        return {"moved": self.moved, "reason": self.reason, "version": self.serving}


def _parse(raw: dict[str, Any]) -> Pointer:
    pin = raw.get("pin")
    return Pointer(
        version=str(raw["version"]),
        date=str(raw["date"]),
        count=int(raw["count"]),
        previous=tuple(raw.get("previous", ())),
        pin=None
        if not pin
        else Pin(str(pin["version"]), str(pin["reason"]), str(pin["pinned_at"])),
    )


def read_with_generation(storage: Storage, category: str) -> tuple[Pointer | None, int | None]:
    """The pointer and the generation it was read at (None, None: nothing published)."""
    key = pointer_key(category)
    generation = storage.generation(key)
    if generation is None:
        return None, None
    return _parse(storage.read_json(key)), generation


def read_pointer(storage: Storage, category: str) -> Pointer | None:
    """What CURRENT names now; None if the category has never been published."""
    return read_with_generation(storage, category)[0]


def history(old: Pointer | None, new_version: str, retention: int) -> tuple[str, ...]:
    """The versions CURRENT replaced, newest first: rollback's default target is the first."""
    if old is None:
        return ()
    seen = [v for v in dict.fromkeys([old.version, *old.previous]) if v != new_version]
    return tuple(seen[: max(retention - 1, 1)])


def swap(storage: Storage, category: str, pointer: Pointer, generation: int | None) -> None:
    """Writes the pointer only if it is still at `generation`; else PreconditionFailed."""
    data = json.dumps(pointer.as_json(), indent=2, sort_keys=True).encode()
    storage.write_bytes_if_generation(pointer_key(category), data, generation)


def advance(
    storage: Storage, category: str, *, version: str, day: str, count: int, retention: int
) -> Advance:
    """Points CURRENT at a freshly verified `version` of `day`, unless that goes back in time.

    The served day wins over an older one; the same day or a newer one moves CURRENT. While the
    category is pinned nothing moves. A lost compare-and-swap re-reads and decides again.
    """
    for _ in range(CAS_ATTEMPTS):
        old, generation = read_with_generation(storage, category)
        if old is not None and old.pin is not None:
            pin = old.pin
            return Advance(
                False,
                f"{category} is pinned to {pin.version} since {pin.pinned_at} ({pin.reason}); "
                f"{version} is kept for `image-search unpin --category {category}`",
                old.version,
            )
        if old is not None and day < old.date:
            return Advance(
                False,
                f"{category} serves {old.date} ({old.version}), newer than {day}: "
                f"CURRENT stays; {version} is kept",
                old.version,
            )
        new = Pointer(version, day, count, history(old, version, retention))
        try:
            swap(storage, category, new, generation)
        except PreconditionFailed:
            continue  # someone moved it meanwhile: compare with what they wrote
        replaced = "" if old is None else f", replacing {old.date} ({old.version})"
        return Advance(True, f"{category} serves {day} ({version}){replaced}", version)
    raise PreconditionFailed(f"{pointer_key(category)} kept changing: {CAS_ATTEMPTS} lost swaps")


def kept_versions(storage: Storage, category: str) -> list[str]:
    """Complete versions (their manifest written last) in storage, oldest first."""
    names = layout.version_names(storage.list(layout.versions_prefix(category)), category)
    return sorted(v for v in names if storage.exists(layout.manifest_key(category, v)))


def describe(category: str, pointer: Pointer) -> str:
    """One line for an operator: what is served, and whether (and why) it is pinned."""
    served = f"{category} serves {pointer.date} ({pointer.version}, {pointer.count} items)"
    if pointer.pin is None:
        return f"{served}, following publishes"
    return (
        f"{served}, PINNED since {pointer.pin.pinned_at}: {pointer.pin.reason}. Publishes keep "
        f"writing versions; `image-search unpin --category {category}` serves the newest again"
    )
