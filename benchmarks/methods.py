"""One method protocol, one plain registry.

Every method under comparison (random features + ridge, fine-tuning, fastai
WRN-22 one-cycle, small CNN from scratch) is a class with

* ``name``: its registry key, also the ``method`` column of the results;
* ``Config``: a frozen dataclass of its own hyperparameters, with defaults;
* ``__init__(self, config)``;
* ``run(self, ctx: RunContext) -> dict``: trains/fits on ``ctx.data.train``,
  selects anything it selects on ``ctx.data.val`` (never on test), and returns
  the final metrics: ``train_acc``, ``val_acc``, ``test_acc`` and size columns
  (``model_param_count``, ``model_bytes``, ...). Per-epoch rows go through
  ``ctx.emit(row)``.

The runner owns the clock: a method wraps its work in
``with ctx.clock.phase("fit_s"):`` and evaluation in
``with ctx.clock.phase("eval_s", counted=False):``; it never reads the time
itself, except ``ctx.clock.counted_s`` for cumulative training seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

if TYPE_CHECKING:  # pragma: no cover
    from benchmarks.data import DataBundle
    from benchmarks.timing import Clock


@dataclass
class RunContext:
    """What the runner hands a method for one cell of a benchmark."""

    data: "DataBundle"
    clock: "Clock"
    device: torch.device
    seed: int = 0
    # The cell's shared axes, read by the methods that use a backbone.
    backbone: str = "mobilenet_v2"
    cut: str | None = None
    weights: str = "DEFAULT"
    precision: str = "fp32"
    batch_size: int = 128
    progress: bool = True
    # Per-epoch rows (time-to-accuracy curves); the runner adds the common columns.
    emit: Callable[[dict], None] = field(default=lambda row: None)
    # Optional on-disk feature cache shared between cells (see benchmarks.runner).
    feature_cache: Any = None


class Method(Protocol):
    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any) -> None: ...

    def run(self, ctx: RunContext) -> dict: ...


def _registry() -> dict[str, type]:
    # Imported here so that `import benchmarks.methods` stays light and a
    # missing optional dependency (fastai) only fails the method that needs it.
    from baselines.finetune import FineTune
    from baselines.small_cnn import SmallCNN
    from baselines.wrn22 import WRN22OneCycle
    from benchmarks.random_features import RandomFeatures

    return {m.name: m for m in (RandomFeatures, FineTune, WRN22OneCycle, SmallCNN)}


METHOD_NAMES = ("random-features", "finetune", "wrn22", "small_cnn")


def get_method(name: str) -> type:
    """The method class registered under ``name``."""
    registry = _registry()
    if name not in registry:
        raise ValueError(
            f"unknown method {name!r}; choose one of: {', '.join(sorted(registry))}"
        )
    return registry[name]


def make_config(method_cls: type, options: dict[str, Any]) -> Any:
    """Build ``method_cls.Config`` from ``options``, ignoring keys it does not have.

    Unknown keys are ignored so that one command line (or suite) can carry the
    options of several methods; type conversion follows the dataclass defaults.
    """
    cfg_fields = {f.name: f for f in dataclasses.fields(method_cls.Config)}
    kwargs = {k: v for k, v in options.items() if k in cfg_fields and v is not None}
    return method_cls.Config(**kwargs)
