"""The method protocol: what every method under comparison declares and implements.

A method is a class with

* ``name``: its registry key, also the ``method`` column of the results;
* ``Config``: a frozen dataclass of its own hyperparameters, with defaults and units;
* ``uses_backbone``: whether the cell's backbone, cut, weights and precision axes apply to it;
* ``is_backprop``: whether it trains by backpropagation (reports draw it on that side);
* ``flops(config, shape)``: the floating-point operations of its counted phases for a cell
  of that shape (``{"extract": ..., "train": ...}``) and the sizes they came from, for
  dry-run estimates and measured rates;
* ``memory_bytes(config, shape)``: the largest live memory its arrays will need, planned before
  anything is allocated (the harness adds :data:`PROCESS_ALLOWANCE_BYTES` for the process itself);
* ``label(config)``: a short name for a configuration (``sign+gaussian k=1000``, ``linear-probe``);

  each given the method's own ``Config`` (built once from the cell's options; JSON only at the
  results boundary), never a dict;
* ``__init__(self, config)`` and ``run(self, ctx: RunContext) -> dict``: trains or fits on
  ``ctx.data.train``, selects what it selects on ``ctx.data.val`` (never on test), scores
  test once, and returns the final metrics (``train_acc``, ``val_acc``, ``test_acc`` and
  size columns) and ``test_pred``, its predicted label for each test image in the order of
  ``ctx.data.test`` (the runner keeps them beside the results for paired comparisons,
  :mod:`benchmarks.harness.predictions`, and never writes them as a column). Per-epoch rows go through
  ``ctx.emit(row)``.

The runner owns the clock: a method wraps its work in ``with ctx.clock.phase("fit_s"):``
and evaluation in ``with ctx.clock.phase("eval_s", counted=False):``; it never reads the
time itself, except ``ctx.clock.counted_s`` for cumulative training seconds.

A method that trains for epochs saves each one to ``ctx.checkpoint`` when it is given one, and
resumes from it (:mod:`benchmarks.core.checkpoint`).

This module imports no method: the registry (:mod:`benchmarks.harness.registry`) does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

if TYPE_CHECKING:  # pragma: no cover
    from benchmarks.core.data import DataBundle
    from benchmarks.core.timing import Clock


#: Images per batch where neither the cell (``--batch-size``) nor a method's recipe says otherwise.
DEFAULT_BATCH_SIZE = 128


@dataclass
class RunContext:
    """What the runner hands a method for one cell of a benchmark (values already resolved)."""

    data: "DataBundle"
    clock: "Clock"
    device: torch.device
    seed: int = 0
    # The cell's shared axes, read by the methods that use a backbone.
    backbone: str = "mobilenet_v2"
    cut: str | None = None
    weights: str = "DEFAULT"
    precision: str = "fp32"
    batch_size: int = DEFAULT_BATCH_SIZE
    progress: bool = True
    # Per-epoch rows (time-to-accuracy curves); the runner adds the common columns.
    emit: Callable[[dict], None] = field(default=lambda row: None)
    # Optional feature cache shared between cells (benchmarks.core.features.FeatureCache).
    feature_cache: Any = None
    # Where a trainer saves each epoch and resumes from (benchmarks.core.checkpoint.CellCheckpoint); None: no checkpoints.
    checkpoint: Any = None


@dataclass(frozen=True)
class CellShape:
    """The sizes of a cell that its costs depend on (images are counted, not loaded)."""

    backbone: str = ""
    cut: str | None = None
    image_size: int = 96
    precision: str = "fp32"
    n_classes: int = 10
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    device: str = "cpu"  # device type: cpu | cuda
    # the device's free memory when planned: a method whose path depends on it (random features stream past a
    # share of it) plans the path a run would take; None (planned for another machine): the smallest path
    free_bytes: int | None = None

    @property
    def n_images(self) -> int:
        """Images of all three splits together."""
        return self.n_train + self.n_val + self.n_test


#: What a cell's process holds beyond the arrays its method's ``memory_bytes`` plans: library code and kernels
#: loaded on first use (MKL, oneDNN, scikit-learn), the allocator's slack, buffers in flight. The harness adds it
#: to every plan; sized on the full-size CIFAR-10 cells, whose peaks ran 0.31-0.66 GB over their arrays' plans
#: (docs/performance.md, "The finite-k paths at full size").
PROCESS_ALLOWANCE_BYTES = 768 << 20


def recipe_batch_size(method_cls) -> int | None:
    """The batch size a method's recipe trains with when none is asked for (its ``Config``'s default:
    airbench94's 1,024, WRN-22's 512); None where the default is the cell's batch, or it has none."""
    fields = getattr(getattr(method_cls, "Config", None), "__dataclass_fields__", {})
    return fields["batch_size"].default if "batch_size" in fields else None


def planned_memory_bytes(method_cls, config: Any, shape: CellShape) -> int:
    """A cell's planned peak memory: its method's arrays, plus :data:`PROCESS_ALLOWANCE_BYTES`."""
    return int(method_cls.memory_bytes(config, shape)) + PROCESS_ALLOWANCE_BYTES


class Method(Protocol):
    """What a method class implements; the module's docstring says what each member means, and
    :func:`check_method` checks that a class has them all."""

    name: ClassVar[str]
    Config: ClassVar[type]
    uses_backbone: ClassVar[bool]
    is_backprop: ClassVar[bool]

    def __init__(self, config: Any) -> None: ...

    def run(self, ctx: RunContext) -> dict:
        """Train or fit on ``ctx.data.train``, select on ``ctx.data.val``, score test once; the final
        metrics (``train_acc``, ``val_acc``, ``test_acc``, size columns) and ``test_pred``."""

    @classmethod
    def flops(cls, config: Any, shape: CellShape) -> tuple[dict[str, float], dict]:
        """The floating-point operations of the counted phases for a cell of ``shape``
        (``{"extract": ..., "train": ...}``), and the sizes they came from."""

    @classmethod
    def memory_bytes(cls, config: Any, shape: CellShape) -> int:
        """The largest live memory in bytes a cell of ``shape`` will need, planned before anything is
        allocated."""

    @classmethod
    def label(cls, config: Any) -> str:
        """A short name for ``config`` (``sign+gaussian k=1000``, ``linear-probe``)."""


#: What a method class must have (:class:`Method`).
METHOD_MEMBERS = ("name", "Config", "uses_backbone", "is_backprop", "flops", "memory_bytes", "label", "run")


def check_method(cls, where: str) -> type:
    """``cls`` if it implements :class:`Method`, else a :class:`benchmarks.core.plugins.PluginError`
    naming what is missing (a plugin's class is checked when it is loaded)."""
    import dataclasses

    from benchmarks.core.plugins import PluginError

    missing = [a for a in METHOD_MEMBERS if not hasattr(cls, a)]
    if not isinstance(cls, type) or missing:
        raise PluginError(f"{where} is not a gradfree method: it lacks {', '.join(missing) or 'a class'} "
                          f"(see benchmarks/core/protocol.py: {', '.join(METHOD_MEMBERS)}).")
    if not dataclasses.is_dataclass(cls.Config):
        raise PluginError(f"{where}: its Config must be a dataclass (frozen, with defaults) of its settings.")
    return cls
