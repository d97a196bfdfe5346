"""The detection mapper: decoded batches to each image's chosen box (naive.choose_box's rule).

SSD/SSDlite and RetinaNet run vectorised: the detector's own resize and normalisation done
batched on the device, backbone + head on one NCHW tensor, then postprocess.py over the whole
batch. Any other detector (Faster R-CNN, FCOS, TorchScript) is called as the stock module on the
batched list of device tensors; `EngineStats.detect_path` says which ran.
"""

from __future__ import annotations

import functools
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from image_search_assets.core.inference import naive
from image_search_assets.core.inference.engine import precision
from image_search_assets.core.inference.engine.fold import folded, folded_away
from image_search_assets.core.inference.engine.postprocess import (
    Candidates,
    choose,
    nms_per_image,
    retinanet_candidates,
    ssd_candidates,
)
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
from image_search_assets.core.inference.naive import ChosenBox

MIN_SIDE = 4.0  # naive.choose_box's default


def vectorised_kind(module: torch.nn.Module) -> str | None:
    """ "ssd" or "retinanet" when the vectorised path reproduces `module`, else None."""
    if not isinstance(getattr(module, "transform", None), GeneralizedRCNNTransform):
        return None
    if isinstance(module, SSD):
        return "ssd"
    if isinstance(module, RetinaNet):
        return "retinanet"
    return None


def _resize(transform: GeneralizedRCNNTransform, batch: Tensor) -> Tensor:
    """transform.resize in eval mode, for a batch of same-sized images."""
    if transform.fixed_size is not None:
        size = [transform.fixed_size[1], transform.fixed_size[0]]
        return F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
    h, w = batch.shape[-2:]
    # torchvision stores min_size as a tuple; its attribute is annotated as the int argument.
    min_size = cast(tuple[int, ...], transform.min_size)
    scale = min(min_size[-1] / min(h, w), transform.max_size / max(h, w))
    return F.interpolate(
        batch, scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )


def preprocess(
    transform: GeneralizedRCNNTransform, images: Sequence[Tensor]
) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
    """The stock transform, batched: normalise, resize, zero-pad to `size_divisible`.

    Returns buckets of (network input, positions in `images`) and each image's resized (h, w).
    Images are bucketed by padded shape, so each one gets the padding the stock model gives it
    alone; mixing shapes in one tensor would pad to the largest and change border features.
    """
    device = images[0].device
    mean = torch.as_tensor(transform.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.as_tensor(transform.image_std, device=device).view(1, 3, 1, 1)
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        by_size[(img.shape[-2], img.shape[-1])].append(i)
    sizes = torch.zeros((len(images), 2), dtype=torch.long)
    by_shape: dict[tuple[int, int], list[tuple[Tensor, list[int]]]] = defaultdict(list)
    stride = transform.size_divisible
    for idx in by_size.values():
        x = torch.stack([images[i] for i in idx]).float().div_(255)
        x = _resize(transform, (x - mean) / std)
        h, w = x.shape[-2:]
        sizes[idx] = torch.tensor([h, w])
        ph, pw = math.ceil(h / stride) * stride, math.ceil(w / stride) * stride
        by_shape[(ph, pw)].append((F.pad(x, (0, pw - w, 0, ph - h)), idx))
    buckets = []
    for parts in by_shape.values():
        x = torch.cat([p for p, _ in parts])
        x = x.contiguous(memory_format=torch.channels_last)  # why: embed.py's docstring
        idx = torch.tensor([i for _, ids in parts for i in ids], device=device)
        buckets.append((x, idx))
    return buckets, sizes.to(device)


class VectorisedDetector:
    """Backbone + head on batched tensors, anchors cached per input shape, vectorised post."""

    def __init__(self, detector: LoadedModel, dtype: torch.dtype | None, compile: bool) -> None:
        model = detector.module
        if not isinstance(model, SSD | RetinaNet):
            raise TypeError(f"no vectorised path for {type(model).__name__}: SSD or RetinaNet")
        self.model = model
        self.kind = vectorised_kind(model)
        self.device = detector.device
        self.dtype = dtype
        parts = (self.model.backbone, self.model.head)
        self.batch_norms_folded = sum(map(folded_away, parts))
        self.backbone, compiled = maybe_compiled(folded(self.model.backbone), compile)
        self.head, _ = maybe_compiled(folded(self.model.head), compile)
        self.precision = precision_name(dtype, compiled)
        self._anchors: dict[tuple[int, ...], Tensor] = {}

    def _anchors_for(self, x: Tensor, features: list[Tensor]) -> Tensor:
        # Anchors depend only on the input and feature-map shapes, the same for every image;
        # built in float32 (the stock model uses the features' dtype, bf16 under autocast).
        key = (*x.shape[-2:], *(s for f in features for s in f.shape[-2:]))
        if key not in self._anchors:
            probes = [torch.empty((1, 1, *f.shape[-2:]), device=x.device) for f in features]
            image_list = ImageList(x[:1], [(x.shape[-2], x.shape[-1])])
            self._anchors[key] = self.model.anchor_generator(image_list, probes)[0]
        return self._anchors[key]

    def candidates(self, images: Sequence[Tensor], threshold: float) -> tuple[Candidates, Tensor]:
        """Post-NMS detections at or above `threshold`, boxes in the resized frame, and each
        image's resized (h, w)."""
        buckets, sizes = preprocess(self.model.transform, images)
        parts = []
        for x, idx in buckets:
            with autocast(self.device, self.dtype):
                features = self.backbone(x)
                features = [features] if isinstance(features, Tensor) else list(features.values())
                head = self.head(features)
            anchors = self._anchors_for(x, features)
            if self.kind == "ssd":
                c = ssd_candidates(self.model, head, anchors, sizes[idx], threshold)
            else:
                per_level = [f.shape[-2] * f.shape[-1] for f in features]
                per_anchor = head["cls_logits"].shape[1] // sum(per_level)
                per_level = [n * per_anchor for n in per_level]
                c = retinanet_candidates(
                    self.model, head, anchors, per_level, sizes[idx], threshold
                )
            parts.append(Candidates(c.boxes, c.scores, c.labels, idx[c.image]))
        kept = nms_per_image(
            Candidates.cat(parts),
            num_images=len(images),
            num_labels=head["cls_logits"].shape[-1],
            iou_threshold=self.model.nms_thresh,
            per_image=self.model.detections_per_img,
        )
        return kept, sizes

    def __call__(
        self, images: Sequence[Tensor], class_ids: Sequence[int], threshold: float, min_side: float
    ) -> list[ChosenBox]:
        kept, sizes = self.candidates(images, threshold)
        original = torch.tensor([img.shape[-2:] for img in images], device=self.device)
        ratio = (original.float() / sizes.float())[kept.image]  # stock resize_boxes, float32
        boxes = kept.boxes * ratio[:, [1, 0, 1, 0]]
        return choose(boxes, kept.scores, kept.labels, kept.image, original, class_ids, min_side)


def _stock(
    detector: LoadedModel,
    images: Sequence[Tensor],
    dtype: torch.dtype | None,
    class_ids: Sequence[int],
    threshold: float,
    min_side: float,
) -> list[ChosenBox]:
    """The fallback: the stock module on the batched list, then naive.choose_box."""
    with autocast(detector.device, dtype):
        out = detector.module([img.float().div_(255) for img in images])
    if isinstance(out, tuple):  # TorchScript detectors return (losses, detections)
        out = out[1]
    chosen = []
    for img, det in zip(images, out, strict=True):
        arrays = {k: det[k].float().cpu().numpy() for k in ("boxes", "labels", "scores")}
        h, w = img.shape[-2:]
        chosen.append(
            naive.choose_box(
                arrays, w, h, class_ids=class_ids, score_threshold=threshold, min_side=min_side
            )
        )
    return chosen


def _runner(detector: LoadedModel, dtype: torch.dtype | None, compile: bool):
    """(run(images, class_ids, threshold, min_side) -> chosen boxes, detect path, precision)."""
    if vectorised_kind(detector.module) is not None:
        net = VectorisedDetector(detector, dtype, compile)
        return net, f"vectorised:{net.kind}", net.precision

    def run(images, class_ids, threshold, min_side):
        return _stock(detector, images, dtype, class_ids, threshold, min_side)

    return run, f"stock:{type(detector.module).__name__}", precision_name(dtype, False)


@torch.inference_mode()
def detect_boxes(
    detector: LoadedModel,
    blobs: Sequence[bytes],
    *,
    class_ids: Sequence[int],
    score_threshold: float,
    batch_size: int,
    min_side: float = MIN_SIDE,
    stats: EngineStats | None = None,
    prefetch: int = 1,
    amp: precision.Amp = precision.AUTO,
    compile: bool = False,
) -> list[ChosenBox]:
    """Each image's best box among `class_ids` at or above `score_threshold`, else the full
    frame, exactly as naive.detect + naive.choose_box decide (see tests/core/inference/engine).

    `stats`, when given, receives images, seconds, batch sizes and the path taken. `amp` is the
    autocast choice (see precision.py: "auto" calibrates fp16/bf16 against fp32 on CUDA);
    `compile` torch.compiles backbone and head (see runtime.maybe_compiled); `prefetch` is how
    many batches are decoded ahead in a background thread.
    """
    stats = stats if stats is not None else EngineStats()
    device = detector.device
    resolved = precision.resolve(device, amp)
    # A tuple: calibrate among these dtypes on the first batch, then run in the chosen one.
    candidates = resolved if isinstance(resolved, tuple) else None
    fixed = None if isinstance(resolved, tuple) else resolved
    run, stats.detect_path, stats.precision = _runner(detector, fixed, compile)
    stats.batch_norms_folded = getattr(run, "batch_norms_folded", 0)
    started = time.perf_counter()
    batch_size = sized_for_memory(batch_size, device)  # a bigger GPU takes bigger batches
    adaptive = AdaptiveBatch(batch_size, stats)
    chunks = [range(s, min(s + batch_size, len(blobs))) for s in range(0, len(blobs), batch_size)]
    args = (class_ids, score_threshold, min_side)

    def load(chunk: range) -> list[Tensor]:
        with timed(stats, "decode_seconds"):
            return decode_batch([blobs[i] for i in chunk], device)

    def sample_in(images: list[Tensor]):
        sample = images[: precision.CALIBRATION_IMAGES]

        def run_sample(dtype: torch.dtype | None) -> list[ChosenBox]:
            eager = _runner(detector, dtype, compile=False)[0]  # one compiled graph, not three
            parts = adaptive.map(lambda s, e: eager(sample[s:e], *args), len(sample))
            return [b for part in parts for b in part]

        return run_sample

    chosen: list[ChosenBox] = []
    for images in prefetched(chunks, load, prefetch):
        with timed(stats, "detect_seconds"):
            if candidates is not None:
                dtype = precision.calibrate(
                    detector.module,
                    sample_in(images),
                    candidates,
                    functools.partial(precision.box_agreement, threshold=score_threshold),
                    precision.DETECT_TOLERANCE,
                    stats.calibration,
                )
                run, _, stats.precision = _runner(detector, dtype, compile)
                candidates = None
            for part in adaptive.map(
                lambda s, e, imgs=images, run=run: run(imgs[s:e], *args), len(images)
            ):
                chosen.extend(part)
    stats.images += len(blobs)
    stats.wall_seconds += time.perf_counter() - started
    stats.add_device(device)
    return chosen
