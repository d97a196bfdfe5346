"""A one-step job on the k8s executor, with the real op tags of a GPU step (tops' detections)."""

import dagster as dg

from image_search_assets.k8s.executor import image_search_k8s_executor
from image_search_assets.k8s.job_config import k8s_op_tags
from image_search_assets.settings import load_settings

SETTINGS = load_settings()


@dg.op(tags=k8s_op_tags(SETTINGS, SETTINGS.category("tops"), gpu=True))
def detect() -> str:
    return "detected"


@dg.job(executor_def=image_search_k8s_executor)
def gpu_step_job():
    detect()
