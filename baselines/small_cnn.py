"""A small CNN trained from scratch, in the style of the PyTorch CIFAR-10 tutorial.

The tutorial's network is conv(3->6, 5) + ReLU + max-pool, conv(6->16, 5) +
ReLU + max-pool, then fully connected layers of 120, 84 and 10 units, trained
with SGD (lr 0.01... 0.001, momentum 0.9) and cross-entropy. Here the width
(``width`` channels in the first block, doubling per block) and the number of
conv blocks (``depth``) are configurable, and two changes let it take any image
size and depth: the 5x5 convolutions are padded to keep the size (the tutorial
does not pad, which only fits 32 px and two blocks), and an adaptive average
pool brings the last map to ``pooled_size x pooled_size`` before the fully
connected layers, so their size does not grow with the image.

The epoch with the best validation accuracy is kept (see baselines._training).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from baselines import _training, _tuning
from baselines._scratch import FromScratch


class SmallCNNNet(nn.Module):
    """``depth`` x [conv k x k (same padding) + ReLU + max-pool 2], adaptive avg-pool, fc, fc, fc.

    ``forward(x: (n, 3, H, W)) -> (n, n_classes)`` logits.
    """

    def __init__(self, n_classes: int, width: int = 32, depth: int = 2, kernel_size: int = 5,
                 fc1: int = 120, fc2: int = 84, pooled_size: int = 4):
        super().__init__()
        layers, channels = [], 3
        for i in range(depth):
            out = width * 2**i
            layers += [nn.Conv2d(channels, out, kernel_size, padding=kernel_size // 2),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * pooled_size**2, fc1), nn.ReLU(inplace=True),
            nn.Linear(fc1, fc2), nn.ReLU(inplace=True),
            nn.Linear(fc2, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


@dataclass(frozen=True)
class SmallCNNConfig:
    """The settings of :class:`SmallCNN`, each explained beside it; an unknown optimizer or schedule, or a
    value out of range, is a ``ValueError``."""

    width: int = 32  # channels of the first conv block; block i has width * 2**i (tutorial: 6, 16)
    depth: int = 2  # conv blocks, each halving the image (tutorial: 2)
    kernel_size: int = 5
    fc1: int = 120  # units of the first fully connected layer (tutorial)
    fc2: int = 84
    pooled_size: int = 4  # side of the map fed to fc1, after adaptive average pooling
    epochs: int = 20
    batch_size: int | None = None  # images per step; None = the cell's batch size (ctx.batch_size)
    optimizer: str = "sgd"  # sgd (momentum, Nesterov) | adam | adamw
    lr: float = 0.01  # (max) learning rate
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    schedule: str = "none"  # none (constant lr, as the tutorial) | onecycle
    augment: bool = False  # random crop (pad image_size/8, reflect) + horizontal flip
    label_smoothing: float = 0.0
    amp: bool = True  # fp16 autocast + GradScaler on CUDA; ignored on CPU
    channels_last: bool = False
    patience: int | None = None  # early stopping: stop after this many epochs without a better val_acc
    lr_grid: tuple[float, ...] | None = None  # learning rates tried, the best on validation kept (cost: tune_s)
    tune_epochs: int | None = None  # with lr_grid: try each rate for this many epochs, then train the best in full
    eval_every: int = 1  # validation accuracy every this many epochs and after the last (best epoch, patience)

    def __post_init__(self):
        _tuning.check_epochs(self.epochs)
        _tuning.check_ranges(self)
        if self.depth < 1 or self.width < 1:
            raise ValueError(f"depth and width must be >= 1, got depth={self.depth}, width={self.width}")
        _tuning.check_budget(self)
        if self.optimizer not in _training.OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of: "
                             f"{', '.join(_training.OPTIMIZERS)}")
        if self.schedule not in _training.SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of: "
                             f"{', '.join(_training.SCHEDULES)}")


class SmallCNN(FromScratch):
    """Tutorial-style CNN from scratch: SGD + momentum, cross-entropy, best epoch on validation."""

    name = "small_cnn"
    Config = SmallCNNConfig

    @classmethod
    def network(cls, config: SmallCNNConfig, shape) -> nn.Module:
        """The network a cell of ``shape`` trains (:meth:`build`)."""
        return cls(config).build(shape.n_classes, shape.image_size)

    def __init__(self, config: SmallCNNConfig | None = None):
        self.config = config or SmallCNNConfig()

    def build(self, n_classes: int, image_size: int) -> SmallCNNNet:
        """A new :class:`SmallCNNNet` for ``n_classes``; a ``ValueError`` when ``depth`` halvings leave nothing of
        ``image_size`` px."""
        cfg = self.config
        if image_size // 2**cfg.depth < 1:
            raise ValueError(
                f"depth {cfg.depth} halves {image_size} px images {cfg.depth} times, to nothing; "
                f"use depth <= {max(1, image_size.bit_length() - 1)} or larger images."
            )
        return SmallCNNNet(n_classes, cfg.width, cfg.depth, cfg.kernel_size, cfg.fc1, cfg.fc2,
                           cfg.pooled_size)

    def run(self, ctx) -> dict:
        model, out = _tuning.train_or_tune(ctx, self.config, self._train)
        self.model_ = model
        return out

    def _train(self, ctx, lr: float, score_test: bool = False, epochs: int | None = None):
        """One training at learning rate ``lr`` for ``epochs`` (the Config's by default):
        (model at its best epoch, metrics, feed)."""
        cfg = self.config
        epochs = epochs or cfg.epochs
        _training.seed_everything(ctx.seed)
        data = ctx.data
        model = self.build(data.n_classes, data.image_size).to(ctx.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        mean, std = data.channel_stats()
        feed = _training.Feed(
            mean=mean, std=std, device=torch.device(ctx.device), batch_size=cfg.batch_size or ctx.batch_size,
            amp_dtype=_training.amp_dtype(ctx.device, cfg.amp),  # fp16; the precision axis is the backbone's
            pad_px=_training.default_pad_px(data.image_size) if cfg.augment else 0,
            flip=cfg.augment, channels_last=cfg.channels_last,
        )
        out = _training.fit_recipe(model, ctx, cfg, feed, lr, epochs, desc=self.name, score_test=score_test)
        return model, out, feed
