"""CURRENT: the pointer that names the version each category serves, and every move of it.

    indexes/<category>/CURRENT.json -> {"version", "date", "count", "previous": [...], "pin"}

This module is the pointer's one reader and writer. Every write is a compare-and-swap on the
object's generation (a generation-match precondition on GCS), so two writers never both win.
Serving only moves forward on its own: a publish for a day older than the served one leaves
CURRENT where it is (a backfill or re-run of an old day must not bring back removed products).
An operator moves it on purpose: `rollback` points it at a kept, verified version and pins the
category there, so that publishes keep writing versions but never move it until `unpin`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from image_search_assets.core.index import annoy_index as annoy
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


def version_day(version: str) -> str:
    """The day a version was published for: its name is `<day>.<created>.<random>`."""
    return version.split(".", 1)[0]


def pointer_key(category: str) -> str:
    return f"{annoy.category_prefix(category)}/CURRENT.json"


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


def _read(storage: Storage, category: str) -> tuple[Pointer | None, int | None]:
    """The pointer and the generation it was read at (None, None: nothing published)."""
    key = pointer_key(category)
    generation = storage.generation(key)
    if generation is None:
        return None, None
    return _parse(storage.read_json(key)), generation


def read_pointer(storage: Storage, category: str) -> Pointer | None:
    """What CURRENT names now; None if the category has never been published."""
    return _read(storage, category)[0]


def _history(old: Pointer | None, new_version: str, retention: int) -> tuple[str, ...]:
    """The versions CURRENT replaced, newest first: rollback's default target is the first."""
    if old is None:
        return ()
    seen = [v for v in dict.fromkeys([old.version, *old.previous]) if v != new_version]
    return tuple(seen[: max(retention - 1, 1)])


def _swap(storage: Storage, category: str, pointer: Pointer, generation: int | None) -> None:
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
        old, generation = _read(storage, category)
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
        new = Pointer(version, day, count, _history(old, version, retention))
        try:
            _swap(storage, category, new, generation)
        except PreconditionFailed:
            continue  # someone moved it meanwhile: compare with what they wrote
        replaced = "" if old is None else f", replacing {old.date} ({old.version})"
        return Advance(True, f"{category} serves {day} ({version}){replaced}", version)
    raise PreconditionFailed(f"{pointer_key(category)} kept changing: {CAS_ATTEMPTS} lost swaps")


def kept_versions(storage: Storage, category: str) -> list[str]:
    """Complete versions (their manifest written last) in storage, oldest first."""
    prefix = f"{annoy.category_prefix(category)}/versions/"
    names = {k[len(prefix) :].split("/", 1)[0] for k in storage.list(prefix)}
    return sorted(
        v for v in names if storage.exists(f"{annoy.version_dir(category, v)}/manifest.json")
    )


def verified_manifest(storage: Storage, category: str, version: str) -> dict[str, Any]:
    """The manifest of a stored version once it passes publish's own verification.

    Raises PointerError if the version is not kept, or IndexVerificationError if it is damaged.
    """
    vdir = annoy.version_dir(category, version)
    if not storage.exists(f"{vdir}/manifest.json"):
        raise PointerError(f"{category}: version {version} is not kept ({storage.uri(vdir)})")
    try:
        served = annoy.load_version(storage, vdir)
    except OSError as e:  # Annoy refuses a damaged file before any checksum is compared
        raise annoy.IndexVerificationError(f"{vdir}: index.ann does not load: {e}") from e
    # The stored index's own first item is the query: verify() needs one answerable vector.
    probe = (
        np.asarray([served.index.get_item_vector(0)], np.float32)
        if served.ids
        else np.zeros((0, int(served.manifest["dim"])), np.float32)
    )
    served.index.unload()
    annoy.verify(storage, vdir, served.manifest, probe)
    return served.manifest


def _target(
    storage: Storage, category: str, old: Pointer, to_version: str | None, day: str | None
) -> str:
    if to_version is not None:
        return to_version
    kept = kept_versions(storage, category)
    if day is not None:
        of_day = [v for v in kept if version_day(v) == day]
        if not of_day:
            raise PointerError(f"{category}: no kept version of {day}; kept: {kept}")
        return of_day[-1]
    for version in old.previous:
        if version in kept and version != old.version:
            return version
    raise PointerError(
        f"{category}: no kept previous version to roll back to (pass --to VERSION); kept: {kept}"
    )


def rollback(
    storage: Storage,
    category: str,
    *,
    to_version: str | None = None,
    day: str | None = None,
    reason: str,
    retention: int,
) -> Pointer:
    """Serves a kept, verified version (default: the one CURRENT replaced) and pins it there."""
    if to_version is not None and day is not None:
        raise PointerError("pass a version or a day, not both")
    for _ in range(CAS_ATTEMPTS):
        old, generation = _read(storage, category)
        if old is None:
            raise PointerError(f"{category}: nothing is published, so nothing to roll back")
        target = _target(storage, category, old, to_version, day)
        manifest = verified_manifest(storage, category, target)
        pin = Pin(target, reason, datetime.now(UTC).isoformat(timespec="seconds"))
        new = Pointer(
            target,
            str(manifest["date"]),
            int(manifest["count"]),
            _history(old, target, retention),
            pin,
        )
        try:
            _swap(storage, category, new, generation)
        except PreconditionFailed:
            continue
        return new
    raise PreconditionFailed(f"{pointer_key(category)} kept changing: {CAS_ATTEMPTS} lost swaps")


def describe(category: str, pointer: Pointer) -> str:
    """One line for an operator: what is served, and whether (and why) it is pinned."""
    served = f"{category} serves {pointer.date} ({pointer.version}, {pointer.count} items)"
    if pointer.pin is None:
        return f"{served}, following publishes"
    return (
        f"{served}, PINNED since {pointer.pin.pinned_at}: {pointer.pin.reason}. Publishes keep "
        f"writing versions; `image-search unpin --category {category}` serves the newest again"
    )


def _newest_good(storage: Storage, category: str) -> tuple[str, dict[str, Any]]:
    """The newest kept version that verifies, with its manifest; damaged ones are passed over."""
    refused: list[str] = []
    for version in reversed(kept_versions(storage, category)):
        try:
            return version, verified_manifest(storage, category, version)
        except (annoy.IndexVerificationError, OSError, ValueError) as e:
            refused.append(f"{version}: {e}")
    raise PointerError(f"{category}: no kept version verifies: {refused}")


def unpin(storage: Storage, category: str, *, retention: int = 7) -> Pointer:
    """Clears the pin and serves the newest good version (latest day, then latest publish)."""
    for _ in range(CAS_ATTEMPTS):
        old, generation = _read(storage, category)
        if old is None:
            raise PointerError(f"{category}: nothing is published")
        version, manifest = _newest_good(storage, category)
        new = Pointer(
            version,
            str(manifest["date"]),
            int(manifest["count"]),
            _history(old, version, retention),
        )
        try:
            _swap(storage, category, new, generation)
        except PreconditionFailed:
            continue
        return new
    raise PreconditionFailed(f"{pointer_key(category)} kept changing: {CAS_ATTEMPTS} lost swaps")
