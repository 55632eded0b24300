"""Sizes and forward FLOPs of networks, counted once on the meta device (no weights allocated).

Used by each method's ``flops`` and ``memory_bytes`` (see :mod:`benchmarks.core.protocol`):
a cut backbone's feature dimension, forward FLOPs per image and parameter count, and the
same for any ``nn.Module`` a trainer builds.
"""

from __future__ import annotations

import copy
import functools

import torch

from benchmarks.core.backbones import truncate
from benchmarks.core.cuts import skeleton

#: Bytes per element of each extraction precision.
PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 4}  # int8 features come out dequantized


def _meta_forward(model: torch.nn.Module, image_size: int) -> tuple[tuple[int, ...], int]:
    """(output shape without the batch, FLOPs) of one (3, image_size, image_size) image through ``model``,
    one forward on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta").eval()  # eval: BatchNorm takes a batch of one
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = meta(torch.zeros(1, 3, image_size, image_size, device="meta"))
    return tuple(int(s) for s in y.shape[1:]), int(counter.get_total_flops())


def forward_flops(model: torch.nn.Module, image_size: int) -> int:
    """FLOPs of one (3, image_size, image_size) image through ``model``."""
    return _meta_forward(model, image_size)[1]


@functools.lru_cache(maxsize=None)
def backbone_shape(backbone: str, cut: str | None, image_size: int, pool_size: int = 0) -> tuple[int, int, int]:
    """(feature_dim, forward FLOPs per image, parameter count) of the backbone cut at ``cut``: its output
    shape and FLOPs from one forward on the meta device (a suite of many cuts plans each once)."""
    ext = truncate(backbone, skeleton(backbone), cut)  # meta weights: eval mode, nothing allocated
    (c, h, w), fwd = _meta_forward(ext, image_size)
    dim = c * pool_size * pool_size if pool_size else c * h * w
    return dim, fwd, ext.param_count


def network_shape(net: torch.nn.Module, image_size: int) -> tuple[int, int]:
    """(forward FLOPs per image, parameter count) of a network a trainer builds."""
    return forward_flops(net, image_size), sum(p.numel() for p in net.parameters())


def _leaf_outputs(model: torch.nn.Module, groups, image_size: int) -> tuple[tuple[int, int], ...]:
    """Per group of ``groups`` (submodules of ``model``, already on the meta device): (the elements of every leaf
    module's output, the largest one's), per image, from one forward of ``model`` on the meta device."""
    counts = [[0, 0] for _ in groups]

    def counter(i):
        def count(module, inputs, output):
            if isinstance(output, torch.Tensor):
                counts[i][0] += output[0].numel()
                counts[i][1] = max(counts[i][1], output[0].numel())
        return count

    hooks = [m.register_forward_hook(counter(i)) for i, group in enumerate(groups)
             for m in group.modules() if not any(m.children())]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return tuple((total, largest) for total, largest in counts)


def activation_elements(net: torch.nn.Module, image_size: int) -> int:
    """Elements a training forward keeps per image for the backward pass: the outputs of every leaf module,
    counted on the meta device (an upper bound where a module works in place)."""
    meta = copy.deepcopy(net).to("meta").eval()
    return _leaf_outputs(meta, [meta], image_size)[0][0]


@functools.lru_cache(maxsize=None)
def block_activations(backbone: str, cut: str | None, image_size: int) -> tuple[tuple[int, int], ...]:
    """Per kept block of ``backbone`` cut at ``cut``, in forward order: (the elements of every leaf module's
    output, the largest one's), per image, from one forward on the meta device."""
    ext = copy.deepcopy(truncate(backbone, skeleton(backbone), cut)).to("meta").eval()
    return _leaf_outputs(ext, list(ext.blocks), image_size)
