"""What the trainers of a network from scratch declare alike (see :mod:`benchmarks.core.protocol`):
no backbone axes, backprop, and costs read from the network they build over their epoch budget."""

from __future__ import annotations

from torch import nn

from baselines._tuning import budget_epochs
from benchmarks.core.flops import network_shape, trainer_memory_bytes


class FromScratch:
    """Base of a from-scratch trainer; a subclass defines ``name``, ``Config`` and :meth:`network`."""

    uses_backbone = False
    is_backprop = True

    @classmethod
    def label(cls, config) -> str:
        return cls.name

    @classmethod
    def network(cls, config, shape) -> nn.Module:
        """The network a cell of ``shape`` trains (weights irrelevant: costs only)."""
        raise NotImplementedError

    @classmethod
    def flops(cls, config, shape) -> tuple[dict[str, float], dict]:
        epochs = budget_epochs(config.epochs, getattr(config, "lr_grid", None), getattr(config, "tune_epochs", None))
        fwd, params = network_shape(cls.network(config, shape), shape.image_size)
        return {"train": 3.0 * fwd * shape.n_train * epochs}, {"feature_dim": 0, "k": 0, "params": params}

    @classmethod
    def memory_bytes(cls, config, shape) -> int:
        _, info = cls.flops(config, shape)
        return shape.n_images * 3 * shape.image_size**2 + trainer_memory_bytes(info["params"], shape.image_size)
