"""Jobs of GPU steps with the real pools and tags but no model work.

The steps sleep instead of running models so that admission, not inference, is under test;
their pools, GPU tags and priorities come from the real categories config.
"""

import os
import time

import dagster as dg

from image_search_assets.settings import load_settings
from image_search_assets.tags import gpu_pool, gpu_tags

STEP_SECONDS = float(os.environ.get("GPU_TEST_STEP_SECONDS", "1.0"))
# The starvation scenario: a stream of long 1-GPU steps, then one short 4-GPU step.
STREAM_STEPS, STREAM_SECONDS, BIG_SECONDS = 8, 10.0, 2.0
EXECUTOR = dg.multiprocess_executor.configured({"max_concurrent": 16})


def _category(name: str):
    return next(c for c in load_settings().categories if c.name == name)


def _gpu_op(category, name: str | None = None, seconds: float | None = None):
    @dg.op(
        name=name or f"{category.name}__detections",
        pool=gpu_pool(category),
        tags=gpu_tags(category),
        retry_policy=dg.RetryPolicy(max_retries=3),
    )
    def gpu_step(context: dg.OpExecutionContext) -> None:
        time.sleep(STEP_SECONDS if seconds is None else seconds)

    return gpu_step


@dg.job(executor_def=EXECUTOR)
def gpu_steps():
    for category in load_settings().categories:
        _gpu_op(category)()


@dg.job(executor_def=EXECUTOR)
def one_gpu_stream():
    hats = _category("hats")
    for i in range(STREAM_STEPS):
        _gpu_op(hats, f"hats__stream_{i}", STREAM_SECONDS)()


@dg.job(executor_def=EXECUTOR)
def one_four_gpu_step():
    _gpu_op(_category("tops"), seconds=BIG_SECONDS)()
