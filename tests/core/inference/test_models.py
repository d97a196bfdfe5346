"""Model loading paths: random (recorded), state_dict and TorchScript checkpoints, detector
labels and head sizes; naive."""

import hashlib
import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from image_search_assets.core.failures import classify
from image_search_assets.core.inference import naive
from image_search_assets.core.inference.checkpoints import DEMO_RECORD, CheckpointRefused
from image_search_assets.core.inference.models import (
    ModelSpec,
    embedder_identity,
    known_labels,
    load_detector,
    load_embedder,
)
from image_search_assets.settings import ConfigError, parse_settings

EMBEDDER = ModelSpec("resnet18", "random", 64)


def test_random_weights_are_seeded_and_recorded():
    model = load_embedder(EMBEDDER, "cpu")
    assert model.is_random and model.identity["seed"] == 0 and model.identity["dim"] == 512
    fresh = torchvision.models.resnet18()
    torch.manual_seed(123)  # global RNG state must not matter: the loader seeds its own fork
    again = load_embedder.__wrapped__(EMBEDDER, "cpu")
    a = next(model.module.parameters())
    assert torch.equal(a, next(again.module.parameters()))
    assert not torch.equal(a, next(fresh.parameters()))


def test_state_dict_checkpoint_loads_and_is_identified_by_hash(tmp_path):
    source = torchvision.models.resnet18(num_classes=1000)
    path = tmp_path / "emb.pt"
    torch.save(source.state_dict(), path)
    model = load_embedder(ModelSpec("resnet18", str(path), 64), "cpu")
    assert model.identity["format"] == "state_dict" and len(model.identity["sha256"]) == 64
    assert torch.equal(model.module.conv1.weight, source.conv1.weight)


def test_an_fp16_checkpoint_with_any_classifier_head_loads_as_an_embedder(tmp_path):
    source = torchvision.models.resnet18(num_classes=7)  # trained for another task's classes
    path = tmp_path / "emb16.pt"
    torch.save(
        {k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}, path
    )
    model = load_embedder(ModelSpec("resnet18", str(path), 64), "cpu")
    assert model.identity["dim"] == 512  # the head is not part of the embedder
    assert model.module.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(model.module.conv1.weight, source.conv1.weight.half().float())


def test_a_checkpoint_for_another_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    with pytest.raises(ValueError, match="does not fit resnet18"):
        load_embedder(ModelSpec("resnet18", str(path), 64), "cpu")


def test_demo_weights_exist_only_for_the_architectures_they_were_trained_for():
    with pytest.raises(ValueError, match="demo/train_weights.py"):
        load_embedder(ModelSpec("resnet18", "demo", 64), "cpu")


def test_demo_weights_say_what_they_know(caplog):
    with caplog.at_level("WARNING"):
        model = load_embedder(ModelSpec("mobilenet_v3_small", "demo", 72), "cpu")  # new cache key
    assert model.identity["weights"] == "demo"
    assert "DEMO weights: trained on the synthetic sample catalog only" in caplog.text


def test_torchscript_checkpoint_loads(tmp_path):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    path = tmp_path / "emb.ts"
    torch.jit.script(net).save(str(path))
    with pytest.raises(CheckpointRefused, match="allow_torchscript"):  # code: opt-in only
        load_embedder(ModelSpec("resnet18", str(path), 32), "cpu")
    model = load_embedder(ModelSpec("resnet18", str(path), 32, allow_torchscript=True), "cpu")
    assert model.identity["format"] == "torchscript" and model.identity["dim"] == 8


def test_a_pinned_sha256_admits_only_those_bytes_and_a_mismatch_is_never_retried(tmp_path):
    path = tmp_path / "emb.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    model = load_embedder(ModelSpec("resnet18", str(path), 40, sha256=digest), "cpu")
    assert model.identity["sha256"] == digest
    wrong = "0" * 64
    with pytest.raises(CheckpointRefused, match=f"pins {wrong}") as info:
        load_embedder(ModelSpec("resnet18", str(path), 40, sha256=wrong), "cpu")
    assert classify(info.value).retryable is False
    assert f"sha256 {digest}" in classify(info.value).message
    with pytest.raises(ConfigError, match="sha256"):  # a malformed pin fails at config load
        parse_settings(
            {
                "categories": [{"name": "t"}],
                "models": {"embedder": {"arch": "resnet18", "sha256": "abc"}},
            }
        )


def test_a_pinned_torchscript_checkpoint_is_refused_by_digest_before_it_is_opened(tmp_path):
    path = tmp_path / "emb.ts"
    torch.jit.script(torch.nn.Flatten()).save(str(path))
    spec = ModelSpec("resnet18", str(path), 44, sha256="1" * 64, allow_torchscript=True)
    with pytest.raises(CheckpointRefused, match="pins"):
        load_embedder(spec, "cpu")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_embedder(ModelSpec("resnet18", str(tmp_path / "none.pt"), 32), "cpu")


def test_embeddings_are_unit_norm_and_batch_independent():
    model = load_embedder(EMBEDDER, "cpu")
    rng = np.random.default_rng(0)
    crops = [
        Image.fromarray(rng.integers(0, 255, (40 + i, 30, 3), dtype=np.uint8)) for i in range(5)
    ]
    one = naive.embed(model, crops, input_size=64, batch_size=1)
    many = naive.embed(model, crops, input_size=64, batch_size=5)
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(one, many, atol=1e-4)


def test_detector_resizes_to_input_size_and_returns_boxes_in_pixels():
    model = load_detector(
        ModelSpec("fasterrcnn_mobilenet_v3_large_320_fpn", "random", 128, 4), "cpu"
    )
    assert model.module.transform.min_size == (128,)
    img = Image.new("RGB", (200, 100), "red")
    det = naive.detect(model, [img, img], batch_size=2)
    assert len(det) == 2 and det[0]["boxes"].shape[1] == 4


def test_choose_box_prefers_the_category_and_falls_back_to_the_full_frame():
    det = {
        "boxes": np.array([[0, 0, 50, 50], [10, 10, 90, 60], [0, 0, 2, 2]], np.float32),
        "labels": np.array([1, 2, 2]),
        "scores": np.array([0.9, 0.8, 0.99], np.float32),
    }
    box = naive.choose_box(det, 100, 80, class_ids=(2,), score_threshold=0.5)
    assert (box.x1, box.y2, box.label, box.box_source) == (10, 60, 2, "detector")
    assert box.candidates == 2  # the 2-pixel box is too small to count
    none = naive.choose_box(det, 100, 80, class_ids=(3,), score_threshold=0.5)
    assert (none.x2, none.y2, none.box_source) == (100, 80, "full_image")


SSD = "ssdlite320_mobilenet_v3_large"


def _ssd_outputs(model) -> int:
    """Label outputs of an SSDlite head: its first level's channels over its anchors."""
    conv = model.module.head.classification_head.module_list[0][-1]
    return conv.out_channels // model.module.anchor_generator.num_anchors_per_location()[0]


def _ssd_checkpoint(path, n_outputs: int, labels=None):
    """A random SSDlite with `n_outputs` label outputs, saved as the platform expects."""
    state = torchvision.models.get_model(
        SSD, weights=None, weights_backbone=None, num_classes=n_outputs
    ).state_dict()
    state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state if labels is None else {"state_dict": state, "labels": labels}, path)
    return str(path)


def test_a_detector_checkpoint_sizes_its_head_by_its_recorded_labels(tmp_path):
    labels = ["background", "rings", "necklaces"]
    path = _ssd_checkpoint(tmp_path / "det.pt", 3, labels)
    spec = ModelSpec(SSD, path, 96, num_classes=14)  # a config-sized count is not used
    model = load_detector(spec, "cpu")
    assert model.labels == tuple(labels)
    assert _ssd_outputs(model) == 3


def test_a_head_that_does_not_fit_its_labels_names_file_outputs_and_expected_labels(tmp_path):
    path = _ssd_checkpoint(tmp_path / "det.pt", 5, ["background", "a", "b", "c"])
    with pytest.raises(ValueError) as info:
        load_detector(ModelSpec(SSD, path, 96), "cpu")
    message = str(info.value)
    assert f"checkpoint {path} does not fit {SSD}" in message
    assert "its head has 5 label outputs, but 4 labels were expected" in message
    assert "size mismatch" not in message  # not PyTorch's raw trace
    assert classify(info.value).retryable is False


def test_a_detector_checkpoint_without_label_names_is_refused_clearly(tmp_path):
    path = _ssd_checkpoint(tmp_path / "bare.pt", 4)
    with pytest.raises(ValueError, match=f"detector checkpoint {path} records no label names"):
        load_detector(ModelSpec(SSD, path, 96), "cpu")


def test_demo_detector_labels_are_the_recorded_names_and_fit_its_head():
    model = load_detector(ModelSpec(SSD, "demo", 96), "cpu")
    record = json.loads(DEMO_RECORD.read_text())["detector"]
    assert model.labels == tuple(record["labels"]) and model.labels[0] == "background"
    assert _ssd_outputs(model) == len(record["labels"]) == 14


def test_default_weights_carry_cocos_names_without_loading_them():
    labels = known_labels(ModelSpec("fasterrcnn_mobilenet_v3_large_320_fpn", "DEFAULT", 320))
    assert labels is not None and labels[1] == "person" and "handbag" in labels
    assert known_labels(ModelSpec(SSD, "random", 96)) is None


def test_the_embedders_identity_is_known_without_loading_it(tmp_path, monkeypatch):
    path = tmp_path / "emb.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    script = tmp_path / "emb.ts"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.AdaptiveAvgPool2d(1))
    torch.jit.script(torch.nn.Sequential(net, torch.nn.Flatten())).save(str(script))
    specs = [
        ModelSpec("resnet18", "random", 48),
        ModelSpec("mobilenet_v3_small", "demo", 64),
        ModelSpec("efficientnet_b0", "random", 64),
        ModelSpec("resnet18", str(path), 40),  # a state_dict: hashed, never loaded
        ModelSpec("resnet18", str(script), 36, allow_torchscript=True),  # loaded: its own arch
    ]
    for spec in specs:
        assert embedder_identity(spec) == load_embedder(spec, "cpu").identity, spec
    pinned = ModelSpec("resnet18", str(path), 40, sha256="2" * 64)
    with pytest.raises(CheckpointRefused, match="pins"):  # the pin holds here too
        embedder_identity(pinned)

    # DEFAULT weights: the identity needs no download (the hub would be the only source).
    def no_download(*args, **kwargs):
        raise AssertionError("the identity downloaded weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    identity = embedder_identity(ModelSpec("resnet50", "DEFAULT", 224))
    assert identity == {"arch": "resnet50", "weights": "DEFAULT", "dim": 2048, "input_size": 224}
