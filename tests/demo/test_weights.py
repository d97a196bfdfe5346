"""The committed demo weights, loaded the way the demo loads them (`weights: demo` in
platform.yaml): the detector finds the product and the embedder's neighbours look alike, which
random weights of the same architectures do not."""

import json
from dataclasses import replace

import pytest

from image_search_assets.core.inference.checkpoints import DEMO_RECORD, demo_checkpoint
from image_search_assets.core.inference.models import (
    ModelSpec,
    known_labels,
)
from image_search_assets.demo.retrieval_eval import draw_eval_set, evaluate_weights
from image_search_assets.settings import load_settings

SETTINGS = load_settings()


def specs(weights: str) -> tuple[ModelSpec, ModelSpec]:
    d, e = SETTINGS.detector, SETTINGS.embedder
    random_head = len(SETTINGS.category_names) + 1  # sizes random weights only
    return (
        ModelSpec.from_config(replace(d, weights=weights), random_head),
        ModelSpec.from_config(replace(e, weights=weights)),
    )


def test_the_demo_detector_records_a_label_for_every_shipped_category():
    record = json.loads(DEMO_RECORD.read_text())["detector"]
    # Label i+1 was trained on categories[i]; label 0 is background.
    assert record["labels"] == ["background", *record["categories"]]
    labels = known_labels(specs("demo")[0])
    assert labels is not None and set(labels[1:]) == set(SETTINGS.category_names)


def test_the_packaged_config_uses_the_committed_demo_weights():
    assert SETTINGS.detector.weights == SETTINGS.embedder.weights == "demo"
    for spec in specs("demo"):
        path = demo_checkpoint(spec.arch)
        assert path.is_file() and path.stat().st_size < 6_000_000  # a few MB, fp16


@pytest.fixture(scope="module")
def products():
    # Every colour x pattern of two categories, 6 fresh products each (seed unseen in training).
    return draw_eval_set(["bags", "dresses"], per_combo=6, seed=2026)


@pytest.mark.e2e  # minutes: embeds an evaluation set with both weights
@pytest.mark.parametrize("weights", ["demo", "random"])
def test_neighbours_share_colour_and_pattern_with_demo_weights_only(products, weights):
    detector, embedder = specs(weights)
    result = evaluate_weights(
        products,
        SETTINGS.category_names,
        detector,
        embedder,
        score_threshold=SETTINGS.detector.score_threshold,
    )
    if weights == "demo":
        assert result["precision_at_5_per_category"] >= 0.8
        assert result["detector_box_share"] >= 0.9 and result["detector_mean_iou"] >= 0.7
    else:
        assert result["precision_at_5_per_category"] < 0.6
