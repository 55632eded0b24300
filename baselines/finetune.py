"""Fine-tuning the pretrained backbone at the cell's cut: the backprop twin of random features.

The backbone is the same truncated network the gradient-free pipeline
extracts features from (``ctx.backbone``, ``ctx.cut``, ``ctx.weights``), kept
in fp32 (``ctx.precision`` only picks the autocast dtype on CUDA: bf16 for
``bf16``, fp16 otherwise). A new linear head reads either the globally
average-pooled maps (``head="pool"``) or the flattened maps
(``head="flatten"``, what the ridge of random features sees).

* ``mode="linear-probe"``: the backbone is frozen and stays in eval mode
  (BatchNorm statistics fixed); only the head trains.
* ``mode="unfreeze"``: the last ``unfreeze_blocks`` blocks of the cut network
  (``Extractor.blocks``) train as well; the frozen blocks stay in eval mode.

Defaults are a fair modern recipe: SGD with Nesterov momentum 0.9, one-cycle
learning rate (max ``lr``) stepped per batch, weight decay 5e-4, random crop
(reflect padding of image_size/8) + horizontal flip, mixed precision on CUDA.
The epoch with the best validation accuracy is kept and scored on test.

Presets are named dicts of Config overrides (:data:`PRESETS`), applied by
:func:`apply_preset` when the method is built; ``seed-paper`` is the seed
paper's baseline: Adam at lr 1e-6 for 5 epochs of batch 32, no augmentation,
no schedule, no weight decay, the whole network up to the cut trained
(the seeds fine-tuned the cut network end to end, not a linear probe).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from baselines import _training, _tuning
from benchmarks.core.flops import backbone_shape, block_activations
from benchmarks.core.protocol import DEFAULT_BATCH_SIZE

MODES = ("linear-probe", "unfreeze")
HEADS = ("pool", "flatten")

#: Named Config overrides. A preset wins over the values it names.
PRESETS: dict[str, dict] = {
    "seed-paper": {
        "mode": "unfreeze",
        "unfreeze_blocks": 10_000,  # every block before the cut
        "optimizer": "adam",
        "lr": 1e-6,
        "epochs": 5,
        "batch_size": 32,
        "augment": False,
        "schedule": "none",
        "weight_decay": 0.0,
        "label_smoothing": 0.0,
    },
}


@dataclass(frozen=True)
class FineTuneConfig:
    """The settings of :class:`FineTune`, each explained beside it (a ``preset`` overrides some:
    :func:`apply_preset`); an unknown choice or preset, or a value out of range, is a ``ValueError``."""

    mode: str = "linear-probe"  # linear-probe (frozen backbone) | unfreeze (last unfreeze_blocks train)
    unfreeze_blocks: int = 2  # unfreeze mode: trainable blocks at the end of the cut network (more = all)
    head: str = "pool"  # pool (global average pool -> linear) | flatten (all C*h*w features -> linear)
    epochs: int = 10
    batch_size: int | None = None  # images per step; None = the cell's batch size (ctx.batch_size)
    optimizer: str = "sgd"  # sgd (momentum, Nesterov) | adam (L2) | adamw (decoupled decay)
    lr: float = 0.01  # max learning rate of the one-cycle schedule (the constant lr without one)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle (per batch, 25 % warm-up) | none
    augment: bool = True  # random crop (pad image_size/8, reflect) + horizontal flip
    label_smoothing: float = 0.0
    amp: bool = True  # autocast (+ GradScaler for fp16) on CUDA; ignored on CPU
    preset: str | None = None  # a key of PRESETS, e.g. "seed-paper"
    patience: int | None = None  # early stopping: stop after this many epochs without a better val_acc
    lr_grid: tuple[float, ...] | None = None  # learning rates tried, the best on validation kept (cost: tune_s)
    tune_epochs: int | None = None  # with lr_grid: try each rate for this many epochs, then train the best in full
    eval_every: int = 1  # validation accuracy every this many epochs and after the last (best epoch, patience)

    def __post_init__(self):
        checks = (("mode", MODES), ("head", HEADS), ("optimizer", _training.OPTIMIZERS),
                  ("schedule", _training.SCHEDULES))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; "
                                 f"choose one of: {', '.join(allowed)}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of: {', '.join(PRESETS)}")
        _tuning.check_epochs(self.epochs)
        _tuning.check_budget(self)
        _tuning.check_ranges(self)
        if self.unfreeze_blocks < 0:
            raise ValueError(f"unfreeze_blocks must be >= 0, got {self.unfreeze_blocks}")


def apply_preset(config: FineTuneConfig) -> FineTuneConfig:
    """``config`` with its preset's overrides applied (unchanged without a preset; idempotent).

    A preset fixes the values it names: a non-default value it overrides is
    reported with a warning, not kept.
    """
    if config.preset is None:
        return config
    overrides = PRESETS[config.preset]
    defaults = FineTuneConfig()
    lost = {k: getattr(config, k) for k, v in overrides.items()
            if getattr(config, k) not in (v, getattr(defaults, k))}
    if lost:
        warnings.warn(f"preset {config.preset!r} overrides {lost} with "
                      f"{ {k: overrides[k] for k in lost} }; drop the preset to keep them.", stacklevel=2)
    return dataclasses.replace(config, **overrides)


class FineTuneNet(nn.Module):
    """Truncated backbone + linear head: ``forward(x: (n, 3, H, W)) -> (n, n_classes)``.

    ``train()`` keeps every frozen part of the backbone in eval mode, so only
    the trainable blocks update their BatchNorm statistics.
    """

    def __init__(self, extractor: nn.Module, n_classes: int, image_size: int, head: str = "pool",
                 trainable_blocks: int = 0):
        super().__init__()
        self.extractor = extractor
        channels, h, w = extractor.out_shape(image_size)
        self.pool = nn.AdaptiveAvgPool2d(1) if head == "pool" else nn.Identity()
        self.feature_dim = channels if head == "pool" else channels * h * w
        self.head = nn.Linear(self.feature_dim, n_classes)
        extractor.requires_grad_(False)
        blocks = extractor.blocks
        # A plain list, not a ModuleList: the blocks are already registered under extractor.
        self._trainable = blocks[len(blocks) - trainable_blocks:] if trainable_blocks else []
        for block in self._trainable:
            block.requires_grad_(True)
        self.train()

    @property
    def unfrozen_blocks(self) -> int:
        """Number of backbone blocks that train."""
        return len(self._trainable)

    def train(self, mode: bool = True) -> "FineTuneNet":
        """Set training (or eval) mode, but keep the frozen part of the backbone in eval mode; returns ``self``."""
        super().train(mode)
        self.extractor.eval()
        for block in self._trainable:
            block.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.extractor(x)), 1))


class FineTune:
    """Linear probe or partial fine-tuning of the backbone at the cut; best epoch on validation."""

    name = "finetune"
    Config = FineTuneConfig
    uses_backbone = True
    is_backprop = True

    @classmethod
    def label(cls, config: FineTuneConfig) -> str:
        if config.preset:  # what the preset runs, whatever the recorded options say
            return f"{PRESETS.get(config.preset, {}).get('mode', config.mode)} ({config.preset})"
        return config.mode

    @classmethod
    def flops(cls, config: FineTuneConfig, shape) -> tuple[dict[str, float], dict]:
        with warnings.catch_warnings():  # an estimate: the run itself warns about a preset's overrides
            warnings.simplefilter("ignore")
            cfg = apply_preset(config)
        dim, fwd, params = backbone_shape(shape.backbone, shape.cut, shape.image_size)
        factor = 1.0 if cfg.mode == "linear-probe" else 3.0  # forward only / forward + backward
        epochs = _tuning.budget_epochs(cfg.epochs, cfg.lr_grid, cfg.tune_epochs)
        return ({"train": factor * fwd * shape.n_train * epochs},
                {"feature_dim": dim, "k": 0, "params": params})

    @classmethod
    def memory_bytes(cls, config: FineTuneConfig, shape) -> int:
        """The images (uint8), the weights with gradients and two optimiser moments, and a batch's activations:
        every layer output of the blocks that train (kept for the backward pass), and of the frozen ones, which
        run without gradients, the largest layer's input and output (so the evaluation batches too)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = apply_preset(config)
        _, info = cls.flops(config, shape)
        blocks = block_activations(shape.backbone, shape.cut, shape.image_size)
        n = 0 if cfg.mode == "linear-probe" else min(cfg.unfreeze_blocks, len(blocks))
        trained = sum(total for total, _ in blocks[len(blocks) - n:]) if n else 0
        passing = 2 * max((largest for _, largest in blocks), default=0)
        batch = cfg.batch_size or DEFAULT_BATCH_SIZE
        return (shape.n_images * 3 * shape.image_size**2 + info["params"] * 4 * 4
                + batch * (trained + passing) * 4)

    def __init__(self, config: FineTuneConfig | None = None):
        self.config = apply_preset(config or FineTuneConfig())

    def build(self, ctx) -> FineTuneNet:
        """The :class:`FineTuneNet` of the cell's backbone at its cut (fp32 weights, on ``ctx.device``); in
        ``unfreeze`` mode its last ``unfreeze_blocks`` blocks (at most all) train."""
        from benchmarks.core.backbones import build_backbone

        cfg = self.config
        # fp32 master weights: ctx.precision becomes the autocast dtype, not the weights' dtype.
        ext = build_backbone(name=ctx.backbone, cut=ctx.cut, weights=ctx.weights, precision="fp32",
                             device=ctx.device)
        n_blocks = cfg.unfreeze_blocks if cfg.mode == "unfreeze" else 0
        n_blocks = min(n_blocks, len(ext.blocks))
        return FineTuneNet(ext, ctx.data.n_classes, ctx.data.image_size, cfg.head, n_blocks).to(ctx.device)

    def run(self, ctx) -> dict:
        model, out = _tuning.train_or_tune(ctx, self.config, self._train)
        self.model_ = model
        ext = model.extractor
        return {**out, "feature_dim": model.feature_dim,
                "backbone_param_count": ext.param_count, "backbone_bytes": ext.param_bytes,
                "unfrozen_blocks": model.unfrozen_blocks,
                "backbone_weights": ext.weights}  # the resolved weights name (DEFAULT -> IMAGENET1K_...)

    def _train(self, ctx, lr: float, score_test: bool = False, epochs: int | None = None):
        """One training at learning rate ``lr`` for ``epochs`` (the Config's by default):
        (model at its best epoch, metrics, feed)."""
        cfg = self.config
        epochs = epochs or cfg.epochs
        _training.seed_everything(ctx.seed)
        data = ctx.data
        device = torch.device(ctx.device)
        model = self.build(ctx)
        feed = _training.Feed(
            mean=tuple(data.mean), std=tuple(data.std), device=device,
            batch_size=cfg.batch_size or ctx.batch_size,
            amp_dtype=_training.amp_dtype(device, cfg.amp, ctx.precision),
            pad_px=_training.default_pad_px(data.image_size) if cfg.augment else 0,
            flip=cfg.augment,
            channels_last=device.type == "cuda",  # build_backbone lays the backbone out channels-last on CUDA
        )
        out = _training.fit_recipe(model, ctx, cfg, feed, lr, epochs, desc=self.name, score_test=score_test)
        return model, out, feed
