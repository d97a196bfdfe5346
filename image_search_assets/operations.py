"""Operator moves of serving: `image-search rollback` and `image-search unpin`.

The rollback_index job (automation/rollback.py) calls the same `change_serving`, so a pin set
from the UI is cleared from the CLI and back. The pointer itself is core/index/current.py's.
"""

from __future__ import annotations

import argparse
from typing import Any

from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index import current, pins
from image_search_assets.core.storage import Storage
from image_search_assets.settings import Settings, load_settings

ACTIONS = ("rollback", "unpin")
# What an operator's refusal is: explained in one line, never retried.
REFUSED = (current.PointerError, annoy.IndexVerificationError)


def change_serving(
    storage: Storage,
    settings: Settings,
    *,
    category: str,
    action: str,
    to_version: str | None = None,
    day: str | None = None,
    reason: str = "",
) -> current.Pointer:
    """Rollback (to a kept, verified version, then pinned) or unpin; REFUSED if it can't."""
    if category not in settings.category_names:
        raise current.PointerError(
            f"unknown category {category!r}; configured: {list(settings.category_names)}"
        )
    retention = settings.index.retention
    if action == "unpin":
        return pins.unpin(storage, category, retention=retention)
    if action != "rollback":
        raise current.PointerError(f"unknown action {action!r}: one of {ACTIONS}")
    return pins.rollback(
        storage,
        category,
        to_version=to_version or None,
        day=day or None,
        reason=reason or "rolled back by an operator",
        retention=retention,
    )


def serving_now(storage: Storage, categories: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """Every category's pointer (pin included), as JSON and as text for `image-search report`."""
    pointers = {c: current.read_pointer(storage, c) for c in categories}
    lines = [
        current.describe(c, p) if p else f"{c}: nothing published" for c, p in pointers.items()
    ]
    as_json = {c: p.as_json() if p else None for c, p in pointers.items()}
    return as_json, "serving now:\n" + "\n".join(f"  {line}" for line in lines)


def cmd_change_serving(args: argparse.Namespace) -> int:
    from resources import StorageResource

    settings = load_settings()
    storage = StorageResource(root=settings.storage_root, gcp_project=settings.gcp_project)
    try:
        pointer = change_serving(
            storage.open(),
            settings,
            category=args.category,
            action=args.command,
            to_version=getattr(args, "to", None),
            day=getattr(args, "day", None),
            reason=getattr(args, "reason", ""),
        )
    except REFUSED as e:
        raise SystemExit(f"{args.command} refused: {e}") from None
    print(current.describe(args.category, pointer))
    return 0


def add_commands(sub: Any) -> None:
    """Registers `rollback` and `unpin` on the `image-search` subcommand parser."""
    rb = sub.add_parser("rollback", help="serve a kept version and pin the category there")
    rb.add_argument("--category", required=True)
    to = rb.add_mutually_exclusive_group()
    to.add_argument("--to", help="a kept version (default: the one CURRENT replaced)")
    to.add_argument("--day", help="the newest kept version of this day")
    rb.add_argument("--reason", default="rolled back by an operator")
    rb.set_defaults(func=cmd_change_serving)
    up = sub.add_parser("unpin", help="serve the newest good version and follow publishes again")
    up.add_argument("--category", required=True)
    up.set_defaults(func=cmd_change_serving)
