"""The platform's code location with a detector call that can be parked, for tests that stop,
preempt or race a run in the middle of a GPU step.

When $PARK_DIR/park exists, the first detector call to rename it to $PARK_DIR/parked writes its
process id to $PARK_DIR/pid and waits until `parked` is removed; every other call runs at once.
"""

import os
import time
from pathlib import Path

from image_search_assets.core.inference import engine

PARK_DIR = Path(os.environ["PARK_DIR"])
_real_detect = engine.detect_sharded


def _parkable_detect(*args, **kwargs):
    try:
        os.rename(PARK_DIR / "park", PARK_DIR / "parked")  # atomic: one call wins
    except FileNotFoundError:
        return _real_detect(*args, **kwargs)
    (PARK_DIR / "pid.tmp").write_text(str(os.getpid()))
    os.replace(PARK_DIR / "pid.tmp", PARK_DIR / "pid")
    while (PARK_DIR / "parked").exists():
        time.sleep(0.2)  # a termination's SIGINT or a preemption's SIGTERM lands here
    return _real_detect(*args, **kwargs)


if not hasattr(engine.detect_sharded, "parkable"):
    _parkable_detect.parkable = True  # type: ignore[attr-defined]
    engine.detect_sharded = _parkable_detect

from image_search_assets.definitions import defs  # noqa: E402

__all__ = ["defs"]
