"""The shared backprop training loop of the baselines, as plain functions.

:func:`fit` runs the runner's contract for a trainer, which every
backprop baseline follows the same way:

1. one warm-up step (forward, backward, optimiser step on one batch), then the
   initial weights and optimiser state are restored, in ``warmup_s``
   (not counted): it pays for lazy initialisation, cuDNN autotuning and
   allocator growth outside the training time;
2. each epoch trains in ``train_s`` (counted; batching, augmentation and the
   host-to-device copy included), then scores the validation split in
   ``eval_s`` (not counted) and emits one ``row_type="epoch"`` row (every
   ``eval_every`` epochs and after the last, when a Config sets it);
3. the epoch with the best validation accuracy is kept (a copy of its state
   dict; the earliest on ties), and the train split is scored once for that
   epoch in ``eval_s``, the test split in ``predict_s`` (not counted: the
   inference time of the model kept); with a ``patience``, training stops once the
   validation accuracy has not improved for that many epochs (early stopping);
4. a training whose mean loss or weights stop being finite (NaN or infinite)
   after an epoch has diverged: it stops there and raises :class:`TrainingDiverged`
   (the runner records the cell as failed with that reason, never ``ok``).
5. with a checkpoint (``ctx.checkpoint``), every epoch is saved, and a training stopped
   mid-way resumes after its last saved epoch with the same curve (:mod:`benchmarks.core.checkpoint`).

:func:`baselines._tuning.tune` chooses a hyperparameter (the learning rate) on validation
from a small grid, one training per value, and reports the grid's cost as ``tune_s``;
a value whose training diverged is excluded from the choice and recorded
(``grid_diverged``); if every value diverged the cell fails.

Images stay ``uint8`` until a batch is on the device, where it is augmented (random crop with reflect
padding, horizontal flip) and normalised. Mixed precision (autocast + GradScaler) on CUDA only.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from baselines._divergence import TrainingDiverged, non_finite
from benchmarks.core import checkpoint as ckpt
from benchmarks.core.data import ImageSplit, to_float

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "none")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (weight init, fastai's shuffling)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_pad_px(image_size: int) -> int:
    """Crop padding at the image's scale: 4 px at 32 px (CIFAR practice), 12 px at 96 px."""
    return max(1, round(image_size / 8))


def amp_dtype(device: torch.device, enabled: bool, precision: str = "fp32") -> torch.dtype | None:
    """The autocast dtype on CUDA (bf16 if the cell asks for bf16, else fp16); None on CPU."""
    if not enabled or torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def precision_label(dtype: torch.dtype | None) -> str:
    """What the weights were trained in, for the results (``fp32``, ``amp-fp16``, ``amp-bf16``)."""
    return {None: "fp32", torch.float16: "amp-fp16", torch.bfloat16: "amp-bf16"}[dtype]


@dataclass(frozen=True)
class Feed:
    """How ``uint8`` batches become model inputs on the device."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    batch_size: int
    amp_dtype: torch.dtype | None = None  # autocast dtype, CUDA only
    pad_px: int = 0  # random-crop padding (reflect); 0 = no crop
    flip: bool = False  # random horizontal flip
    channels_last: bool = False

    def inputs(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``images: (n, 3, H, W) uint8`` -> normalised float on the device, augmented if ``generator``."""
        x = images.to(self.device, non_blocking=True)
        if generator is not None and (self.pad_px or self.flip):
            x = augment_batch(x, self.pad_px, self.flip, generator)
        x = to_float(x, self.mean, self.std, self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``amp_dtype`` on CUDA, or a context that does nothing when it is None."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)


# ----------------------------------------------------------------------------
# Batching and augmentation
# ----------------------------------------------------------------------------


def batch_index(n: int, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Index tensors of the batches of one pass over ``n`` items.

    With a ``generator`` the order is a seeded permutation (training) and a
    trailing batch of a single image is dropped: BatchNorm cannot normalise it.
    Without one, the order is the split's and nothing is dropped (evaluation).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(order.split(batch_size))
    if generator is not None and len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def n_train_batches(n: int, batch_size: int) -> int:
    """Optimiser steps per epoch for ``n`` training images (see :func:`batch_index`)."""
    steps = -(-n // batch_size)
    return steps - 1 if steps > 1 and n % batch_size == 1 else steps


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    # Reflect padding without the edge repeated (numpy "reflect"): -1 -> 1, size -> size - 2.
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def augment_batch(images: torch.Tensor, pad_px: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the reflect-padded image and random horizontal flip, per image.

    ``images: (n, C, H, W)`` any dtype, on any device; the random draws come
    from ``generator`` (CPU) so runs are reproducible across devices. The crop
    is a gather: a shift in ``[-pad_px, pad_px]`` per axis, out-of-image rows
    and columns read by reflection, which equals padding then cropping.
    """
    n, c, h, w = images.shape
    if pad_px >= min(h, w):
        raise ValueError(f"crop padding {pad_px} px must be smaller than the {h}x{w} images")
    device = images.device
    rows = torch.arange(h).expand(n, h)
    cols = torch.arange(w).expand(n, w)
    if pad_px:
        dy = torch.randint(-pad_px, pad_px + 1, (n, 1), generator=generator)
        dx = torch.randint(-pad_px, pad_px + 1, (n, 1), generator=generator)
        rows, cols = _reflect(rows + dy, h), _reflect(cols + dx, w)
    if flip:
        flipped = torch.rand(n, 1, generator=generator) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    rows, cols = rows.to(device), cols.to(device)
    i = torch.arange(n, device=device).view(n, 1, 1, 1)
    ch = torch.arange(c, device=device).view(1, c, 1, 1)
    return images[i, ch, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


# ----------------------------------------------------------------------------
# Model bookkeeping, optimisers, steps, epochs and evaluation
# ----------------------------------------------------------------------------


def model_size(model: nn.Module) -> dict[str, int]:
    """Parameter counts and bytes of every kept parameter and buffer (BatchNorm statistics)."""
    params = list(model.parameters())
    tensors = params + list(model.buffers())
    return {
        "model_param_count": sum(p.numel() for p in params),
        "trainable_param_count": sum(p.numel() for p in params if p.requires_grad),
        "model_bytes": sum(t.numel() * t.element_size() for t in tensors),
    }


def make_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float = 0.9):
    """SGD (Nesterov momentum), Adam (L2 penalty) or AdamW (decoupled decay)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters; nothing to optimise")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0,
                               weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")


def make_scheduler(name: str, optimizer, max_lr: float, total_steps: int):
    """One-cycle (cosine, warm-up over the first 25 % of steps) stepped per batch, or None."""
    if name == "none":
        return None
    if name == "onecycle":
        # OneCycleLR divides by the length of its phases: with under 8 steps the warm-up phase would be empty
        # (a run that short only walks the start of an 8-step cycle).
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(8, total_steps),
                                                   pct_start=0.25)
    raise ValueError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")


def _grad_scaler(feed: Feed):
    # Loss scaling only for fp16 on CUDA; bf16 has fp32's range.
    enabled = feed.amp_dtype is torch.float16
    return torch.amp.GradScaler("cuda", enabled=enabled) if enabled else None


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_step(model, x, y, optimizer, loss_fn, feed: Feed, scaler) -> torch.Tensor:
    with feed.autocast():
        loss = loss_fn(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


def warmup_step(model: nn.Module, split: ImageSplit, feed: Feed, loss_fn: Callable,
                optimizer: torch.optim.Optimizer | None = None, scaler=None) -> None:
    """One training step on the first batch, then the model and optimiser are put back as they were.

    Without an optimiser only forward and backward run (fastai builds its own later).
    """
    model_state = _state_copy(model)
    opt_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    scaler_state = scaler.state_dict() if scaler is not None else None
    model.train()
    x = feed.inputs(split.images[: feed.batch_size])
    y = split.labels[: feed.batch_size].to(feed.device)
    if optimizer is not None:
        _train_step(model, x, y, optimizer, loss_fn, feed, scaler)
        optimizer.zero_grad(set_to_none=True)
        optimizer.load_state_dict(opt_state)
    else:
        with feed.autocast():
            loss = loss_fn(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.load_state_dict(scaler_state)
    model.load_state_dict(model_state)


def train_epoch(model: nn.Module, split: ImageSplit, optimizer, loss_fn: Callable, feed: Feed,
                generator: torch.Generator, scheduler=None, scaler=None, bar=None) -> float:
    """One pass over ``split`` in a seeded order with augmentation; returns the mean training loss."""
    model.train()
    total = torch.zeros((), device=feed.device)
    seen = 0
    for index in batch_index(len(split), feed.batch_size, generator):
        x = feed.inputs(split.images[index], generator)
        y = split.labels[index].to(feed.device, non_blocking=True)
        loss = _train_step(model, x, y, optimizer, loss_fn, feed, scaler)
        if scheduler is not None:
            scheduler.step()
        total += loss.float() * len(index)
        seen += len(index)
        if bar is not None:
            bar.update(1)
    return float(total) / max(seen, 1)  # one device sync per epoch


@torch.no_grad()
def predict(model: nn.Module, split: ImageSplit, feed: Feed) -> torch.Tensor:
    """The labels ``model`` predicts for ``split``, ``(n,)`` int64 on the CPU (eval mode, no augmentation)."""
    was_training = model.training
    model.eval()
    out = torch.empty(len(split), dtype=torch.int64)
    for index in batch_index(len(split), feed.batch_size):
        x = feed.inputs(split.images[index])
        with feed.autocast():
            out[index] = model(x).argmax(dim=1).cpu()
    model.train(was_training)
    return out


def accuracy_of(pred: torch.Tensor, split: ImageSplit) -> float:
    """The fraction of ``pred`` equal to ``split``'s labels (0.0 for an empty split)."""
    return float((pred == split.labels).sum()) / max(len(split), 1)


def evaluate(model: nn.Module, split: ImageSplit, feed: Feed) -> float:
    """Accuracy of ``model`` on ``split`` (eval mode, no augmentation)."""
    return accuracy_of(predict(model, split, feed), split)


def score_test(model: nn.Module, split: ImageSplit, feed: Feed) -> dict:
    """``test_acc`` and ``test_pred`` (the predicted labels, which the runner keeps) of ``model`` on ``split``."""
    pred = predict(model, split, feed)
    return {"test_acc": accuracy_of(pred, split), "test_pred": pred}


_score_test = score_test  # ``fit`` has an argument of that name


def fit(model: nn.Module, ctx, optimizer, loss_fn: Callable, feed: Feed, epochs: int,
        scheduler=None, desc: str = "train", patience: int | None = None, score_test: bool = True,
        eval_every: int = 1) -> dict:
    """Train ``model`` for up to ``epochs`` under the runner's contract (module docstring); the final metrics.

    ``model`` must already be on ``feed.device``; ``scheduler`` is stepped once per batch.
    ``patience``: stop once the validation accuracy has not improved for that many epochs
    (``epochs`` is then the budget, ``epochs_run`` what was used). ``eval_every``: the validation accuracy
    (and an epoch row) every this many epochs and after the last; the best epoch and early stopping are
    decided at those epochs only. ``score_test=False`` leaves the
    test split alone (a candidate of :func:`tune`, scored only if it is chosen). On return the
    model holds its best epoch's weights. A non-finite loss or weight after an epoch stops the
    training there: :class:`TrainingDiverged` (that epoch emits no row). With ``ctx.checkpoint``, each
    epoch is saved and the training resumes after the last saved one (:mod:`benchmarks.core.checkpoint`).
    """
    from tqdm.auto import tqdm

    clock = ctx.clock
    scaler = _grad_scaler(feed)
    generator = torch.Generator().manual_seed(ctx.seed)
    with clock.phase("warmup_s", counted=False):
        warmup_step(model, ctx.data.train, feed, loss_fn, optimizer, scaler)

    steps = n_train_batches(len(ctx.data.train), feed.batch_size)
    bar = tqdm(total=epochs * steps, desc=desc, unit="batch", disable=not ctx.progress, leave=False)
    best_acc, best_epoch, best_state, epoch, rows, stopped = -1.0, 0, None, 0, [], False
    # After the warm-up (which draws nothing the training keeps): the model, optimiser, clock and random
    # states as they were after the last saved epoch, and that epoch's rows emitted again.
    modules = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    saved = ckpt.resume_training(ctx.checkpoint, clock, generator, modules, epochs=epochs, patience=patience)
    if saved is not None:
        best_acc, best_epoch, best_state = saved["best_acc"], saved["best_epoch"], saved["best_state"]
        epoch, rows, stopped = saved["epoch"], saved["rows"], saved["stopped"]
        for row in rows:
            ctx.emit(row)
        bar.update(epoch * steps)
    last = epoch if stopped else epochs
    for epoch in range(epoch + 1, last + 1):
        with clock.phase("train_s"):
            train_loss = train_epoch(model, ctx.data.train, optimizer, loss_fn, feed, generator,
                                     scheduler, scaler, bar)
        diverged = non_finite(train_loss, model)
        if diverged is not None:  # stop now: the remaining epochs would only train NaNs
            bar.close()
            raise TrainingDiverged(epoch, diverged)
        if epoch % eval_every == 0 or epoch == epochs:
            with clock.phase("eval_s", counted=False):
                val_acc = evaluate(model, ctx.data.val, feed)
                if val_acc > best_acc:
                    best_acc, best_epoch, best_state = val_acc, epoch, _state_copy(model)
            bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val_acc:.3f}", best=best_epoch)
            rows.append({"row_type": "epoch", "epoch": epoch, "train_time_s": clock.counted_s,
                         "train_loss": train_loss, "val_acc": val_acc})
            ctx.emit(rows[-1])
            stopped = patience is not None and epoch - best_epoch >= patience
        if ctx.checkpoint is not None:
            ckpt.save_training(ctx.checkpoint, clock, generator, modules, epoch=epoch, epochs=epochs,
                               patience=patience, best_acc=best_acc, best_epoch=best_epoch, best_state=best_state,
                               rows=rows, stopped=stopped)
        if stopped:
            break
    bar.close()

    with clock.phase("eval_s", counted=False):
        model.load_state_dict(best_state)
        train_acc = evaluate(model, ctx.data.train, feed)
    with clock.phase("predict_s", counted=False):
        test = _score_test(model, ctx.data.test, feed) if score_test else {"test_acc": None}
    return {"train_acc": train_acc, "val_acc": best_acc, **test,
            "best_epoch": best_epoch, "epochs": epochs, "epochs_run": epoch, **model_size(model),
            "train_precision": precision_label(feed.amp_dtype)}


def fit_recipe(model: nn.Module, ctx, cfg, feed: Feed, lr: float, epochs: int, desc: str,
               score_test: bool = False) -> dict:
    """:func:`fit` with a Config's recipe: its optimizer (``optimizer``, ``weight_decay``,
    ``momentum``) at ``lr``, its ``schedule`` over the run's steps, cross-entropy with its
    ``label_smoothing``, early stopping after its ``patience``, validation every ``eval_every`` epochs. A :class:`TrainingDiverged` names ``lr``."""
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), lr, cfg.weight_decay, cfg.momentum)
    steps = epochs * n_train_batches(len(ctx.data.train), feed.batch_size)
    scheduler = make_scheduler(cfg.schedule, optimizer, lr, steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    try:
        return fit(model, ctx, optimizer, loss_fn, feed, epochs, scheduler, desc=desc, patience=cfg.patience,
                   score_test=score_test, eval_every=cfg.eval_every)
    except TrainingDiverged as err:
        raise err.at_lr(lr) from None
