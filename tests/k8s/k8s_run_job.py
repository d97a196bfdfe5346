"""One-step jobs on the k8s executor, with the real op tags of a GPU step (tops' detections)."""

import os

import dagster as dg
import pandas as pd

from image_search_assets.core.inference.chunks import run_chunks
from image_search_assets.core.storage import open_storage
from image_search_assets.k8s.executor import image_search_k8s_executor
from image_search_assets.k8s.job_config import k8s_op_tags
from image_search_assets.settings import load_settings

SETTINGS = load_settings()
# Set on the first attempt's pod only: the node goes away after this many finished chunks.
RECLAIM_AFTER_ENV = "TEST_RECLAIM_AFTER_CHUNKS"
ITEMS, CHUNK = 10, 2


@dg.op(tags=k8s_op_tags(SETTINGS, SETTINGS.category("tops"), gpu=True))
def detect() -> str:
    return "detected"


@dg.job(executor_def=image_search_k8s_executor)
def gpu_step_job():
    detect()


@dg.op(tags=k8s_op_tags(SETTINGS, SETTINGS.category("tops"), gpu=True))
def embed_in_chunks(context: dg.OpExecutionContext) -> dg.Output[int]:
    """Work persisted chunk by chunk (core/inference/chunks.py), as the GPU stages do."""
    reclaim_after = int(os.environ.get(RECLAIM_AFTER_ENV, "0"))
    computed = []

    def compute(part: pd.DataFrame, batch: int) -> pd.DataFrame:
        if reclaim_after and len(computed) == reclaim_after:
            os._exit(143)  # the spot VM is gone: no exception, no event, no cleanup
        computed.append(len(part))
        return part.assign(vector=part["product_id"].str.len())

    items = pd.DataFrame({"product_id": [f"p{i}" for i in range(ITEMS)]})
    done = run_chunks(
        open_storage(SETTINGS.storage_root),
        "work/spot/tops/embeddings",
        items,
        compute,
        key_columns=["product_id"],
        salt=context.run.run_id,
        chunk_size=CHUNK,
        batch_size=4,
    )
    return dg.Output(
        len(done.table),
        metadata={"chunks_computed": len(done.computed), "chunks_reused": len(done.reused)},
    )


@dg.job(executor_def=image_search_k8s_executor)
def chunked_step_job():
    embed_in_chunks()
