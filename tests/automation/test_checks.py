"""Index health checks: the plain outcomes, then the asset checks in real daily runs."""

from types import SimpleNamespace

import dagster as dg
import numpy as np
import pytest

from image_search_assets.automation.checks import min_recall
from image_search_assets.core.index import annoy_index as annoy
from image_search_assets.core.index.checks import (
    accounting_outcome,
    aligned_vectors,
    kept_unless_removed_outcome,
    reach_outcome,
    recall_outcome,
    vectors_outcome,
)
from image_search_assets.definitions import DAILY_JOB, build_definitions
from image_search_assets.demo.synthetic import generate_catalog
from image_search_assets.settings import load_settings
from tests.conftest import START, TEST_CATEGORIES

CHECKS = {
    "recall_at_10",
    "vectors_finite_unit_norm",
    "every_new_product_accounted",
    "reach_equals_previous_plus_new",
    "served_ids_kept_unless_removed",
}


def unit(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_recall_passes_on_a_sound_index_and_fails_on_one_built_from_other_vectors():
    vectors = unit(300)
    sound = annoy.build_index(vectors, metric="angular", n_trees=16)
    assert recall_outcome(sound, vectors, min_recall=0.9, sample=50).passed
    shifted = annoy.build_index(np.roll(vectors, 1, axis=0), metric="angular", n_trees=16)
    broken = recall_outcome(shifted, vectors, min_recall=0.9, sample=50)
    assert not broken.passed and "BELOW the threshold 0.9" in broken.description
    assert broken.metadata["recall_at_10"] < 0.5


def test_vectors_must_be_finite_and_unit_norm():
    good = unit(5)
    assert vectors_outcome(good).passed
    bad = good.copy()
    bad[0, 0], bad[1] = np.nan, bad[1] * 2
    outcome = vectors_outcome(bad)
    assert not outcome.passed
    assert (outcome.metadata["non_finite"], outcome.metadata["not_unit_norm"]) == (1, 1)


def test_accounting_names_the_products_nobody_accounted_for():
    entry = {"new": 3, "indexed": 1, "quarantined": 1, "reasons": {"not_an_image": 1}}
    assert accounting_outcome({**entry, "unaccounted": []}).passed
    outcome = accounting_outcome({**entry, "unaccounted": ["p9"]})
    assert not outcome.passed and "['p9']" in outcome.description


def test_reach_counts_re_sent_ids_once():
    ok = reach_outcome(["a", "b"], ["b", "c"], ["a", "b", "c"], published_count=3)
    assert ok.passed and ok.metadata["resent"] == 1
    assert not reach_outcome(["a", "b"], ["b", "c"], ["a", "b", "b", "c"], 4).passed  # twice
    assert not reach_outcome(["a", "b"], ["c"], ["b", "c"], 2).passed  # lost "a"
    assert not reach_outcome(["a"], ["c"], ["a", "c"], published_count=1).passed


def test_vectors_are_aligned_to_the_index_ids_or_refused():
    vectors = unit(3)
    got = aligned_vectors(["c", "a", "b"], ["a", "b", "c"], vectors)
    np.testing.assert_array_equal(got, vectors[[2, 0, 1]])
    with pytest.raises(ValueError, match="missing from index"):
        aligned_vectors(["a", "b"], ["a", "b", "c"], vectors)


def test_min_recall_comes_from_the_checks_config():
    assert min_recall(SimpleNamespace(checks=SimpleNamespace(min_recall=0.75))) == 0.75
    assert min_recall(load_settings()) == 0.9


def test_served_products_may_only_leave_by_removal():
    ok = kept_unless_removed_outcome(["a", "b", "c"], "2026-11-01", ["a", "d"], removed={"b", "c"})
    assert ok.passed and ok.metadata["lost_without_removal"] == 0
    # A rebuild from one day (a moved start_date): fewer served, nothing removed.
    lost = kept_unless_removed_outcome(["a", "b", "c"], "2026-11-01", ["d"], removed={"b"})
    assert not lost.passed and lost.metadata["lost_without_removal"] == 2
    assert "['a', 'c']" in lost.description and "start_date" in lost.description


def run_day(settings, day, instance):
    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    return job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False)


def evaluations(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.path[0], e.check_name): e for e in result.get_asset_check_evaluations()}


def test_every_check_runs_with_the_daily_run_and_passes_on_good_days(settings):
    with dg.instance_for_test() as instance:
        for day in ("2026-11-01", "2026-11-02"):
            result = run_day(settings, day, instance)
            assert result.success
            found = evaluations(result)
            assert set(found) == {(c, n) for c in TEST_CATEGORIES for n in CHECKS}
            failed = {k: e.description for k, e in found.items() if not e.passed}
            assert failed == {}
            assert {e.partition for e in found.values()} == {day}
        reach = found[("tops", "reach_equals_previous_plus_new")]
        assert reach.metadata["previous_count"].value > 0
        assert reach.metadata["count"].value == (
            reach.metadata["previous_count"].value + reach.metadata["new_items"].value
        )
        plot = found[("tops", "recall_at_10")].metadata["recall_vs_search_k"].value
        assert plot.startswith("![recall vs search_k](data:image/png;base64,iVBOR")
        assert "items_over_time" in reach.metadata


@pytest.fixture
def many_tops(tmp_path, settings):
    """One day with enough tops (more than k=10) for a wrong index to show in recall@10."""
    mix = {"tops": 20, "pants": 1, "hats": 1}
    catalog = generate_catalog(
        tmp_path / "many", TEST_CATEGORIES, START, days=1, image_size=32, mix=mix
    )
    return settings.with_overrides(catalog=str(catalog))


def test_a_broken_index_is_reported_as_a_failed_recall_check(many_tops, monkeypatch):
    real_build = annoy.build_index

    def off_by_one(vectors, **kwargs):
        # A build bug: every Annoy id gets its neighbour's vector. The index still loads, holds
        # the right count and answers queries, so only recall against exact search catches it.
        return real_build(np.roll(vectors, 1, axis=0), **kwargs)

    monkeypatch.setattr(annoy, "build_index", off_by_one)
    with dg.instance_for_test() as instance:
        result = run_day(many_tops, "2026-11-01", instance)
    assert result.success  # non-blocking: the day's data is still written and visible
    recall = evaluations(result)[("tops", "recall_at_10")]
    assert not recall.passed
    assert recall.severity == dg.AssetCheckSeverity.ERROR
    assert "BELOW the threshold" in recall.description
    assert recall.metadata["recall_at_10"].value < min_recall(many_tops)
    assert evaluations(result)[("tops", "reach_equals_previous_plus_new")].passed
