"""Batch norms folded into convolutions (fold.py): same outputs, fewer layers, caller untouched.

Random-init batch norms are identities (mean 0, var 1, weight 1, bias 0), so every test here
draws their statistics and affine parameters first: folding an identity would prove nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import weakref

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from image_search_assets.core.inference.engine import EngineStats, detect_boxes, embed_crops
from image_search_assets.core.inference.engine.fold import batch_norms, folded
from tests.core.inference.engine.conftest import CLASS_IDS


def with_drawn_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `module` whose batch norms scale and shift by drawn, non-trivial amounts."""
    twin = copy.deepcopy(module).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, nn.BatchNorm2d | FrozenBatchNorm2d):
                n = m.running_mean.shape[0]
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.1)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
    return twin


def image(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(7), dtype=dtype)


def flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    values = out.values() if isinstance(out, dict) else out
    return [t for v in values for t in flat(v)]


def assert_same(a, b) -> None:
    # Relative to each output's norm: in fp32 the folded weights round differently, and ~50
    # layers of drawn scales amplify that (activations reach 1e7: seen 5e-5 relative); in
    # float64 the fold is exact (see the last test).
    for x, y in zip(flat(a), flat(b), strict=True):
        assert ((x - y).norm() / y.norm().clamp_min(1e-12)).item() < 1e-4


@pytest.mark.parametrize("part", ["backbone", "head"])
def test_ssdlite_folds_every_norm_and_keeps_its_outputs(ssdlite, part):
    # The backbone traces whole; the head iterates over its list input, so fx cannot trace it
    # and fold.py folds it child by child.
    model = with_drawn_norms(ssdlite.module)
    x = image(2, 3, 160, 160)
    with torch.no_grad():
        features = list(model.backbone(x).values())
        given = x if part == "backbone" else features
        module = getattr(model, part)
        before = batch_norms(module)
        assert before > 0
        twin = folded(module)
        assert batch_norms(twin) == 0
        assert_same(twin(given), module(given))
    assert batch_norms(module) == before  # the caller's module is not touched


def test_retinanet_backbone_folds(retinanet):
    backbone = with_drawn_norms(retinanet.module).backbone
    x = image(1, 3, 128, 128)
    with torch.no_grad():
        assert_same(folded(backbone)(x), backbone(x))
    assert batch_norms(folded(backbone)) == 0 < batch_norms(backbone)


def test_frozen_batch_norms_of_pretrained_backbones_fold():
    # torchvision builds detection backbones with FrozenBatchNorm2d when weights are given.
    net = with_drawn_norms(torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d), seed=1)
    x = image(2, 3, 64, 64)
    with torch.no_grad():
        assert_same(folded(net)(x), net(x))
    assert batch_norms(folded(net)) == 0


class TwoUsers(nn.Module):
    """The convolution's output also feeds a residual add: folding the norm would change it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_a_norm_whose_convolution_has_other_users_stays():
    net = with_drawn_norms(TwoUsers())
    x = image(1, 3, 8, 8)
    with torch.no_grad():
        assert_same(folded(net)(x), net(x))
    assert batch_norms(folded(net)) == 1


def test_engine_folds_and_reports_it(ssdlite, embedder, blobs):
    det = dataclasses.replace(ssdlite, module=with_drawn_norms(ssdlite.module))
    emb = dataclasses.replace(embedder, module=with_drawn_norms(embedder.module))
    det_stats, emb_stats = EngineStats(), EngineStats()
    boxes = detect_boxes(
        det, blobs, class_ids=CLASS_IDS, score_threshold=0.3, batch_size=4, stats=det_stats
    )
    embed_crops(emb, blobs, boxes, input_size=64, batch_size=4, stats=emb_stats)
    want = batch_norms(det.module.backbone) + batch_norms(det.module.head)
    assert det_stats.as_metadata()["batch_norms_folded"] == want > 0
    assert emb_stats.as_metadata()["batch_norms_folded"] == batch_norms(emb.module) > 0


def test_folding_is_exact_arithmetic_in_float64(ssdlite):
    backbone = with_drawn_norms(ssdlite.module).backbone.double()
    x = image(1, 3, 160, 160, dtype=torch.float64)
    with torch.no_grad():
        for got, want in zip(flat(folded(backbone)(x)), flat(backbone(x)), strict=True):
            assert ((got - want).norm() / want.norm()).item() < 1e-12


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_modules_without_batch_norms_are_not_copied(retinanet):
    head = retinanet.module.head  # RetinaNet v2's head normalises with GroupNorm
    assert batch_norms(head) == 0 and folded(head) is head
    scripted = torch.jit.script(torchvision.models.resnet18().eval())  # opaque to fx and to us
    assert folded(scripted) is scripted


def test_the_cache_lets_go_of_modules_the_caller_dropped():
    with_norm = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    without = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4))
    refs = [weakref.ref(m) for m in (with_norm, without)]
    assert folded(with_norm) is not with_norm and folded(without) is without
    del with_norm, without
    gc.collect()
    assert [r() for r in refs] == [None, None]
