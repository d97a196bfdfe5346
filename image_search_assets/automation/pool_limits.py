"""The GPU pools' limits follow the config on every instance the platform starts.

`dagster dev` on a fresh DAGSTER_HOME runs this sensor (running by default) within a minute, so
its pools get their budget without the `image-search` CLI; after a change to a category's
`gpus`, the next tick brings the instance's limit to the new budget.
"""

import dagster as dg

from image_search_assets.gpu_budget import apply_pool_limits, gpu_pool_limits, is_weighted
from image_search_assets.settings import Settings


def pool_limits_sensor(settings: Settings) -> dg.SensorDefinition:
    limits = gpu_pool_limits(settings)

    @dg.sensor(
        name="gpu_pool_limits",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Sets each GPU pool's limit to its categories' GPUs (platform.yaml).",
    )
    def gpu_pool_limits_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        changed = apply_pool_limits(context.instance, limits)
        for pool, (was, now) in changed.items():
            context.log.info(f"GPU pool {pool}: limit {was} -> {now} (platform.yaml)")
        state = ", ".join(f"{pool}={limit}" for pool, limit in limits.items())
        if not is_weighted(context.instance):
            # Stock storage gives a step one slot, whatever its GPUs: the budget counts steps.
            context.log.warning(
                "this instance's event_log_storage is not image_search_assets.gpu_budget's: "
                "steps hold one pool slot each, not one per GPU (docs/gpu-budget.md)"
            )
        return dg.SkipReason(f"GPU pool limits {state}; changed: {changed or 'none'}")

    return gpu_pool_limits_sensor
