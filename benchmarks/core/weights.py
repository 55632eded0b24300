"""Every backbone by name (:data:`BACKBONES`: torchvision's classification models, then those from
outside torchvision) and its weights: what ``DEFAULT`` or a weights name resolves to, where the
checkpoint lies, and the whole model with its weights loaded -- downloaded only with a notice, never
with ``GRADFREE_OFFLINE=1``, a :class:`BackboneError` naming the file and ``--weights none`` when it
cannot be had. An external backbone's module answers for its own weights."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.core import cuts as _cuts
from benchmarks.core.cuts import BackboneError, list_cuts

@dataclass(frozen=True)
class BackboneSpec:
    """A backbone: its name and its family (torchvision's module, or an external backbone's)."""

    name: str
    family: str  # torchvision's module: resnet, vision_transformer, ...; efficientnet_lite

    @property
    def builder(self) -> str:
        """The name its model is built by: the backbone's own."""
        return self.name

    @property
    def default_cut(self) -> str:
        """The cut used when none is given: the last, nearest the output."""
        return list_cuts(self.name)[-1]


class _Registry(Mapping):
    """Every backbone (torchvision's classification models, then the external ones) by name; a spec
    is made when asked for."""

    def __getitem__(self, name: str) -> BackboneSpec:
        if name not in _cuts.model_names():
            raise KeyError(name)
        return BackboneSpec(name, _cuts.family(name))

    def __iter__(self):
        return iter(_cuts.model_names())

    def __len__(self) -> int:
        return len(_cuts.model_names())


BACKBONES: Mapping[str, BackboneSpec] = _Registry()


def _spec(name: str) -> BackboneSpec:
    return BACKBONES[_cuts.check_name(name)]


# ----------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------


def _weights_enum(spec: BackboneSpec, weights: str | None):
    """torchvision's weights entry for ``weights`` (None for random weights).

    ``DEFAULT`` means the best pretrained weights to be had: torchvision's default if its
    checkpoint is cached or none is, else another checkpoint of that model already in the
    torch hub cache (offline, MobileNetV2's IMAGENET1K_V1 file is often the one present).
    """
    import torchvision.models as tvm

    if weights is None or weights.lower() == "none":
        return None
    enum = tvm.get_model_weights(spec.name)
    if weights.upper() == "DEFAULT":
        cached = [w for w in enum if _cache_path(w).exists()]
        return enum.DEFAULT if (enum.DEFAULT in cached or not cached) else cached[0]
    name = weights.rsplit(".", 1)[-1] if weights.lower().startswith(enum.__name__.lower() + ".") else weights
    found = [w for w in enum if w.name.upper() == name.upper()]  # names differ in case only by a typo
    if not found:
        raise BackboneError(f"unknown weights {weights!r} for {spec.name}; choose DEFAULT, "
                            f"none or one of {[w.name for w in enum]}")
    return found[0]


def _cache_path(w) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)


def resolve_weights(name: str, weights: str = "DEFAULT") -> str:
    """The weights name a run will load (``IMAGENET1K_V1``...) or ``none``."""
    if (ext := _cuts.external(_cuts.check_name(name))) is not None:
        return ext.resolve_weights(name, weights)
    w = _weights_enum(_spec(name), weights)
    return "none" if w is None else w.name


def weights_path(name: str, weights: str = "DEFAULT") -> Path | None:
    """Where torchvision keeps the checkpoint for ``weights`` (None for random weights)."""
    if (ext := _cuts.external(_cuts.check_name(name))) is not None:
        return ext.weights_path(name, weights)
    w = _weights_enum(_spec(name), weights)
    return None if w is None else _cache_path(w)


def weights_table(name: str) -> list[dict]:
    """Every weights entry of ``name``: its name, whether DEFAULT, its file and whether it is cached
    (an external backbone's: whether its package is installed)."""
    import torchvision.models as tvm

    if (ext := _cuts.external(name)) is not None:
        return ext.weights_table(name)
    enum = tvm.get_model_weights(name)
    return [{"weights": w.name, "default": w == enum.DEFAULT, "file": _cache_path(w),
             "cached": _cache_path(w).exists(), "params": w.meta.get("num_params"),
             "acc1": w.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")} for w in enum]


def offline() -> bool:
    """Whether ``GRADFREE_OFFLINE`` is ``1``, ``true`` or ``yes`` (any case): weights are then never downloaded."""
    return os.environ.get("GRADFREE_OFFLINE", "").lower() in ("1", "true", "yes")


def _missing(spec: BackboneSpec, w, path: Path, why: str) -> BackboneError:
    return BackboneError(
        f"pretrained {spec.name} weights {w} need the file {path.name}, which torchvision expects in "
        f"{path.parent} (the torch hub cache); {why}. Copy it there from {w.url} (or connect once to the "
        "internet), or run with --weights none for random weights (the results then say weights=none).")


def _base_model(spec: BackboneSpec, weights: str) -> nn.Module:
    import torchvision.models as tvm

    if (ext := _cuts.external(spec.name)) is not None:
        return ext.base_model(spec.name, weights)
    w = _weights_enum(spec, weights)
    if w is None:
        return tvm.get_model(spec.name, weights=None, **_cuts.RANDOM_INIT_KWARGS.get(spec.name, {}))
    path = _cache_path(w)
    if not path.exists():
        if offline():
            raise _missing(spec, w, path, "it is not there and GRADFREE_OFFLINE is set, so it is not downloaded")
        print(f"gradfree: {spec.name} weights {w} are not in {path.parent}; downloading {w.url}",
              file=sys.stderr, flush=True)
    try:
        return tvm.get_model(spec.name, weights=w)
    except Exception as err:  # URLError, HTTPError, RuntimeError from hub or a damaged file...
        if path.exists() and path.stat().st_size == 0:
            path.unlink()  # a failed download leaves an empty file behind
        brief = f"{err.__class__.__name__}: {str(err)[:160]}"
        if path.exists():
            raise BackboneError(f"pretrained {spec.name} weights {w} in {path} could not be loaded ({brief}); "
                                f"delete the file to download it again, or run with --weights none.") from err
        raise _missing(spec, w, path, f"it is not there and could not be downloaded ({brief})") from err
