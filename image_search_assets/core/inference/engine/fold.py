"""Batch norms folded into the convolutions before them, in the engine's own copy of a model.

In eval mode a BatchNorm is a per-channel scale and shift, so it can be folded into the weights
and bias of the Conv2d whose output it normalises: one kernel instead of two, and one pass over
the activations fewer. Unfolded batch norms are a large share of an eager detector pass's CUDA
time (benchmarks/results/gpu/profiles.txt).

torch.fx traces the module and folds only a Conv2d -> BatchNorm2d pair whose convolution output
has no other user (torch.fx.experimental.optimization.fuse). A module fx cannot trace (a head
that iterates over its list input) is folded child by child instead. torchvision's
FrozenBatchNorm2d (detection backbones built for pretrained weights) becomes the BatchNorm2d it
is equivalent to first. The naive path and the caller's module are never touched: folding works
on a deep copy, made once per module.
"""

from __future__ import annotations

import copy
import threading
import weakref

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse
from torch.fx.proxy import TraceError
from torchvision.ops.misc import FrozenBatchNorm2d

_FOLDED: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()
_FOLDING = threading.Lock()  # workers sharing a module must share one copy (and its compile)


def folded(module: nn.Module) -> nn.Module:
    """An eval-mode copy of `module` with its batch norms folded; cached per module. The copy
    holds its own weights: on a GPU, one more replica of the network's parameters. A module
    without batch norms (a GroupNorm head, a TorchScript model) is returned itself, uncopied."""
    if batch_norms(module) == 0:
        return module  # not cached: as its own value, a weak key would never be let go
    with _FOLDING:
        if module not in _FOLDED:
            twin = copy.deepcopy(module).eval()
            _thaw_frozen_norms(twin)
            _FOLDED[module] = _fold(twin)
        return _FOLDED[module]


def folded_away(module: nn.Module) -> int:
    """How many of `module`'s batch norms its folded copy no longer runs."""
    return batch_norms(module) - batch_norms(folded(module))


def batch_norms(module: nn.Module) -> int:
    """How many BatchNorm2d / FrozenBatchNorm2d layers run in `module`."""
    return sum(isinstance(m, nn.BatchNorm2d | FrozenBatchNorm2d) for m in module.modules())


def _fold(module: nn.Module) -> nn.Module:
    if batch_norms(module) == 0:
        return module
    try:
        return fuse(module, inplace=True)
    except (TraceError, TypeError, NotImplementedError, AttributeError):
        pass  # not traceable as a whole: fold what each child holds
    for name, child in module.named_children():
        setattr(module, name, _fold(child))
    return module


def _thaw_frozen_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, FrozenBatchNorm2d):
            setattr(module, name, _as_batch_norm(child))
        else:
            _thaw_frozen_norms(child)


def _as_batch_norm(frozen: FrozenBatchNorm2d) -> nn.BatchNorm2d:
    # Buffers (all four in FrozenBatchNorm2d, the running stats in BatchNorm2d): get_buffer
    # returns them typed as tensors, where attribute access is typed Tensor | Module.
    weight = frozen.get_buffer("weight")
    norm = nn.BatchNorm2d(weight.shape[0], eps=frozen.eps, device=weight.device)
    with torch.no_grad():
        norm.weight.copy_(weight)
        norm.bias.copy_(frozen.get_buffer("bias"))
        norm.get_buffer("running_mean").copy_(frozen.get_buffer("running_mean"))
        norm.get_buffer("running_var").copy_(frozen.get_buffer("running_var"))
    return norm.eval()
