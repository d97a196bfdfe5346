"""Per-day GPU sizing reproduces the reference case and never blows the makespan."""

import pytest

from image_search_assets.core.planning.gpu_options import gpu_model_key, same_model
from image_search_assets.core.planning.gpu_plan import (
    StageRate,
    ThroughputModel,
    budget_for,
    default_plan,
    list_schedule_makespan,
    measured_throughput,
    plan_gpus,
    pooled_throughput,
)
from image_search_assets.settings import load_settings

MODEL = ThroughputModel(items_per_gpu_second=0.25, overhead_s=300, scaling_efficiency=0.95)


def reference_mix(n: int = 1800) -> dict[str, int]:
    """The reference case's mix: tops n, pants under n/2, the other 11 each under n/4."""
    names = load_settings().category_names
    others = [c for c in names if c not in ("tops", "pants")]
    return {
        "tops": n,
        "pants": int(n * 0.45),
        **{c: int(n * (0.1 + 0.012 * i)) for i, c in enumerate(others)},
    }


def test_reference_mix_gives_the_17_gpu_plan_at_the_same_makespan():
    plan = plan_gpus(reference_mix(), model=MODEL, slack=1.05)
    settings = load_settings()
    assert plan.gpus == {c.name: c.gpus for c in settings.categories}  # 4 / 2 / 1 each
    assert plan.peak_gpus == 17
    all_four = {c: MODEL.seconds(n, 4) for c, n in reference_mix().items()}
    assert sum(4 for _ in all_four) == 52
    assert plan.makespan_s <= 1.05 * max(all_four.values())


def test_sizing_follows_the_days_mix():
    day = reference_mix()
    day["tops"], day["skirts"] = day["tops"] // 4, day["tops"]  # a skirt sale day
    plan = plan_gpus(day, model=MODEL)
    assert plan.gpus["skirts"] == 4 and plan.gpus["tops"] < 4
    assert plan.makespan_s <= 1.05 * plan.fastest_makespan_s


@pytest.mark.parametrize("slack", [1.0, 1.05, 1.5, 3.0])
def test_makespan_stays_within_slack(slack):
    plan = plan_gpus(reference_mix(), model=MODEL, slack=slack)
    assert plan.makespan_s <= slack * plan.fastest_makespan_s + 1e-6


def test_packing_finds_the_smallest_budget_that_keeps_the_makespan():
    plan = plan_gpus(reference_mix(), model=MODEL)
    budget = budget_for(plan, plan.makespan_s * 1.05)
    assert budget <= plan.peak_gpus
    assert list_schedule_makespan(plan, budget) <= plan.makespan_s * 1.05
    assert list_schedule_makespan(plan, budget - 1) > plan.makespan_s * 1.05
    assert list_schedule_makespan(plan, 3) == float("inf")  # tops cannot fit in 3


def test_default_plan_is_the_hand_set_config():
    defaults = {c.name: c.gpus for c in load_settings().categories}
    plan = default_plan(defaults)
    assert plan.gpus == defaults and plan.peak_gpus == 17


def test_measured_rates_replace_the_configured_throughput_per_device_and_in_series():
    rates = [
        StageRate("detections", 800.0, 4),  # 200 per device
        StageRate("detections", 100.0, 1),  # 100
        StageRate("detections", 300.0, 1),  # 300: median 200
        StageRate("embeddings", 600.0, 2),  # 300
        StageRate("embeddings", 0.0, 1),  # a step with nothing computed: ignored
    ]
    model, source = measured_throughput(rates, MODEL)
    assert model.items_per_gpu_second == pytest.approx(1 / (1 / 200 + 1 / 300))
    assert (model.overhead_s, model.scaling_efficiency) == (MODEL.overhead_s, 0.95)
    assert source.startswith("120 items/GPU-s measured") and "over 4 steps" in source
    assert source.endswith("; 300 s overhead configured")  # no fixed seconds measured

    only_detect = [r for r in rates if r.stage == "detections"]
    assert measured_throughput(only_detect, MODEL) == (
        MODEL,
        "0.25 items/GPU-s and 300 s overhead configured (none measured yet)",
    )


def test_measured_fixed_seconds_replace_the_configured_overhead_one_pod_per_stage():
    rates = [
        StageRate("detections", 100.0, 1, fixed_seconds=40.0),
        StageRate("detections", 100.0, 1, fixed_seconds=60.0),  # median 50
        StageRate("detections", 100.0, 1),  # launch not on record: ignored for the overhead
        StageRate("embeddings", 200.0, 1, fixed_seconds=12.0),
    ]
    model, source = measured_throughput(rates, MODEL)
    assert model.overhead_s == pytest.approx(50.0 + 12.0)
    assert "62 s overhead measured (detect 50 s + embed 12 s)" in source
    # What the planner charges a category for its fixed cost: 62 s, where it assumed 300 s.
    assert model.seconds(0, 1) == pytest.approx(62.0) and MODEL.seconds(0, 1) == 300.0
    # Fixed seconds of one stage only: the configured overhead stands.
    half = [r for r in rates if r.stage == "detections"] + [StageRate("embeddings", 200.0, 1)]
    assert measured_throughput(half, MODEL)[0].overhead_s == MODEL.overhead_s


def test_a_fast_engine_right_sizes_the_reference_day_to_one_gpu_each():
    # At the reference's placeholder rate tops needs 4 GPUs; at a measured engine rate the
    # fixed overhead dominates and a fourth of the GPUs loses under 5 % of the makespan.
    fast, _ = measured_throughput(
        [StageRate("detections", 1000.0, 1), StageRate("embeddings", 10000.0, 1)], MODEL
    )
    assert plan_gpus(reference_mix(), model=MODEL).gpus["tops"] == 4
    assert set(plan_gpus(reference_mix(), model=fast).gpus.values()) == {1}


def _rates(model, detect, embed, fixed=(60.0, 40.0)):
    return [
        StageRate("detections", detect, 1, fixed[0], gpu_model=model),
        StageRate("embeddings", embed, 1, fixed[1], gpu_model=model),
    ]


def test_the_plan_uses_the_slowest_gpu_model_measured():
    rates = _rates("l4", 2.0, 2.0) + _rates("t4", 1.0, 1.0, fixed=(90.0, 60.0))
    model, source = measured_throughput(rates, MODEL)
    assert model.items_per_gpu_second == pytest.approx(0.5)  # t4: 1 / (1/1 + 1/1)
    assert model.overhead_s == pytest.approx(150.0)  # t4's own fixed seconds
    assert source.startswith("t4, the slowest GPU of 2 measured")
    # The same day on L4 alone plans faster, so fewer GPUs keep the same makespan.
    l4, _ = measured_throughput(_rates("l4", 2.0, 2.0), MODEL)
    assert l4.items_per_gpu_second == pytest.approx(1.0)
    day = reference_mix(20_000)
    assert plan_gpus(day, model=l4).peak_gpus <= plan_gpus(day, model=model).peak_gpus


def test_models_outside_the_acceptable_ones_are_left_out():
    rates = _rates("l4", 2.0, 2.0) + _rates("a100-sxm4-40gb", 0.5, 0.5)
    model, source = measured_throughput(rates, MODEL, models=["l4", "t4"])
    assert model.items_per_gpu_second == pytest.approx(1.0) and source.startswith("l4")
    # "a100" (a GKE type) covers the device name CUDA reports for it
    model, _ = measured_throughput(rates, MODEL, models=["a100"])
    assert model.items_per_gpu_second == pytest.approx(0.25)


def test_a_model_measured_in_one_stage_only_does_not_count():
    rates = _rates("l4", 2.0, 2.0) + [StageRate("detections", 0.1, 1, 30.0, gpu_model="t4")]
    model, source = measured_throughput(rates, MODEL)
    assert model.items_per_gpu_second == pytest.approx(1.0) and source.startswith("l4")


def test_rates_without_a_model_plan_as_before():
    rates = [StageRate("detections", 1.0, 1, 60.0), StageRate("embeddings", 1.0, 1, 40.0)]
    assert measured_throughput(rates, MODEL) == pooled_throughput(rates, MODEL)


@pytest.mark.parametrize(
    "gke, device",
    [
        ("nvidia-tesla-t4", "Tesla T4"),
        ("nvidia-l4", "NVIDIA L4"),
        ("nvidia-h100-80gb", "NVIDIA H100 80GB HBM3"),
    ],
)
def test_a_gke_type_and_its_device_name_are_one_model(gke, device):
    assert same_model(gpu_model_key(gke), gpu_model_key(device))
