"""A training that diverged: its loss or weights became NaN or infinite, so its model is garbage.

The trainers check after every epoch (:func:`non_finite`) and stop at once with
:class:`TrainingDiverged`: the runner records the cell as failed with that reason, never ``ok``.
A learning-rate grid (``baselines._tuning.tune``) leaves a diverged value out of its choice,
and raises :class:`GridDiverged` when every value diverged.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TrainingDiverged(RuntimeError):
    """A training whose loss or weights became NaN or infinite: its model is garbage, not a result.

    ``epoch`` (1-based) is the epoch after which it was found, ``what`` what was not finite
    (``"loss nan"``, ``"loss 3.2e+17, but fc.bias is inf"``), ``lr`` the learning rate when known.
    """

    def __init__(self, epoch: int, what: str, lr: float | None = None):
        self.epoch, self.what, self.lr = epoch, what, lr
        at = f" (learning rate {lr:g})" if lr is not None else ""
        super().__init__(f"training diverged at epoch {epoch}{at}: {what}; lower the learning rate")

    def at_lr(self, lr: float) -> "TrainingDiverged":
        """The same divergence, its message naming the learning rate."""
        return TrainingDiverged(self.epoch, self.what, lr)


class GridDiverged(RuntimeError):
    """Every value of a learning-rate grid diverged (``diverged``: value -> reason): nothing to choose."""

    def __init__(self, diverged: dict[str, str]):
        self.diverged = diverged
        tried = "; ".join(f"lr {float(v):g} at {why}" for v, why in diverged.items())
        super().__init__(f"training diverged at every learning rate of the grid ({tried}); "
                         "lower the learning rates of lr_grid")


def non_finite(train_loss: float, model: nn.Module) -> str | None:
    """What is not finite after an epoch: the mean training loss, else the first weight or buffer
    (BatchNorm statistics) holding a NaN or an infinity; None when everything is finite."""
    if not math.isfinite(train_loss):
        return f"loss {train_loss}"
    tensors = [(k, t) for k, t in model.state_dict().items() if t.is_floating_point()]
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):  # one sync
        return None
    name, t = next((k, t) for k, t in tensors if not bool(torch.isfinite(t).all()))
    return f"loss {train_loss:.4g}, but {name} is {'nan' if bool(t.isnan().any()) else 'inf'}"
