"""The daily job as a separate run process, for test_resume.py's SIGKILL test.

Importing this module (as every step process of the multiprocess executor does) wraps the
embedder call: each call is logged to $CRASH_DIR/calls.jsonl with the process id, and the call
number $BLOCK_AT_CALL of the first attempt parks forever, its pid in $CRASH_DIR/blocked, so the
test can SIGKILL the step process mid-way, between finished chunks and unfinished ones.
"""

import json
import os
import sys
import time
from pathlib import Path

import dagster as dg

from image_search_assets.core.inference import engine
from image_search_assets.definitions import DAILY_JOB, build_definitions
from image_search_assets.settings import load_settings

CRASH_DIR = Path(os.environ["CRASH_DIR"])
BLOCK_AT_CALL = int(os.environ["BLOCK_AT_CALL"])
_real_embed = engine.embed_sharded
_calls_here = []


def _logged_embed(load, blobs, boxes, devices, **options):
    blocked = CRASH_DIR / "blocked"
    if len(_calls_here) == BLOCK_AT_CALL and not blocked.exists():
        blocked.write_text(str(os.getpid()))
        time.sleep(600)  # the test kills this process here
    vectors = _real_embed(load, blobs, boxes, devices, **options)
    _calls_here.append(len(blobs))
    with (CRASH_DIR / "calls.jsonl").open("a") as log:
        log.write(json.dumps({"pid": os.getpid(), "items": len(blobs)}) + "\n")
    return vectors


# Run with -m, this file is imported twice (as __main__ and by the job's module name, and again
# as __mp_main__ in step processes): wrap the model once only.
if not hasattr(engine.embed_sharded, "logged_by_crash_job"):
    _logged_embed.logged_by_crash_job = True
    engine.embed_sharded = _logged_embed


def daily_job() -> dg.JobDefinition:
    return build_definitions(load_settings()).resolve_job_def(DAILY_JOB)


if __name__ == "__main__":
    day, *asset_paths = sys.argv[1:]
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            dg.reconstructable(daily_job),
            instance,
            tags={"dagster/partition": day},
            asset_selection=[dg.AssetKey(p.split("/")) for p in asset_paths],
        )
        print(result.run_id)
        sys.exit(0 if result.success else 1)
