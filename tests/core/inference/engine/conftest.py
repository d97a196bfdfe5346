"""Tiny images and small random-weight models for the engine tests (CPU, seconds)."""

from __future__ import annotations

import io
import random

import pytest
import torch
from PIL import Image

from image_search_assets.core.inference import models
from image_search_assets.demo import synthetic

CATEGORIES = ("tops", "pants", "hats", "shoes")
CLASS_IDS = (1, 2, 3)


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def product(i: int, size: int = 128) -> Image.Image:
    rng = random.Random(i)
    category = CATEGORIES[i % len(CATEGORIES)]
    return synthetic.draw_product(category, "red", synthetic.PATTERNS[i % 4], rng, size=size)


@pytest.fixture(scope="session")
def blobs() -> list[bytes]:
    """Eight 128 px product JPEGs."""
    return [jpeg(product(i)) for i in range(8)]


@pytest.fixture(scope="session")
def mixed_blobs() -> list[bytes]:
    """Six JPEGs of three sizes and two aspect ratios, interleaved."""
    out = []
    for i in range(6):
        img = product(i, size=(96, 128, 160)[i % 3])
        if i % 2:
            img = img.resize((img.width, img.height * 3 // 4))
        out.append(jpeg(img))
    return out


def _seeded_detector(
    arch: str, size: int, score_thresh: float, logit_scale: float
) -> models.LoadedModel:
    """A fresh (uncached) random detector whose scores vary with the image.

    torchvision's random init gives near-constant outputs (activations shrink layer by
    layer), so every box would tie; Kaiming-initialised convolutions keep the signal. The
    model's own score_thresh is raised so the naive path's per-class NMS stays fast.
    """
    loaded = models.load_detector.__wrapped__(
        models.ModelSpec(arch, "random", size, num_classes=14), "cpu"
    )
    module = loaded.module
    if module.transform.fixed_size is not None:
        # What load_detector will set: the engine must follow whatever the transform holds.
        module.transform.fixed_size = (size, size)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
        heads = module.head.classification_head if hasattr(module, "head") else None
        last = getattr(heads, "module_list", None) or ([heads.cls_logits] if heads else [])
        for conv in (m[-1] if isinstance(m, torch.nn.Sequential) else m for m in last):
            conv.weight.mul_(logit_scale)
            conv.bias.zero_()  # RetinaNet's prior-probability bias would hide every box
    module.score_thresh = score_thresh
    return loaded


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    """Tiny tensors: an intra-op thread pool costs more than it gains, and on a shared 2-core
    machine its spin-waits make each call ~100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ssdlite() -> models.LoadedModel:
    return _seeded_detector("ssdlite320_mobilenet_v3_large", 160, 0.3, 0.15)


@pytest.fixture(scope="session")
def retinanet() -> models.LoadedModel:
    return _seeded_detector("retinanet_resnet50_fpn_v2", 128, 0.535, 0.05)


@pytest.fixture(scope="session")
def faster_rcnn() -> models.LoadedModel:
    return _seeded_detector("fasterrcnn_mobilenet_v3_large_320_fpn", 128, 0.05, 1.0)


@pytest.fixture(scope="session")
def embedder() -> models.LoadedModel:
    return models.load_embedder(models.ModelSpec("resnet18", "random", 64), "cpu")
