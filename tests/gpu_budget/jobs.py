"""A job of the 13 categories' GPU steps, with the real pools and tags but no model work.

The steps sleep instead of running models so that admission, not inference, is under test;
their pools, GPU tags and priorities come from the real categories config.
"""

import os
import time

import dagster as dg

from image_search_assets.settings import load_settings
from image_search_assets.tags import gpu_pool, gpu_tags

STEP_SECONDS = float(os.environ.get("GPU_TEST_STEP_SECONDS", "1.0"))


def _gpu_op(category):
    @dg.op(
        name=f"{category.name}__detections",
        pool=gpu_pool(category),
        tags=gpu_tags(category),
        retry_policy=dg.RetryPolicy(max_retries=3),
    )
    def gpu_step(context: dg.OpExecutionContext) -> None:
        time.sleep(STEP_SECONDS)

    return gpu_step


@dg.job(executor_def=dg.multiprocess_executor.configured({"max_concurrent": 16}))
def gpu_steps():
    for category in load_settings().categories:
        _gpu_op(category)()
