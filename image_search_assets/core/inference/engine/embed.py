"""The embedding mapper: each image's box cropped on the device, embedded, L2-normalised.

Boxes are quantised to whole pixels exactly as inference.crop does, then every crop is resized
at once by batched matmuls with the antialiased bilinear weights F.interpolate uses. Not
roi_align: its bilinear samples averaged per output cell are a box filter, not the naive path's
triangle filter, and at a 2x downscale embeddings drift to cosine 0.9989 (measured); here the
difference is float rounding only.

Network inputs are channels_last on every device: tensor cores want NHWC on the GPU, and on
this CPU oneDNN runs the SSDlite backbone 1.6-1.9x, ResNet-50 1.3-1.4x and MobileNetV3-small
1.2-1.35x faster that way (fp32, 2 threads; `python benchmarks/channels_last_cpu.py`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from image_search_assets.core.inference.engine import precision
from image_search_assets.core.inference.engine.fold import folded, folded_away
from image_search_assets.core.inference.engine.reader import decode_batch, prefetched
from image_search_assets.core.inference.engine.runtime import (
    AdaptiveBatch,
    EngineStats,
    autocast,
    maybe_compiled,
    precision_name,
    sized_for_memory,
    timed,
)
from image_search_assets.core.inference.models import LoadedModel
from image_search_assets.core.inference.naive import IMAGENET_MEAN, IMAGENET_STD, ChosenBox


def crop_box(box: ChosenBox, width: int, height: int) -> tuple[int, int, int, int]:
    """inference.crop's pixel rectangle: x1, y1 truncated, x2, y2 rounded, at least 1 px."""
    x1, y1 = max(0, int(box.x1)), max(0, int(box.y1))
    x2, y2 = min(width, int(round(box.x2))), min(height, int(round(box.y2)))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def _resample_weights(start: Tensor, length: Tensor, size: int, extent: int) -> Tensor:
    """(N, size, extent) weights of an antialiased bilinear resize of [start, start + length)
    to `size` samples: the triangle filter F.interpolate(antialias=True) uses, widened by the
    scale when downsampling, each row normalised to sum 1."""
    scale = (length.float() / size)[:, None, None]
    centre = scale * (torch.arange(size, device=start.device).float()[None, :, None] + 0.5)
    pos = torch.arange(extent, device=start.device).float()[None, None, :] - start[:, None, None]
    weights = (1 - ((pos - centre + 0.5) / scale.clamp(min=1)).abs()).clamp(min=0)
    weights = weights * ((pos >= 0) & (pos < length[:, None, None]))
    return weights / weights.sum(dim=2, keepdim=True)


def crops(images: Sequence[Tensor], boxes: Sequence[ChosenBox], size: int) -> Tensor:
    """ImageNet-normalised (N, 3, size, size) crops, one per image, on the images' device.

    Two batched matmuls (rows, then columns) with per-crop resampling weights: the same
    antialiased resize as the naive path, for all crops at once.
    """
    device = images[0].device
    h = max(img.shape[-2] for img in images)
    w = max(img.shape[-1] for img in images)
    # Zero padding is never read: every weight outside its crop is zero.
    batch = torch.zeros((len(images), 3, h, w), device=device)
    for i, img in enumerate(images):
        batch[i, :, : img.shape[-2], : img.shape[-1]] = img
    rects = torch.tensor(
        [crop_box(b, img.shape[-1], img.shape[-2]) for img, b in zip(images, boxes, strict=True)],
        device=device,
    )
    cols = _resample_weights(rects[:, 0], rects[:, 2] - rects[:, 0], size, w)
    rows = _resample_weights(rects[:, 1], rects[:, 3] - rects[:, 1], size, h)
    out = rows[:, None] @ (batch @ cols.transpose(1, 2)[:, None])
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (out.div_(255) - mean) / std


@torch.inference_mode()
def embed_crops(
    embedder: LoadedModel,
    blobs: Sequence[bytes],
    boxes: Sequence[ChosenBox],
    *,
    input_size: int,
    batch_size: int,
    stats: EngineStats | None = None,
    prefetch: int = 1,
    amp: precision.Amp = precision.AUTO,
    compile: bool = False,
) -> np.ndarray:
    """float32 (n, dim) L2-normalised features of each image's box, in input order.

    Matches inference.crop + preprocess_crops + embed to cosine >= 0.999 in fp32 (and in the
    dtype "auto" picks: see precision.py). `stats`, `amp`, `compile` and `prefetch` are as in
    detect_boxes.
    """
    if len(blobs) != len(boxes):
        raise ValueError(f"{len(blobs)} images but {len(boxes)} boxes")
    stats = stats if stats is not None else EngineStats()
    device = embedder.device
    resolved = precision.resolve(device, amp)
    # A tuple: calibrate among these dtypes on the first batch, then run in the chosen one.
    candidates = resolved if isinstance(resolved, tuple) else None
    dtype = None if isinstance(resolved, tuple) else resolved
    eager = folded(embedder.module)
    stats.batch_norms_folded = folded_away(embedder.module)
    net, compiled = maybe_compiled(eager, compile)
    stats.precision = precision_name(dtype, compiled)

    def forward(images: Sequence[Tensor], chunk_boxes: Sequence[ChosenBox], dtype, net) -> Tensor:
        x = crops(images, chunk_boxes, input_size)
        x = x.contiguous(memory_format=torch.channels_last)  # on every device: see above
        with autocast(device, dtype):
            feats = net(x)
        return F.normalize(feats.flatten(1).float(), dim=1)

    def embed(images, chunk_boxes, dtype, net) -> np.ndarray:
        parts = adaptive.map(
            lambda s, e: forward(images[s:e], chunk_boxes[s:e], dtype, net), len(images)
        )
        return np.concatenate([p.cpu().numpy() for p in parts])

    started = time.perf_counter()
    batch_size = sized_for_memory(batch_size, device)  # a bigger GPU takes bigger batches
    adaptive = AdaptiveBatch(batch_size, stats)
    chunks = [range(s, min(s + batch_size, len(blobs))) for s in range(0, len(blobs), batch_size)]

    def load(chunk: range) -> tuple[range, list[Tensor]]:
        with timed(stats, "decode_seconds"):
            return chunk, decode_batch([blobs[i] for i in chunk], device)

    rows = [np.zeros((0, int(embedder.identity["dim"])), np.float32)]
    for chunk, images in prefetched(chunks, load, prefetch):
        chunk_boxes = [boxes[i] for i in chunk]
        with timed(stats, "embed_seconds"):
            if candidates is not None:
                k = precision.CALIBRATION_IMAGES
                sample = images[:k], chunk_boxes[:k]
                dtype = precision.calibrate(
                    embedder.module,
                    lambda dt, sample=sample: embed(*sample, dt, eager),
                    candidates,
                    precision.cosine_agreement,
                    precision.EMBED_TOLERANCE,
                    stats.calibration,
                )
                stats.precision = precision_name(dtype, compiled)
                candidates = None
            rows.append(embed(images, chunk_boxes, dtype, net))
    stats.images += len(blobs)
    stats.wall_seconds += time.perf_counter() - started
    stats.add_device(device)
    return np.concatenate(rows)
