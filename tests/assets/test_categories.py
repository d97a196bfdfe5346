"""Categories map to detector labels by name: adding, reordering and removing categories on the
shipped config (platform.yaml with the demo weights) never breaks a day nor mislabels a box."""

import hashlib
import re

import dagster as dg
import pytest

from image_search_assets.core.index.annoy_index import load_current
from image_search_assets.core.inference.models import ModelSpec, known_labels
from image_search_assets.core.layout import asset_value_key
from image_search_assets.core.records import day_report
from image_search_assets.definitions import DAILY_JOB, build_definitions
from image_search_assets.demo.synthetic import generate_catalog
from image_search_assets.settings import DEFAULT_CONFIG, Category, ConfigError, load_settings
from image_search_assets.tags import detector_class_ids
from resources import StorageResource
from tests.conftest import START

SHIPPED = DEFAULT_CONFIG.read_text()
LINES = re.findall(r"^  - \{name: .*\}$", SHIPPED, re.M)
DEMO_LABELS = known_labels(ModelSpec("ssdlite320_mobilenet_v3_large", "demo", 320))
DAY1, DAY2 = START.isoformat(), "2026-11-02"


def test_labels_map_by_name_whatever_the_configs_order():
    assert DEMO_LABELS is not None and DEMO_LABELS[0] == "background"
    assert detector_class_ids(Category("tops"), DEMO_LABELS) == (1,)
    assert detector_class_ids(Category("glasses"), DEMO_LABELS) == (13,)
    assert detector_class_ids(Category("jewelry"), DEMO_LABELS) == ()  # no such label: any box
    assert detector_class_ids(Category("tops"), None) == ()  # an unnamed (random) detector


def test_labels_and_class_ids_select_detector_labels_explicitly():
    coco = known_labels(ModelSpec("fasterrcnn_mobilenet_v3_large_320_fpn", "DEFAULT", 320))
    bags = Category("bags", labels=("handbag", "Backpack", "suitcase"))
    assert coco is not None
    assert [coco[i] for i in detector_class_ids(bags, coco)] == ["backpack", "handbag", "suitcase"]
    assert detector_class_ids(Category("ties", labels=("tie",)), coco) == (coco.index("tie"),)
    assert detector_class_ids(Category("tops", class_ids=(3,)), DEMO_LABELS) == (3,)
    with pytest.raises(ConfigError, match=r"class_ids \[14\] are not labels .* 1\.\.13"):
        detector_class_ids(Category("tops", class_ids=(14,)), DEMO_LABELS)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    out = tmp_path_factory.mktemp("categories")
    mix = {"tops": 2, "hats": 2, "jewelry": 2}
    kinds = list(mix)
    return generate_catalog(out, kinds, START, days=2, image_size=96, mix=mix, include_bad=False)


@pytest.fixture
def configure(tmp_path, catalog, monkeypatch):
    """Writes the shipped platform.yaml with other category lines and loads it, as a user would."""
    monkeypatch.setenv("IMAGE_SEARCH_STORAGE_ROOT", str(tmp_path / "storage"))
    monkeypatch.setenv("IMAGE_SEARCH_CATALOG", str(catalog))

    def write(lines: list[str]):
        path = tmp_path / f"platform-{len(list(tmp_path.glob('platform-*')))}.yaml"
        path.write_text(SHIPPED.replace("\n".join(LINES), "\n".join(lines)))
        monkeypatch.setenv("IMAGE_SEARCH_CONFIG", str(path))
        settings = load_settings()
        assert settings.detector.weights == "demo" and settings.detector.input_size == 192
        return settings

    return write


def run_day(settings, day, instance):
    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    result = job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False)
    assert result.success, day
    return result


def detections_meta(instance, category):
    event = instance.get_latest_materialization_event(dg.AssetKey([category, "detections"]))
    return event.asset_materialization.metadata


def test_adding_a_category_runs_on_the_demo_weights_and_reordering_changes_nothing(configure):
    added = configure([*LINES, "  - {name: jewelry}"])
    store = StorageResource(root=added.storage_root).open()
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_day(added, DAY1, instance)
        logs = [r.user_message for r in instance.all_logs(result.run_id)]
        assert any(
            m.startswith("jewelry: the detector (demo) has no label named jewelry") for m in logs
        )
        assert not any(m.startswith("tops: the detector") for m in logs)
        assert detections_meta(instance, "jewelry")["class_ids"].value == "any"
        assert detections_meta(instance, "tops")["class_ids"].value == "1"
        assert detections_meta(instance, "hats")["class_ids"].value == "8"
        report = day_report(store, DAY1, added.category_names)["categories"]
        assert report["jewelry"]["indexed"] == 2 and report["jewelry"]["unaccounted"] == []
        assert len(load_current(store, "jewelry").ids) == 2
        boxes = {c: store.read_parquet(asset_value_key([c, "detections"], DAY1)) for c in LINES_OF}
        served = {c: load_current(store, c).ids for c in LINES_OF}
        # The demo detector finds its own categories' products under their own labels.
        assert set(boxes["tops"]["label"]) == {1} and set(boxes["hats"]["label"]) == {8}

        # The same lines in reverse order: the same boxes, labels and served ids.
        reordered = configure(list(reversed([*LINES, "  - {name: jewelry}"])))
        assert reordered.category_names[0] == "jewelry"
        run_day(reordered, DAY1, instance)
        assert detections_meta(instance, "tops")["class_ids"].value == "1"
        for c in LINES_OF:
            again = store.read_parquet(asset_value_key([c, "detections"], DAY1))
            assert again[BOX].equals(boxes[c][BOX]), c
            assert load_current(store, c).ids == served[c]


LINES_OF = ("tops", "hats", "jewelry")
BOX = ["product_id", "x1", "y1", "x2", "y2", "label", "box_source"]


def _files(store, prefix):
    return {key: hashlib.sha256(store.read_bytes(key)).hexdigest() for key in store.list(prefix)}


def test_removing_a_category_stops_its_assets_and_leaves_its_index_published(configure):
    shipped = configure(LINES)
    store = StorageResource(root=shipped.storage_root).open()
    with dg.DagsterInstance.ephemeral() as instance:
        run_day(shipped, DAY1, instance)
        hats = load_current(store, "hats")
        files = _files(store, "indexes/hats")
        assert len(hats.ids) == 2 and files

        removed = configure([line for line in LINES if "hats" not in line])
        keys = build_definitions(removed).resolve_asset_graph().get_all_asset_keys()
        assert not [k for k in keys if k.path[0] == "hats"]
        result = run_day(removed, DAY2, instance)
        ran = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
        assert "tops__annoy_index" in ran and not [s for s in ran if s.startswith("hats")]
    assert _files(store, "indexes/hats") == files  # untouched, still served
    assert load_current(store, "hats").ids == hats.ids
    assert load_current(store, "tops").manifest["date"] == DAY2
    rows = day_report(store, DAY2, removed.category_names)["catalog_quarantine"]
    assert {r["reason"] for r in rows} == {"unknown_category"}  # hats and jewelry rows
