"""airbench94: the CIFAR-10 speed-record recipe (Keller Jordan, arXiv 2404.00498), on the runner's clock.

The published ``airbench94`` reaches 94 % test accuracy on CIFAR-10 in 3.83 s on one A100
(3.29 s compiled). Its ingredients, rebuilt here from the paper and the reference code
(``KellerJordan/cifar10-airbench``, the ``airbench`` package's ``train94``):

* **network** (:class:`AirbenchNet`): a frozen 2x2 *whitening* convolution (3 -> 24
  channels, no padding, trainable bias for the first 3 epochs only) + GELU, then three
  blocks of conv 3x3 -> max-pool 2 -> BatchNorm -> GELU -> conv 3x3 -> BatchNorm -> GELU
  of 64, 256 and 256 channels, a global max-pool, a bias-free linear layer and logits
  scaled by 1/9. Convolutions have no bias; each is initialised as PyTorch does, then its
  first ``in_channels`` filters are set to the identity (Dirac). BatchNorm: eps 1e-12,
  running statistics kept as ``0.6 * old + 0.4 * new``, scale frozen at 1, bias trained.
* **whitening**: the first layer's 12 filters are the eigenvectors of the (uncentred)
  covariance of the 2x2 patches of 5,000 training images, scaled by
  ``1 / sqrt(eigenvalue + 5e-4)``, and their negatives (24 filters).
* **optimiser** (:func:`make_optimizer`): Nesterov SGD, momentum 0.85, on the *sum* of
  label-smoothed (0.2) cross-entropy over the batch; learning rate 11.5 and weight decay
  0.0153 "per 1024 examples" in the decoupled form of the paper (divided by
  ``1024 * (1 + 1 / (1 - momentum))``); BatchNorm biases get 64x the learning rate (not the
  decay). Schedule (:func:`lr_factor`): linear from 0.2 to 1 over the first 23 % of the
  steps, then linear down to 0.07. Batches of 1,024; 9.9 epochs (the last one cut short).
* **Lookahead** (:class:`Lookahead`): every 5 steps the weights (and BatchNorm statistics)
  are pulled into an average, ``avg = d * avg + (1 - d) * w`` with
  ``d = 0.95**5 * (step / total)**3``, and copied back; the last step copies the average.
* **augmentation**: random translation by up to 2 px (reflect padding) and *alternating
  flip*: each image gets a random flip in the first epoch and the opposite one in every
  odd epoch (``alt_flip = false``: a fresh random flip each epoch).
* **test-time augmentation** (``tta_level`` 2): logits averaged over the image and its
  mirror (weight 1/2) and, mirrored too, the image shifted one pixel up-left and one
  down-right (1/4 each).

Precision as published: on CUDA the weights are fp16 (BatchNorm kept in fp32) and inputs
are fp16, channels-last; on CPU everything is fp32.

Under gradfree's contract (see :mod:`baselines._training`): one warm-up step, then the
state put back, in ``warmup_s``; the whitening and each epoch in ``train_s`` (counted);
the validation split scored after each epoch without TTA (airbench's own per-epoch log)
in ``eval_s``, with an epoch row; then the final model (no early stopping: the schedule
and the average end at the last step) is scored with TTA on validation and test (test
once), and without TTA on the training split (a diagnostic, 6x cheaper). A loss or weight
that stops being finite ends the training after that epoch (``TrainingDiverged``: the cell
fails).
With ``ctx.checkpoint``, each epoch is saved (model, optimizer, schedule, Lookahead average,
step, random states, clock) and a stopped cell resumes after its last saved epoch
(:mod:`benchmarks.core.checkpoint`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines import _training, _tuning
from baselines._divergence import TrainingDiverged, non_finite
from baselines._scratch import FromScratch, batch_note
from baselines.airbench_net import AirbenchNet, whitening_filters
from baselines.airbench_opt import Lookahead, lookahead_decay, lr_factor, make_optimizer  # noqa: F401 (public)
from benchmarks.core import checkpoint as ckpt

_EVAL_BATCH = 2000  # images per inference batch (airbench's)


# ----------------------------------------------------------------------------
# Batches and inference
# ----------------------------------------------------------------------------


def _inputs(images: torch.Tensor, feed: _training.Feed, dtype: torch.dtype) -> torch.Tensor:
    return feed.inputs(images).to(dtype)


def _shifted(x: torch.Tensor) -> list[torch.Tensor]:
    # One pixel up-left and one down-right, reflect-padded (airbench's translate TTA).
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return [padded[..., :h, :w], padded[..., 2:h + 2, 2:w + 2]]


def tta_logits(model: nn.Module, x: torch.Tensor, tta_level: int) -> torch.Tensor:
    """Logits of ``x: (n, 3, H, W)`` averaged over 1 (level 0), 2 (mirror) or 6 views (mirror + translate)."""
    def mirror(v):
        return 0.5 * model(v) + 0.5 * model(v.flip(-1))

    if tta_level == 0:
        return model(x)
    if tta_level == 1:
        return mirror(x)
    return 0.5 * mirror(x) + 0.5 * torch.stack([mirror(v) for v in _shifted(x)]).mean(0)


@torch.no_grad()
def predict(model: nn.Module, split, feed: _training.Feed, dtype: torch.dtype, tta_level: int) -> torch.Tensor:
    """Predicted labels ``(n,)`` (CPU int64) for ``split`` in eval mode, with test-time augmentation at
    ``tta_level``."""
    was_training = model.training
    model.eval()
    out = torch.empty(len(split), dtype=torch.int64)
    for index in _training.batch_index(len(split), _EVAL_BATCH):
        out[index] = tta_logits(model, _inputs(split.images[index], feed, dtype), tta_level).argmax(dim=1).cpu()
    model.train(was_training)
    return out


def accuracy(model: nn.Module, split, feed: _training.Feed, dtype: torch.dtype, tta_level: int) -> float:
    """Accuracy on ``split`` in eval mode, with test-time augmentation at ``tta_level``."""
    return _training.accuracy_of(predict(model, split, feed, dtype, tta_level), split)


def epoch_flips(base_flips: torch.Tensor, epoch: int, cfg: "AirbenchConfig",
                generator: torch.Generator) -> torch.Tensor:
    """Which training images are mirrored in ``epoch`` (0-based): ``base_flips`` in even epochs and
    its opposite in odd ones (alternating flip), or a fresh draw (``alt_flip = False``), or none."""
    if not cfg.augment:
        return torch.zeros_like(base_flips)
    if cfg.alt_flip:
        return base_flips ^ bool(epoch % 2)
    return torch.rand(len(base_flips), generator=generator) < 0.5


def _train_batch(images: torch.Tensor, flips: torch.Tensor, translate_px: int, feed: _training.Feed,
                 dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """uint8 ``(n, 3, H, W)`` -> augmented, normalised model inputs: translate, then flip where ``flips``."""
    x = images.to(feed.device, non_blocking=True)
    if translate_px:
        x = _training.augment_batch(x, translate_px, False, generator)
    x = torch.where(flips.to(feed.device).view(-1, 1, 1, 1), x.flip(-1), x)
    return _inputs(x, feed, dtype)


# ----------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AirbenchConfig:
    """airbench94's settings, as published by default, each explained beside it; a value out of range is a
    ``ValueError``."""

    epochs: float = 9.9  # passes over the training split; a fraction cuts the last one short (airbench94: 9.9)
    batch_size: int | None = 1024  # images per step (airbench94: 1024); None = the cell's batch size
    lr: float = 11.5  # learning rate per 1024 examples, decoupled from the momentum (see make_optimizer)
    momentum: float = 0.85  # Nesterov
    weight_decay: float = 0.0153  # per 1024 examples, decoupled from the learning rate
    bias_scaler: float = 64.0  # BatchNorm biases: this many times the learning rate (not the decay)
    label_smoothing: float = 0.2
    warmup_frac: float = 0.23  # fraction of the steps over which the lr rises from lr_start to its peak
    lr_start: float = 0.2  # multipliers of the peak lr at the first and the last step
    lr_end: float = 0.07
    lookahead_every: int = 5  # steps between two weight-averaging updates
    whiten_bias_epochs: int = 3  # epochs during which the whitening layer's bias trains; frozen after
    whiten_images: int = 5000  # training images whose 2x2 patches set the whitening layer
    whiten_eps: float = 5e-4  # added to the patch covariance's eigenvalues
    block1: int = 64  # channels of the three conv groups
    block2: int = 256
    block3: int = 256
    bn_momentum: float = 0.6  # weight of the old running statistics (PyTorch momentum = 1 - this)
    bn_eps: float = 1e-12
    logit_scale: float = 1 / 9
    augment: bool = True  # translate + flip; False: neither
    translate_px: int = 2  # largest random shift, reflect padding
    alt_flip: bool = True  # alternating flip (airbench94); False: a random flip each epoch
    tta_level: int = 2  # final scoring: 0 none, 1 mirror, 2 mirror + translate (airbench94)
    half: bool = True  # fp16 weights and inputs on CUDA, BatchNorm in fp32 (airbench94); ignored on CPU
    eval_every: int = 1  # validation accuracy (an epoch row) every this many epochs and after the last

    def __post_init__(self):
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(f"epochs must be a finite number > 0, got {self.epochs}")
        _tuning.check_ranges(self)
        if self.batch_size is not None and self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (BatchNorm), got {self.batch_size}")
        if min(self.block1, self.block2, self.block3) < 1:
            raise ValueError(f"block widths must be >= 1, got {self.widths}")
        if self.tta_level not in (0, 1, 2):
            raise ValueError(f"tta_level must be 0, 1 or 2, got {self.tta_level}")
        if min(self.lookahead_every, self.whiten_images, self.eval_every) < 1 or self.translate_px < 0:
            raise ValueError("lookahead_every, whiten_images and eval_every must be >= 1 and translate_px >= 0")
        if not 0 < self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in (0, 1), got {self.warmup_frac}")

    @property
    def widths(self) -> tuple[int, int, int]:
        """The three conv groups' channels: ``(block1, block2, block3)``."""
        return (self.block1, self.block2, self.block3)


class Airbench(FromScratch):
    """airbench94 (Jordan, 2024) from scratch: whitened first layer, Nesterov SGD, Lookahead, TTA."""

    name = "airbench"
    Config = AirbenchConfig

    @classmethod
    def label(cls, config: AirbenchConfig) -> str:
        epochs = config.epochs
        steps = "" if epochs == AirbenchConfig.epochs else f" {epochs:g} epoch{'' if epochs == 1 else 's'}"
        return "airbench94" + steps + batch_note(cls, config)

    @classmethod
    def network(cls, config: AirbenchConfig, shape) -> nn.Module:
        """The network a cell of ``shape`` trains (:meth:`build`)."""
        return cls(config).build(shape.n_classes, shape.image_size)

    @classmethod
    def memory_bytes(cls, config: AirbenchConfig, shape) -> int:
        cfg = config
        _, info = cls.flops(config, shape)
        batch = min(cfg.batch_size or 1024, max(shape.n_train, 2))
        evaluated = min(_EVAL_BATCH, max(shape.n_val, shape.n_test, 1))  # inference runs in batches of 2,000
        return (shape.n_images * 3 * shape.image_size**2 + info["params"] * 4 * 4
                + max(batch * _activation_bytes(cfg.widths, shape.image_size),
                      evaluated * _inference_bytes(cfg.widths, shape.image_size)))

    def __init__(self, config: AirbenchConfig | None = None):
        self.config = config or AirbenchConfig()

    def build(self, n_classes: int, image_size: int) -> AirbenchNet:
        """A new :class:`AirbenchNet` for ``n_classes``; a ``ValueError`` for images under 9 px (three halvings)."""
        cfg = self.config
        if image_size < 9:  # the whitening conv takes 1 px, then three 2x max-pools
            raise ValueError(f"airbench needs images of at least 9 px (three halvings), got {image_size}")
        return AirbenchNet(n_classes, cfg.widths, cfg.bn_momentum, cfg.bn_eps, cfg.logit_scale)

    def run(self, ctx) -> dict:
        cfg, data, clock = self.config, ctx.data, ctx.clock
        device = torch.device(ctx.device)
        _training.seed_everything(ctx.seed)
        half = cfg.half and device.type == "cuda"
        dtype = torch.float16 if half else torch.float32
        model = self.build(data.n_classes, data.image_size).to(device)
        if half:
            model = model.half().to(memory_format=torch.channels_last)
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.float()
        mean, std = data.channel_stats()
        feed = _training.Feed(mean=mean, std=std, device=device, batch_size=_EVAL_BATCH, channels_last=half)

        n_train = len(data.train)
        if n_train < 2:
            raise ValueError(f"airbench needs at least 2 training images (BatchNorm), got {n_train}")
        batch_size = min(cfg.batch_size or ctx.batch_size, n_train)
        steps_per_epoch = n_train // batch_size  # the trailing partial batch is dropped, as in airbench
        total_steps = math.ceil(steps_per_epoch * cfg.epochs)
        n_epochs = math.ceil(total_steps / steps_per_epoch)
        optimizer = make_optimizer(model, cfg, batch_size)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total_steps, cfg.warmup_frac, cfg.lr_start, cfg.lr_end))
        loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction="sum")
        generator = torch.Generator().manual_seed(ctx.seed)
        translate_px = cfg.translate_px if cfg.augment else 0

        with clock.phase("warmup_s", counted=False):
            self._warmup(model, optimizer, data.train, feed, dtype, loss_fn, batch_size)
        with clock.phase("train_s"):
            whiten_index = torch.randperm(n_train, generator=generator)[: cfg.whiten_images]
            whiten_inputs = feed.inputs(data.train.images[whiten_index])
            model.whiten.weight.copy_(whitening_filters(whiten_inputs, eps=cfg.whiten_eps))
            del whiten_inputs
        self.whiten_index_ = whiten_index
        lookahead = Lookahead(model)
        # Alternating flip: a random flip per image, the same in every even epoch and the opposite in odd ones.
        base_flips = torch.rand(n_train, generator=generator) < 0.5

        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, desc=self.name, unit="batch", disable=not ctx.progress, leave=False)
        step, val_acc, rows, done = 0, 0.0, [], 0
        # A resumed cell redoes the set-up above (deterministic), then takes the state of its last saved epoch.
        modules = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "lookahead": lookahead}
        saved = ckpt.resume_training(ctx.checkpoint, clock, generator, modules, epochs=n_epochs, steps=total_steps)
        if saved is not None:
            done, step, val_acc, rows = saved["epoch"], saved["step"], saved["val_acc"], saved["rows"]
            for row in rows:
                ctx.emit(row)
            bar.update(step)
        for epoch in range(done, n_epochs):
            model.whiten.bias.requires_grad_(epoch < cfg.whiten_bias_epochs)
            flips = epoch_flips(base_flips, epoch, cfg, generator)
            with clock.phase("train_s"):
                model.train()
                loss_sum = torch.zeros((), device=device)
                seen = 0
                order = torch.randperm(n_train, generator=generator)[: steps_per_epoch * batch_size]
                for index in order.split(batch_size):
                    x = _train_batch(data.train.images[index], flips[index], translate_px, feed, dtype, generator)
                    y = data.train.labels[index].to(device, non_blocking=True)
                    loss = loss_fn(model(x), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    loss_sum += loss.detach().float()
                    seen += len(index)
                    bar.update(1)
                    if step % cfg.lookahead_every == 0:
                        lookahead.update(model, lookahead_decay(step, total_steps))
                    if step >= total_steps:
                        lookahead.update(model, 1.0)  # the model ends as the average
                        break
                train_loss = float(loss_sum) / max(seen, 1)
            diverged = non_finite(train_loss, model)
            if diverged is not None:  # stop now: the remaining epochs would only train NaNs
                bar.close()
                raise TrainingDiverged(epoch + 1, diverged, cfg.lr)
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == n_epochs:
                with clock.phase("eval_s", counted=False):
                    val_acc = accuracy(model, data.val, feed, dtype, tta_level=0)
                bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val_acc:.3f}")
                rows.append({"row_type": "epoch", "epoch": epoch + 1, "train_time_s": clock.counted_s,
                             "train_loss": train_loss, "val_acc": val_acc})
                ctx.emit(rows[-1])
            if ctx.checkpoint is not None:
                ckpt.save_training(ctx.checkpoint, clock, generator, modules, epoch=epoch + 1, epochs=n_epochs,
                                   steps=total_steps, step=step, val_acc=val_acc, rows=rows)
        bar.close()
        self.model_ = model

        # The schedule and the average end at the last step: that model is the one scored, test once.
        with clock.phase("eval_s", counted=False):
            final_val = accuracy(model, data.val, feed, dtype, cfg.tta_level)
            train_acc = accuracy(model, data.train, feed, dtype, tta_level=0)  # a diagnostic: 6x cheaper
        with clock.phase("predict_s", counted=False):
            test_pred = predict(model, data.test, feed, dtype, cfg.tta_level)
        return {"train_acc": train_acc, "val_acc": final_val, "test_acc": _training.accuracy_of(test_pred, data.test),
                "test_pred": test_pred,
                "best_epoch": n_epochs, "epochs": cfg.epochs, **_training.model_size(model),
                "train_precision": "fp16" if half else "fp32",
                "val_acc_no_tta": val_acc, "tta_level": cfg.tta_level, "batch_size": batch_size,
                "train_steps": total_steps}

    @staticmethod
    def _warmup(model, optimizer, split, feed, dtype, loss_fn, batch_size: int) -> None:
        """One full-size training step (lazy init, cuDNN autotuning, allocator), then everything put back."""
        model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        opt_state = copy.deepcopy(optimizer.state_dict())
        model.train()
        x = _inputs(split.images[:batch_size], feed, dtype)
        loss = loss_fn(model(x), split.labels[:batch_size].to(feed.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        optimizer.load_state_dict(opt_state)
        model.load_state_dict(model_state)


def _inference_bytes(widths: tuple[int, ...], image_size: int) -> int:
    """Bytes live per image in an inference forward (fp32, no gradients): the largest layer's input and
    output together, a planning estimate."""
    side = image_size - 1  # after the unpadded 2x2 whitening conv
    largest = 24 * side**2
    for width in widths:
        largest = max(largest, width * side**2)  # conv1 output, before the pool
        side //= 2
    return 4 * 2 * largest


def _activation_bytes(widths: tuple[int, ...], image_size: int) -> int:
    """Bytes kept per training image for the backward pass (fp32), a planning estimate."""
    side = image_size - 1  # after the unpadded 2x2 whitening conv
    elems = 2 * 24 * side**2  # whitening conv output and its GELU
    for width in widths:
        elems += width * side**2  # conv1 output, before the pool
        side //= 2
        elems += 6 * width * side**2  # pool (values + indices), BN, GELU, conv2, BN, GELU
    return 4 * 2 * elems  # activations and their gradients
