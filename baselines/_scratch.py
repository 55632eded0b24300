"""What the trainers of a network from scratch declare alike (see :mod:`benchmarks.core.protocol`):
no backbone axes, backprop, and costs read from the network they build over their epoch budget."""

from __future__ import annotations

import functools

from torch import nn

from baselines._tuning import budget_epochs
from benchmarks.core.flops import activation_elements, network_shape
from benchmarks.core.protocol import DEFAULT_BATCH_SIZE, CellShape, recipe_batch_size


def batch_note(cls, config) -> str:
    """``", batch 128"`` when ``config`` trains with another batch than its published recipe's (a suite's
    ``batch_size`` setting reaches every trainer that has one: WRN-22's 512 and airbench94's 1,024 become
    the setting's unless its grid names its own), ``", the cell's batch"`` for None there; empty for the
    recipe's own and for a trainer whose default is the cell's batch (None), so that a label never names
    a published recipe that did not run."""
    default, batch = recipe_batch_size(cls), getattr(config, "batch_size", None)
    if default is None or batch == default:
        return ""
    return f", batch {batch}" if batch is not None else ", the cell's batch"


class FromScratch:
    """Base of a from-scratch trainer; a subclass defines ``name``, ``Config`` and :meth:`network`."""

    uses_backbone = False
    is_backprop = True

    @classmethod
    def label(cls, config) -> str:
        return cls.name + batch_note(cls, config)

    @classmethod
    def network(cls, config, shape) -> nn.Module:
        """The network a cell of ``shape`` trains (weights irrelevant: costs only)."""
        raise NotImplementedError

    @classmethod
    def flops(cls, config, shape) -> tuple[dict[str, float], dict]:
        epochs = budget_epochs(config.epochs, getattr(config, "lr_grid", None), getattr(config, "tune_epochs", None))
        fwd, params, _ = _network_costs(cls, config, shape.n_classes, shape.image_size)
        return {"train": 3.0 * fwd * shape.n_train * epochs}, {"feature_dim": 0, "k": 0, "params": params}

    @classmethod
    def memory_bytes(cls, config, shape) -> int:
        """The images (uint8), weights with their gradients and two optimiser moments, and a training batch's
        activations (every layer's output, fp32)."""
        _, params, activations = _network_costs(cls, config, shape.n_classes, shape.image_size)
        batch = min(getattr(config, "batch_size", None) or DEFAULT_BATCH_SIZE, max(shape.n_train, 1))
        return shape.n_images * 3 * shape.image_size**2 + params * 4 * 4 + batch * activations * 4


@functools.lru_cache(maxsize=256)
def _network_costs(cls, config, n_classes: int, image_size: int) -> tuple[int, int, int]:
    """(forward FLOPs per image, parameters, activation elements per image) of the network ``cls`` builds, from
    the meta device, once per configuration and shape (a refusal's search plans many sizes)."""
    net = cls.network(config, CellShape(n_classes=n_classes, image_size=image_size))
    fwd, params = network_shape(net, image_size)
    return fwd, params, activation_elements(net, image_size)
