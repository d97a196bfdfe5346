"""Batched detection, cropping and embedding on decoded images.

Each product image yields one item of the product's own category: the best-scoring detection
whose label belongs to the category, or the whole frame when the detector finds none (recorded
as `box_source="full_image"`, so a weak detector is visible, not hidden).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from image_search_assets.core.inference.models import LoadedModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ChosenBox:
    x1: float
    y1: float
    x2: float
    y2: float
    label: int
    score: float
    box_source: str  # "detector" | "full_image"
    candidates: int  # detections above threshold of any label


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def to_float_tensor(img: Image.Image) -> torch.Tensor:
    return pil_to_tensor(img.convert("RGB")).float().div_(255.0)


@torch.inference_mode()
def detect(
    model: LoadedModel, images: Sequence[Image.Image], batch_size: int
) -> list[dict[str, np.ndarray]]:
    """Raw detector output per image: boxes (N, 4) in pixels, labels (N,), scores (N,)."""
    out: list[dict[str, np.ndarray]] = []
    for chunk in batched(images, batch_size):
        tensors = [to_float_tensor(img).to(model.device) for img in chunk]
        for det in model.module(tensors):
            out.append({k: det[k].float().cpu().numpy() for k in ("boxes", "labels", "scores")})
    return out


def choose_box(
    det: dict[str, np.ndarray],
    width: int,
    height: int,
    *,
    class_ids: Sequence[int],
    score_threshold: float,
    min_side: float = 4.0,
) -> ChosenBox:
    """The best detection of the category, else the full frame."""
    boxes, labels, scores = det["boxes"], det["labels"], det["scores"]
    keep = scores >= score_threshold
    keep &= (boxes[:, 2] - boxes[:, 0] >= min_side) & (boxes[:, 3] - boxes[:, 1] >= min_side)
    candidates = int(keep.sum())
    if class_ids:
        keep &= np.isin(labels, np.asarray(class_ids))
    if keep.any():
        i = int(np.flatnonzero(keep)[np.argmax(scores[keep])])
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        return ChosenBox(x1, y1, x2, y2, int(labels[i]), float(scores[i]), "detector", candidates)
    return ChosenBox(0.0, 0.0, float(width), float(height), -1, 0.0, "full_image", candidates)


def crop(img: Image.Image, box: ChosenBox) -> Image.Image:
    x1, y1 = max(0, int(box.x1)), max(0, int(box.y1))
    x2, y2 = min(img.width, int(round(box.x2))), min(img.height, int(round(box.y2)))
    return img.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))


def preprocess_crops(crops: Sequence[Image.Image], size: int) -> torch.Tensor:
    """Resized (bilinear, antialiased) and ImageNet-normalised NCHW batch."""
    return normalise_crops([to_float_tensor(c) for c in crops], size)


def normalise_crops(crops: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """`preprocess_crops` for float CHW tensors in [0, 1]."""
    batch = torch.stack(
        [
            F.interpolate(
                c[None],
                size=(size, size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )[0]
            for c in crops
        ]
    )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (batch - mean) / std


@torch.inference_mode()
def embed(
    model: LoadedModel, crops: Sequence[Image.Image], *, input_size: int, batch_size: int
) -> np.ndarray:
    """L2-normalised float32 feature vectors, one row per crop."""
    dim = int(model.identity["dim"])
    rows = [np.zeros((0, dim), np.float32)]
    for chunk in batched(crops, batch_size):
        feats = model.module(preprocess_crops(chunk, input_size).to(model.device)).flatten(1)
        rows.append(F.normalize(feats.float(), dim=1).cpu().numpy())
    return np.concatenate(rows)
