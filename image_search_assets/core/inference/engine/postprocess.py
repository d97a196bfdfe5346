"""Vectorised detector post-processing: the stock SSD and RetinaNet semantics over a whole batch.

Stock torchvision loops over images (and, for SSD, over classes) in Python. Here each step is one
tensor operation across the batch: per-(image, class) or per-(image, level) top-k, box decoding of
the survivors only, one NMS over the batch, then the per-image detection cap; `choose` then picks
each image's box as inference.choose_box does, for all images at once.

Candidates below `threshold` (the caller's score threshold) are dropped before NMS. That changes
nothing the caller sees: a box can only be suppressed by a higher-scoring box, top-k keeps the
highest scores, and the per-image cap keeps the highest, so every detection at or above the
threshold is the same with or without the lower ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms

from image_search_assets.core.inference.naive import ChosenBox


@dataclass(frozen=True)
class Candidates:
    """Detections of a batch as flat tensors; `image` is each row's position in the batch."""

    boxes: Tensor  # (M, 4) x1 y1 x2 y2 in the resized (network input) frame, float32
    scores: Tensor  # (M,)
    labels: Tensor  # (M,) int64
    image: Tensor  # (M,) int64

    @staticmethod
    def cat(parts: list[Candidates]) -> Candidates:
        return Candidates(*(torch.cat([getattr(p, f) for p in parts]) for f in _FIELDS))

    def take(self, idx: Tensor) -> Candidates:
        return Candidates(*(getattr(self, f)[idx] for f in _FIELDS))


_FIELDS = ("boxes", "scores", "labels", "image")


def _clip(boxes: Tensor, sizes: Tensor) -> Tensor:
    """clip_boxes_to_image with a size per row: sizes (M, 2) as (height, width)."""
    zero = torch.zeros_like(boxes[:, 0])
    h, w = sizes[:, 0].to(boxes.dtype), sizes[:, 1].to(boxes.dtype)
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack(
        (
            torch.clamp(x1, zero, w),
            torch.clamp(y1, zero, h),
            torch.clamp(x2, zero, w),
            torch.clamp(y2, zero, h),
        ),
        dim=1,
    )


def _decode(model, regression: Tensor, anchors: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    # BoxCoder.decode_single is row-wise, so decoding only the survivors gives the same boxes.
    return model.box_coder.decode_single(regression[rows, cols].float(), anchors[cols])


def ssd_candidates(
    model, head: dict[str, Tensor], anchors: Tensor, sizes: Tensor, threshold: float
) -> Candidates:
    """SSD.postprocess_detections before NMS: softmax, background dropped, per-(image, class)
    top-k of scores above model.score_thresh. `sizes` (n, 2): each image's resized (h, w)."""
    scores = F.softmax(head["cls_logits"].float(), dim=-1)[:, :, 1:].transpose(1, 2)
    k = min(model.topk_candidates, scores.shape[-1])
    top, anchor_idx = scores.topk(k, dim=-1)  # (n, classes - 1, k)
    keep = (top > model.score_thresh) & (top >= threshold)
    img, cls, j = keep.nonzero(as_tuple=True)
    cols = anchor_idx[img, cls, j]
    boxes = _clip(_decode(model, head["bbox_regression"], anchors, img, cols), sizes[img])
    return Candidates(boxes, top[img, cls, j], cls + 1, img)


def retinanet_candidates(
    model,
    head: dict[str, Tensor],
    anchors: Tensor,
    anchors_per_level: list[int],
    sizes: Tensor,
    threshold: float,
) -> Candidates:
    """RetinaNet.postprocess_detections before NMS: sigmoid, per-(image, level) top-k over
    anchors x classes of scores above model.score_thresh."""
    parts = []
    offset = 0
    logits = head["cls_logits"].split(anchors_per_level, dim=1)
    for level_logits, count in zip(logits, anchors_per_level, strict=True):
        num_classes = level_logits.shape[-1]
        scores = torch.sigmoid(level_logits.float()).flatten(1)  # (n, anchors * classes)
        top, flat_idx = scores.topk(min(model.topk_candidates, scores.shape[1]), dim=1)
        keep = (top > model.score_thresh) & (top >= threshold)
        img, j = keep.nonzero(as_tuple=True)
        flat = flat_idx[img, j]
        cols = torch.div(flat, num_classes, rounding_mode="floor") + offset
        boxes = _decode(model, head["bbox_regression"], anchors, img, cols)
        parts.append(Candidates(_clip(boxes, sizes[img]), top[img, j], flat % num_classes, img))
        offset += count
    return Candidates.cat(parts)


def nms_per_image(
    cands: Candidates, *, num_images: int, num_labels: int, iou_threshold: float, per_image: int
) -> Candidates:
    """What the stock model's per-image batched_nms + `[:detections_per_img]` keep, for all
    images at once: one batched_nms with idxs = image * num_labels + label; rows ordered by
    image, then by decreasing score.

    In float64: batched_nms separates groups by adding idxs * (max coordinate + 1), and with
    ~10^5 groups a float32 offset would round coordinates to 1/8 pixel and change IoUs.
    """
    if cands.boxes.numel() == 0:
        return cands
    groups = cands.image * num_labels + cands.labels
    keep = batched_nms(cands.boxes.double(), cands.scores.double(), groups, iou_threshold)
    keep = keep[torch.sort(cands.image[keep], stable=True).indices]
    img = cands.image[keep]
    counts = torch.bincount(img, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(keep), device=keep.device) - starts[img]
    return cands.take(keep[rank < per_image])


def choose(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    image: Tensor,
    original: Tensor,
    class_ids: Sequence[int],
    min_side: float,
) -> list[ChosenBox]:
    """inference.choose_box for every image at once. Rows must be grouped by image and sorted
    by decreasing score within it, so an image's first eligible row is its best; every row is
    already at or above the score threshold. `original`: each image's (h, w)."""
    n, device = len(original), boxes.device
    wide = (boxes[:, 2] - boxes[:, 0] >= min_side) & (boxes[:, 3] - boxes[:, 1] >= min_side)
    eligible = wide
    if class_ids:
        eligible = wide & torch.isin(labels, torch.tensor(list(class_ids), device=device))
    rows = torch.arange(len(boxes), device=device)
    first = torch.full((n,), len(boxes), device=device)
    first = first.scatter_reduce(0, image[eligible], rows[eligible], "amin")
    # Padded with one "nothing found" row so images without a pick gather something valid.
    pad = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, -1.0]], device=device)
    table = torch.cat([torch.cat([boxes, scores[:, None], labels[:, None].float()], 1), pad])
    summary = torch.cat(
        [
            table[first],
            (first < len(boxes)).float()[:, None],
            torch.bincount(image[wide], minlength=n).float()[:, None],
            original.float(),
        ],
        dim=1,
    )
    out = []
    for x1, y1, x2, y2, score, label, found, count, h, w in summary.cpu().tolist():  # one sync
        if found:
            out.append(ChosenBox(x1, y1, x2, y2, int(label), score, "detector", int(count)))
        else:
            out.append(ChosenBox(0.0, 0.0, w, h, -1, 0.0, "full_image", int(count)))
    return out
