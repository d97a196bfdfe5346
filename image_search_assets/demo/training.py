"""Trains the demo's small detector and embedder on freshly drawn synthetic products.

The demo cannot download pretrained weights, and random weights give meaningless neighbours.
These models learn the synthetic catalog's world only (13 silhouettes x 8 colours x 4
patterns): the detector finds the product and names its category; the embedder is trained to
tell every (category, colour, pattern) combination apart, so near vectors share all three.
Every sample is drawn anew from a seeded RNG, so there is no dataset to store.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from image_search_assets.core.inference.naive import normalise_crops, to_float_tensor
from image_search_assets.demo.synthetic import PALETTE, PATTERNS, draw_product_with_box

COLOURS = tuple(PALETTE)


@dataclass(frozen=True)
class Sample:
    image: torch.Tensor  # float CHW in [0, 1]
    box: tuple[int, int, int, int]
    category: int
    colour: int
    pattern: int

    @property
    def combo(self) -> int:
        """One class id per (category, colour, pattern)."""
        return (self.category * len(COLOURS) + self.colour) * len(PATTERNS) + self.pattern


def draw_sample(rng: random.Random, categories: Sequence[str], size: int) -> Sample:
    cat, colour, pattern = (rng.randrange(n) for n in (len(categories), 8, 4))
    img, box = draw_product_with_box(categories[cat], COLOURS[colour], PATTERNS[pattern], rng, size)
    return Sample(to_float_tensor(img), box, cat, colour, pattern)


def jittered_crop(sample: Sample, rng: random.Random) -> torch.Tensor:
    """The product cut out the way a detector would: its box, loosened or tightened a little,
    or (one time in four) the whole frame, the platform's fallback when nothing is detected."""
    _, h, w = sample.image.shape
    if rng.random() < 0.25:
        return sample.image
    x1, y1, x2, y2 = sample.box
    bw, bh = x2 - x1, y2 - y1
    dx1, dx2 = (int(bw * rng.uniform(-0.08, 0.12)) for _ in range(2))
    dy1, dy2 = (int(bh * rng.uniform(-0.08, 0.12)) for _ in range(2))
    left, top = max(0, x1 - dx1), max(0, y1 - dy1)
    right, bottom = min(w, max(left + 4, x2 + dx2)), min(h, max(top + 4, y2 + dy2))
    return sample.image[:, top:bottom, left:right]


def build_embedder(arch: str, n_classes: int) -> nn.Module:
    return torchvision.models.get_model(arch, weights=None, num_classes=n_classes)


def build_detector(arch: str, n_categories: int, input_size: int) -> nn.Module:
    model = torchvision.models.get_model(
        arch, weights=None, weights_backbone=None, num_classes=n_categories + 1
    )
    transform = model.transform
    if not isinstance(transform, GeneralizedRCNNTransform):
        raise TypeError(f"{arch}: expected a torchvision detector with a GeneralizedRCNNTransform")
    # torchvision annotates min_size as its int argument, but the transform holds a tuple.
    transform.min_size = (input_size,)  # pyright: ignore[reportAttributeAccessIssue]
    transform.max_size = input_size
    if getattr(transform, "fixed_size", None) is not None:
        transform.fixed_size = (input_size, input_size)
    for m in model.modules():
        # SSDlite's BatchNorm momentum (0.03) suits long schedules; a short one needs the
        # running statistics to catch up faster.
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model


def _schedule(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=optimizer.param_groups[0]["lr"], total_steps=steps, pct_start=0.15
    )


def train_embedder(
    categories: Sequence[str],
    *,
    arch: str = "mobilenet_v3_small",
    steps: int,
    batch: int,
    input_size: int,
    image_size: int = 256,
    lr: float = 3e-3,
    device: torch.device,
    seed: int = 0,
    log: Callable[[str], object] = print,
) -> dict[str, torch.Tensor]:
    """A feature extractor whose classifier head tells every combination apart."""
    rng = random.Random(f"embedder:{seed}")
    torch.manual_seed(seed)
    n_classes = len(categories) * len(COLOURS) * len(PATTERNS)
    model = build_embedder(arch, n_classes).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule, started = _schedule(optimizer, steps), time.monotonic()
    for step in range(1, steps + 1):
        samples = [draw_sample(rng, categories, image_size) for _ in range(batch)]
        crops = [jittered_crop(s, rng) for s in samples]
        x = normalise_crops(crops, input_size).to(device)
        y = torch.tensor([s.combo for s in samples], device=device)
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 25 == 0 or step == steps:
            log(
                f"embedder step {step}/{steps} loss {loss.item():.3f} "
                f"({time.monotonic() - started:.0f} s)"
            )
    return model.eval().state_dict()


def train_detector(
    categories: Sequence[str],
    *,
    arch: str = "ssdlite320_mobilenet_v3_large",
    steps: int,
    batch: int,
    input_size: int,
    image_size: int = 256,
    lr: float = 2e-3,
    device: torch.device,
    seed: int = 0,
    log: Callable[[str], object] = print,
) -> dict[str, torch.Tensor]:
    """A detector whose label i+1 is the i-th category (the platform's default mapping)."""
    rng = random.Random(f"detector:{seed}")
    torch.manual_seed(seed)
    model = build_detector(arch, len(categories), input_size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule, started = _schedule(optimizer, steps), time.monotonic()
    for step in range(1, steps + 1):
        samples = [draw_sample(rng, categories, image_size) for _ in range(batch)]
        images = [s.image.to(device) for s in samples]
        targets = [
            {
                "boxes": torch.tensor([s.box], dtype=torch.float32, device=device),
                "labels": torch.tensor([s.category + 1], device=device),
            }
            for s in samples
        ]
        losses = model(images, targets)
        loss = sum(losses.values())
        if not isinstance(loss, torch.Tensor):
            raise RuntimeError(f"{arch} returned no losses in train mode")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        if step % 25 == 0 or step == steps:
            parts = " ".join(f"{k} {v.item():.3f}" for k, v in losses.items())
            log(f"detector step {step}/{steps} {parts} ({time.monotonic() - started:.0f} s)")
    return model.eval().state_dict()


def to_fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors stored in fp16 (half the bytes); integer buffers kept as they are."""
    return {
        k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in state.items()
    }
