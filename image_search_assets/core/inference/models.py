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
import hashlib
import json
import logging
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

log = logging.getLogger(__name__)

RANDOM_SEED = 0
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "demo" / "weights"
# The architectures demo/train_weights.py trains, and the file each one writes.
DEMO_WEIGHTS = {
    "ssdlite320_mobilenet_v3_large": "demo_detector.pt",
    "mobilenet_v3_small": "demo_embedder.pt",
}
DEMO_RECORD = WEIGHTS_DIR / "demo_weights.json"  # how the demo weights were made, labels too


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    weights: str = "random"
    input_size: int = 224
    num_classes: int | None = None  # random detectors only; a checkpoint's labels size its head
    sha256: str | None = None  # pinned checkpoint digest: other bytes are refused
    allow_torchscript: bool = False  # TorchScript runs its own code: an explicit opt-in


class CheckpointRefused(ValueError):
    """The checkpoint must not be loaded (wrong digest, or TorchScript without opt-in).

    Permanent: a retry reads the same bytes. A ValueError, so core/failures.py never retries it.
    """


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _read_checkpoint(uri: str, read_bytes: Callable[[str], bytes] | None) -> Path:
    if uri.startswith("gs://"):
        if read_bytes is None:
            raise ValueError(f"checkpoint {uri}: reading gs:// needs a GCS reader")
        tmp = Path(tempfile.mkdtemp()) / Path(uri).name
        tmp.write_bytes(read_bytes(uri))
        return tmp
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def demo_checkpoint(arch: str) -> Path:
    """The committed demo checkpoint for `arch`; a clear error for any other architecture."""
    if arch not in DEMO_WEIGHTS:
        raise ValueError(
            f"weights 'demo' exist for {sorted(DEMO_WEIGHTS)} only, not {arch!r}: "
            "train them with image_search_assets/demo/train_weights.py or choose other weights"
        )
    return WEIGHTS_DIR / DEMO_WEIGHTS[arch]


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


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives carry their code; a saved state_dict is pickled data only."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


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
    uri = spec.weights
    if spec.weights == "demo":
        uri = str(demo_checkpoint(spec.arch))
        log.warning(
            "%s uses the DEMO weights: trained on the synthetic sample catalog only; set real "
            "weights in platform.yaml for real product photos",
            spec.arch,
        )
    path = _read_checkpoint(uri, read_bytes)
    identity["sha256"] = digest = _sha256(path)
    if spec.sha256 is not None and digest != spec.sha256.lower():
        raise CheckpointRefused(
            f"checkpoint {uri} has sha256 {digest}, but the config pins {spec.sha256}: the file "
            "changed or the pin is stale. Fix: restore the checkpoint or update models.<model>."
            "sha256 after verifying the new file; it is not retried"
        )
    if _is_torchscript(path):
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
