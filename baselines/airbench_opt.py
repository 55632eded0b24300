"""airbench94's optimiser, learning-rate schedule and weight averaging (Lookahead), as published
(see :mod:`baselines.airbench` for the recipe and its source)."""

from __future__ import annotations

import torch
from torch import nn

from baselines.airbench_net import AirbenchNet


def make_optimizer(model: AirbenchNet, cfg, batch_size: int) -> torch.optim.SGD:
    """Nesterov SGD with airbench's decoupled learning rate and weight decay (``cfg``: an
    :class:`baselines.airbench.AirbenchConfig`; see that module's docstring)."""
    kilostep_scale = 1024 * (1 + 1 / (1 - cfg.momentum))
    lr = cfg.lr / kilostep_scale  # per-example step, for a loss summed over the batch
    wd = cfg.weight_decay * batch_size / kilostep_scale  # decay per step, independent of the lr
    lr_biases = lr * cfg.bias_scaler
    bn_ids = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    params = [p for p in model.parameters() if p.requires_grad]
    biases = [p for p in params if id(p) in bn_ids]
    others = [p for p in params if id(p) not in bn_ids]
    # torch's SGD multiplies weight_decay by the group's lr: divide it back out.
    return torch.optim.SGD([dict(params=biases, lr=lr_biases, weight_decay=wd / lr_biases),
                            dict(params=others, lr=lr, weight_decay=wd / lr)],
                           momentum=cfg.momentum, nesterov=True)


def lr_factor(step: int, total_steps: int, warmup_frac: float = 0.23, start: float = 0.2,
              end: float = 0.07) -> float:
    """The learning rate's multiplier at ``step``: linear start -> 1 over the warm-up, then 1 -> end."""
    warmup = int(total_steps * warmup_frac)
    if step < warmup:
        frac = step / warmup
        return start * (1 - frac) + frac
    frac = (step - warmup) / max(total_steps - warmup, 1)
    return (1 - frac) + end * frac


class Lookahead:
    """airbench's weight averaging: an average of every floating-point entry of the state dict."""

    def __init__(self, model: nn.Module):
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        """``avg = decay * avg + (1 - decay) * current``, then the model takes the average."""
        for key, value in model.state_dict().items():
            if value.dtype in (torch.float16, torch.float32):
                avg = self.average[key]
                avg.lerp_(value, 1 - decay)
                value.copy_(avg)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The average itself (not a copy), for a checkpoint."""
        return self.average

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a saved :meth:`state_dict` into the average, entry by entry."""
        for key, value in state.items():
            self.average[key].copy_(value)


def lookahead_decay(step: int, total_steps: int) -> float:
    """The average's decay at ``step`` of ``total_steps``: ``0.95**5 * (step / total_steps)**3``, from 0 to
    about 0.77."""
    return 0.95**5 * (step / total_steps) ** 3
