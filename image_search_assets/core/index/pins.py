"""Deliberate moves of CURRENT: roll back to a kept, verified version and pin it, or unpin.

While a category is pinned, publishes keep writing and verifying versions but never move
CURRENT (advance); `unpin` serves the newest version that verifies and follows
publishes again. Targets are verified with publish's own checks (annoy_index.verify, the one
reader of published versions).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from image_search_assets.core import layout
from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import published
from image_search_assets.core.index.current import (
    CAS_ATTEMPTS,
    Pin,
    Pointer,
    PointerError,
    history,
    kept_versions,
    read_with_generation,
    swap,
)
from image_search_assets.core.layout import version_day
from image_search_assets.core.storage import PreconditionFailed, Storage


def verified_manifest(storage: Storage, category: str, version: str) -> dict[str, Any]:
    """The manifest of a stored version once it passes publish's own verification.

    Raises PointerError if the version is not kept, or IndexVerificationError if it is damaged.
    """
    if not storage.exists(layout.manifest_key(category, version)):
        where = storage.uri(layout.version_dir(category, version))
        raise PointerError(f"{category}: version {version} is not kept ({where})")
    annoy.verify(storage, category, version)
    return published.read_manifest(storage, category, version)


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
        old, generation = read_with_generation(storage, category)
        if old is None:
            raise PointerError(f"{category}: nothing is published, so nothing to roll back")
        target = _target(storage, category, old, to_version, day)
        manifest = verified_manifest(storage, category, target)
        pin = Pin(target, reason, datetime.now(UTC).isoformat(timespec="seconds"))
        new = Pointer(
            target,
            str(manifest["date"]),
            int(manifest["count"]),
            history(old, target, retention),
            pin,
        )
        try:
            swap(storage, category, new, generation)
        except PreconditionFailed:
            continue
        return new
    raise PreconditionFailed(f"CURRENT of {category} kept changing: {CAS_ATTEMPTS} lost swaps")


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
        old, generation = read_with_generation(storage, category)
        if old is None:
            raise PointerError(f"{category}: nothing is published")
        version, manifest = _newest_good(storage, category)
        new = Pointer(
            version,
            str(manifest["date"]),
            int(manifest["count"]),
            history(old, version, retention),
        )
        try:
            swap(storage, category, new, generation)
        except PreconditionFailed:
            continue
        return new
    raise PreconditionFailed(f"CURRENT of {category} kept changing: {CAS_ATTEMPTS} lost swaps")
