"""The one config file: validation and environment overrides."""

import pytest
import yaml

from image_search_assets.settings import DEFAULT_CONFIG, ConfigError, load_settings, parse_settings


def test_env_overrides_storage_and_catalog(monkeypatch):
    monkeypatch.setenv("IMAGE_SEARCH_STORAGE_ROOT", "gs://bucket/prefix")
    monkeypatch.setenv("IMAGE_SEARCH_CATALOG", "gs://bucket/catalog.parquet")
    s = load_settings()
    assert (s.storage_root, s.catalog) == ("gs://bucket/prefix", "gs://bucket/catalog.parquet")


def test_adding_a_category_is_one_line():
    s = parse_settings({"categories": [{"name": "tops", "gpus": 4}, {"name": "ties"}]})
    assert [(c.name, c.gpus, c.gpu_type) for c in s.categories] == [
        ("tops", 4, "nvidia-tesla-t4"),
        ("ties", 1, "nvidia-tesla-t4"),
    ]


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"categories": [{"name": "tops"}, {"name": "tops"}]}, "duplicate"),
        ({"categories": [{"name": "Tops"}]}, "lower-case"),
        ({"categories": [{"name": "tops", "gpus": 0}]}, "gpus"),
        ({"categories": []}, "at least one"),
        ({"categories": [{"name": "t"}], "partitions": {"timezone": "Mars/Base"}}, "partitions"),
        ({"categories": [{"name": "t"}], "planning": {"slack": 0.9}}, "planning: needs"),
        (
            {
                "categories": [{"name": "t"}],
                "models": {"embedder": {"arch": "r", "precision": "int8"}},
            },
            "models.embedder: precision 'int8'",
        ),
        ({"categories": [{"name": "t"}], "planning": {"gpus_per_day": 3}}, "planning"),
    ],
)
def test_bad_config_is_a_clear_error(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_settings(raw)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_the_compile_cache_setting_reaches_the_engine_of_every_gpu_step(monkeypatch, tmp_path):
    from image_search_assets.core.inference.engine import compile_cache
    from resources.models import ModelsResource

    monkeypatch.setenv("IMAGE_SEARCH_COMPILE_CACHE", str(tmp_path / "cc"))
    models = ModelsResource.from_settings(load_settings())
    assert models.compile_cache == str(tmp_path / "cc")
    try:
        models.embedder_replicas(gpus=1)  # what the embeddings step builds first
        active = compile_cache.active()
        assert active is not None and active.location == str(tmp_path / "cc")
        models.model_copy(update={"compile_cache": None}).detector_replicas(2, gpus=1)
        assert compile_cache.active() is None  # off again: no cache configured
    finally:
        compile_cache.configure(None)


def test_gpu_options_default_and_per_category():
    s = parse_settings(
        {
            "default_gpu_options": [{"type": "nvidia-l4", "spot": True}, "nvidia-tesla-t4"],
            "categories": [
                {"name": "tops", "gpus": 4},
                {"name": "ties", "gpu_type": "nvidia-tesla-t4"},
                {
                    "name": "hats",
                    "gpu_options": ["nvidia-l4", {"type": "nvidia-l4", "flex_start": True}],
                },
            ],
        }
    )
    tops, ties, hats = s.categories
    assert [(o.type, o.spot) for o in tops.gpu_options] == [
        ("nvidia-l4", True),
        ("nvidia-tesla-t4", False),
    ]
    assert tops.gpu_type == "nvidia-l4"  # the most preferred option's
    assert (ties.gpu_type, ties.gpu_options) == ("nvidia-tesla-t4", ())  # a single type
    assert [o.slug for o in hats.gpu_options] == ["l4", "l4-flex"]
    with pytest.raises(ConfigError, match="not both"):
        parse_settings(
            {
                "categories": [
                    {"name": "ties", "gpu_type": "nvidia-l4", "gpu_options": ["nvidia-l4"]}
                ]
            }
        )


def test_the_resources_hold_the_parsed_sections_whole_through_dagsters_config():
    """Each resource carries its platform.yaml section as parsed: what the steps read back from
    Dagster's resource config is the same typed object, and no resource field has a default of
    its own to drift from the section's."""
    import dagster as dg

    from image_search_assets.core.inference.models import ModelSpec
    from resources import ImageFetchResource, ModelsResource

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["models"]["detector"]["sha256"] = "a" * 64  # a set optional and an unset one
    raw["fetch"] = {"schemes": ["https", "gs"], "gcs_prefixes": ["bucket/images/"], "workers": 3}
    s = parse_settings(raw)
    resources = {
        "models": ModelsResource.from_settings(s),
        "fetcher": ImageFetchResource.from_config(s.fetch, "project"),
    }
    with dg.build_resources(resources) as built:
        assert (built.models.detector, built.models.embedder) == (s.detector, s.embedder)
        assert built.fetcher.fetch == s.fetch and built.fetcher.fetch.workers == 3
        assert built.fetcher.policy().rules.schemes == ("https", "gs")
    assert ModelSpec.from_config(s.detector, 14).sha256 == "a" * 64
    for resource in (ModelsResource, ImageFetchResource):
        assert all(f.is_required() for f in resource.model_fields.values()), resource


def test_planning_defaults_are_the_throughput_models():
    from image_search_assets.core.planning.gpu_plan import SLACK, ThroughputModel

    planning = parse_settings({"categories": [{"name": "tops"}]}).planning
    assert planning.model() == ThroughputModel() and planning.slack == SLACK
    with pytest.raises(ConfigError, match="slack >= 1"):
        parse_settings({"categories": [{"name": "tops"}], "planning": {"slack": 0.5}})
