"""Detector and embedder loading: a torchvision architecture plus weights.

Weights are one of:
- `DEFAULT`: torchvision's pretrained weights (downloads once; needs internet);
- a local path or gs:// URI of a checkpoint: a state_dict, loaded with
  `torch.load(weights_only=True)`, or a TorchScript file, which carries code and so loads only
  with `allow_torchscript`. With `sha256` pinned, any other bytes are refused before loading;
- `demo`: the small weights committed in `image_search_assets/demo/weights/`, trained on the
  synthetic catalog by `image_search_assets/demo/train_weights.py` (they know the demo's
  drawings, nothing else);
- `random`: a seeded random initialisation, for tests and the offline demo only. It is never
  silent: the identity says so, and the assets log it and record it in metadata.

A detector knows its label names (label 0 is background), and its head has one output per
name: a checkpoint records them (`{"state_dict": ..., "labels": [...]}`; the demo detector's
are in `demo_weights.json`), torchvision's DEFAULT weights have COCO's. Categories map to them
by name (tags.py), never by position, so the config never sizes a checkpoint's head.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn

from image_search_assets.core.config import ModelConfig
from image_search_assets.core.inference.checkpoints import (
    DEMO_RECORD,
    CheckpointRefused,
    is_torchscript,
    verified_checkpoint,
)

log = logging.getLogger(__name__)

RANDOM_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    weights: str
    input_size: int
    num_classes: int | None = None  # random detectors only; a checkpoint's labels size its head
    sha256: str | None = None  # pinned checkpoint digest: other bytes are refused
    allow_torchscript: bool = False  # TorchScript runs its own code: an explicit opt-in

    @classmethod
    def from_config(cls, config: ModelConfig, num_classes: int | None = None) -> ModelSpec:
        """The one way a configured model becomes a spec: the same pins and opt-ins for the
        daily steps, the re-index, the query service and the demo."""
        return cls(
            config.arch,
            config.weights,
            config.input_size,
            num_classes,
            sha256=config.sha256,
            allow_torchscript=config.allow_torchscript,
        )


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    device: torch.device
    identity: dict[str, Any]  # what produced the vectors: recorded in manifests and metadata
    labels: tuple[str, ...] | None = None  # detectors: label i's name; None: unnamed (random)

    @property
    def is_random(self) -> bool:
        return self.identity["weights"] == "random"


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _construct(
    spec: ModelSpec, *, detector: bool, weights: str | None, num_classes: int | None = None
) -> nn.Module:
    kwargs: dict[str, Any] = {"weights": weights}
    if detector:
        kwargs["weights_backbone"] = None  # never download a backbone behind the user's back
        if weights is None and num_classes:
            kwargs["num_classes"] = num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return torchvision.models.get_model(spec.arch, **kwargs)


def known_labels(spec: ModelSpec) -> tuple[str, ...] | None:
    """A detector's label names where they are known without reading its checkpoint: the demo
    detector's record, torchvision's DEFAULT weights' meta (COCO), none for random weights."""
    if spec.weights == "demo":
        record = json.loads(DEMO_RECORD.read_text()).get("detector", {})
        if record.get("arch") != spec.arch or not record.get("labels"):
            raise ValueError(f"{DEMO_RECORD} records no detector labels for {spec.arch}")
        return tuple(record["labels"])
    if spec.weights.upper() == "DEFAULT":
        # Every torchvision weights enum has DEFAULT; its stub type does not say so.
        weights = torchvision.models.get_model_weights(spec.arch).DEFAULT  # pyright: ignore[reportAttributeAccessIssue]
        return tuple(weights.meta["categories"])
    return None


def _checkpoint_labels(uri: str, payload: Any) -> tuple[str, ...]:
    labels = payload.get("labels") if isinstance(payload, dict) else None
    if not labels or not all(isinstance(name, str) for name in labels):
        raise ValueError(
            f"detector checkpoint {uri} records no label names. Fix: save it as "
            "{'state_dict': ..., 'labels': ['background', <label 1>, ...]} so that categories "
            "map to its labels by name"
        )
    return tuple(labels)


def _require_fit(module: nn.Module, state: dict[str, Any], uri: str, arch: str, labels) -> None:
    """Names the file, what it has and what was expected, instead of PyTorch's size-mismatch
    trace: a head that does not fit means the labels recorded are not the ones trained."""
    expected = module.state_dict()
    bad = [
        (key, tuple(value.shape), tuple(expected[key].shape))
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if not bad:
        return
    key, has, want = bad[0]
    detail = f"{key} has shape {list(has)}, {list(want)} expected"
    if labels is not None and has[1:] == want[1:] and (has[0] * len(labels)) % want[0] == 0:
        outputs = has[0] * len(labels) // want[0]  # per-anchor heads repeat the class count
        detail = (
            f"its head has {outputs} label outputs, but {len(labels)} labels were expected "
            f"({', '.join(labels[:4])}{', ...' if len(labels) > 4 else ''}); {detail}"
        )
    raise ValueError(
        f"checkpoint {uri} does not fit {arch}: {detail}. Fix: record the labels the checkpoint "
        "was trained with, or choose the architecture it was trained for"
    )


def _load_module(
    spec: ModelSpec, *, detector: bool, read_bytes: Callable[[str], bytes] | None
) -> tuple[nn.Module, dict[str, Any], tuple[str, ...] | None]:
    identity: dict[str, Any] = {"arch": spec.arch, "weights": spec.weights}
    labels = known_labels(spec) if detector else None
    if spec.weights == "random":
        log.warning(
            "%s uses RANDOM weights (seed %d): for tests and demos only", spec.arch, RANDOM_SEED
        )
        identity["seed"] = RANDOM_SEED
        module = _construct(spec, detector=detector, weights=None, num_classes=spec.num_classes)
        return module, identity, None
    if spec.weights.upper() == "DEFAULT":
        return _construct(spec, detector=detector, weights="DEFAULT"), identity, labels
    uri, path, identity["sha256"] = verified_checkpoint(
        spec.arch, spec.weights, spec.sha256, read_bytes
    )
    if is_torchscript(path):
        if not spec.allow_torchscript:
            raise CheckpointRefused(
                f"checkpoint {uri} is TorchScript, which runs code of its own when loaded. Fix: "
                "save a state_dict instead, or set models.<model>.allow_torchscript: true if "
                "you trust its source"
            )
        module = torch.jit.load(str(path), map_location="cpu")
        return module, identity | {"format": "torchscript"}, labels
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else payload
    if detector and labels is None:
        labels = _checkpoint_labels(uri, payload)
    n_labels = None if labels is None else len(labels)
    module = _construct(spec, detector=detector, weights=None, num_classes=n_labels)
    # Stored fp16 to keep checkpoints small; the model runs in fp32 unless autocast says so.
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if not detector:
        # An embedder never uses its classifier, so a checkpoint trained with any head fits.
        head = _strip_classifier(module)
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    _require_fit(module, state, uri, spec.arch, labels)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:  # missing or unexpected keys: another architecture
        raise ValueError(f"checkpoint {uri} does not fit {spec.arch}: {exc}") from exc
    return module, identity | {"format": "state_dict"}, labels


def _strip_classifier(module: nn.Module) -> str:
    """Turns a torchvision classifier into a feature extractor; returns the head's name."""
    for attr in ("fc", "classifier", "heads", "head"):
        if hasattr(module, attr) and isinstance(getattr(module, attr), nn.Module):
            setattr(module, attr, nn.Identity())
            return attr
    raise ValueError(f"don't know how to strip the classifier of {type(module).__name__}")


@functools.cache
def load_detector(
    spec: ModelSpec, device: str = "auto", read_bytes: Callable[[str], bytes] | None = None
) -> LoadedModel:
    """A torchvision detector in eval mode, resized to `spec.input_size`. Cached per process."""
    module, identity, labels = _load_module(spec, detector=True, read_bytes=read_bytes)
    transform = getattr(module, "transform", None)
    if transform is not None and hasattr(transform, "min_size"):
        transform.min_size = (spec.input_size,)
        transform.max_size = spec.input_size
        if getattr(transform, "fixed_size", None) is not None:  # SSD resizes to a square
            transform.fixed_size = (spec.input_size, spec.input_size)
    dev = resolve_device(device)
    identity["input_size"] = spec.input_size
    return LoadedModel(module.eval().to(dev), dev, identity, labels)


@functools.cache
def load_embedder(
    spec: ModelSpec, device: str = "auto", read_bytes: Callable[[str], bytes] | None = None
) -> LoadedModel:
    """A torchvision backbone whose output is the feature vector. Cached per process."""
    module, identity, _ = _load_module(spec, detector=False, read_bytes=read_bytes)
    if identity.get("format") != "torchscript":
        _strip_classifier(module)
    dev = resolve_device(device)
    module = module.eval().to(dev)
    with torch.inference_mode():
        probe = torch.zeros(1, 3, spec.input_size, spec.input_size, device=dev)
        identity["dim"] = int(module(probe).flatten(1).shape[1])
    identity["input_size"] = spec.input_size
    return LoadedModel(module, dev, identity)


@functools.cache
def embedder_identity(
    spec: ModelSpec, read_bytes: Callable[[str], bytes] | None = None
) -> dict[str, Any]:
    """`load_embedder(spec).identity`, without loading weights or running the model on data.

    A step that only compares identities (detections, before its GPU work) would otherwise
    build the whole embedder: torchvision's DEFAULT weights read in, a state_dict loaded, a
    probe run. Here the checkpoint is only hashed (and its pin checked), and the vector size
    comes from the architecture built and probed on the meta device, which holds no data.
    TorchScript carries its own architecture, so it is loaded as before. Cached per process.
    """
    identity: dict[str, Any] = {"arch": spec.arch, "weights": spec.weights}
    if spec.weights == "random":
        identity["seed"] = RANDOM_SEED
    elif spec.weights.upper() != "DEFAULT":
        _, path, identity["sha256"] = verified_checkpoint(
            spec.arch, spec.weights, spec.sha256, read_bytes
        )
        if is_torchscript(path):
            return dict(load_embedder(spec, "cpu", read_bytes).identity)
        identity["format"] = "state_dict"
    with torch.device("meta"):
        module = _construct(spec, detector=False, weights=None)
        _strip_classifier(module)
        with torch.inference_mode():
            probe = torch.zeros(1, 3, spec.input_size, spec.input_size)
            identity["dim"] = int(module.eval()(probe).flatten(1).shape[1])
    identity["input_size"] = spec.input_size
    return identity
