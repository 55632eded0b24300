"""The trainers' budgets and hyperparameter checks, and the learning-rate grid chosen on validation
(:func:`tune`, :func:`train_or_tune`): each value trained on a clock of its own, the best validation
accuracy kept, its cost reported as ``tune_s``, a diverged value left out and named."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable

from torch import nn

from baselines._divergence import GridDiverged, TrainingDiverged
from baselines._training import score_test
from benchmarks.core.timing import Clock

def check_epochs(epochs) -> None:
    """A whole number of epochs, at least one (airbench alone cuts its last epoch short)."""
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be a whole number >= 1, got {epochs!r} (only airbench takes a fraction)")


def check_budget(cfg) -> None:
    """A trainer Config's ``patience``, ``lr_grid``, ``tune_epochs`` and ``eval_every``, checked when it is
    built."""
    if cfg.eval_every < 1:
        raise ValueError(f"eval_every must be >= 1 epoch, got {cfg.eval_every}")
    if cfg.patience is not None and cfg.patience < 1:
        raise ValueError(f"patience must be >= 1 epoch, got {cfg.patience}")
    if cfg.tune_epochs is not None and (cfg.tune_epochs < 1 or not cfg.lr_grid):
        raise ValueError(f"tune_epochs must be >= 1 and needs an lr_grid, got {cfg.tune_epochs}")
    if cfg.lr_grid is not None and (not cfg.lr_grid or not all(math.isfinite(v) and v > 0 for v in cfg.lr_grid)):
        raise ValueError(f"lr_grid must hold positive, finite learning rates, got {cfg.lr_grid}")


#: The range of each numeric hyperparameter a trainer's Config may have (checked by :func:`check_ranges`):
#: (lowest, highest, whether the lowest itself is allowed). Every value must also be finite.
RANGES = {
    "lr": (0.0, math.inf, False), "lr_max": (0.0, math.inf, False), "div": (0.0, math.inf, False),
    "bias_scaler": (0.0, math.inf, False), "whiten_eps": (0.0, math.inf, False),
    "bn_eps": (0.0, math.inf, False), "logit_scale": (0.0, math.inf, False),
    "weight_decay": (0.0, math.inf, True), "lr_start": (0.0, math.inf, True), "lr_end": (0.0, math.inf, True),
    "momentum": (0.0, 1.0, True), "bn_momentum": (0.0, 1.0, True), "label_smoothing": (0.0, 1.0, True),
    "pct_start": (0.0, 1.0, False),
}


def check_ranges(cfg) -> None:
    """Every field of ``cfg`` named in :data:`RANGES` finite and in its range, else a ValueError naming it
    (``--lr -1`` or ``nan`` is refused when the cell is built, not found as a NaN loss after training)."""
    for name, (low, high, low_ok) in RANGES.items():
        value = getattr(cfg, name, None)
        if value is None or isinstance(value, bool):
            continue
        if not (math.isfinite(value) and (value >= low if low_ok else value > low) and value < high):
            bound = f"{'>=' if low_ok else '>'} {low:g}" + ("" if high == math.inf else f" and < {high:g}")
            raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def budget_epochs(epochs: int, lr_grid=None, tune_epochs: int | None = None) -> int:
    """The most epochs a trainer may run: the grid's runs (short with ``tune_epochs``) and the final one."""
    if not lr_grid:
        return epochs
    return len(lr_grid) * tune_epochs + epochs if tune_epochs else len(lr_grid) * epochs


def tune(ctx, grid, train_one: Callable, retrain: Callable | None = None) -> dict:
    """Choose a hyperparameter on validation: one training per value of ``grid``, the best validation
    accuracy kept, the test split scored once, for that model only.

    ``train_one(ctx, value) -> (model, out, feed)`` trains with ``value`` (``fit(..., score_test=False)``).
    Each value runs on a clock of its own; the chosen run's phases are booked to the runner's clock
    (its training time is the cell's ``train_total_s``, its epoch rows the cell's curve), the others'
    counted seconds to ``tune_s``, measured and reported but not counted: the grid's cost, beside the
    training time, never hidden in it nor dropped. With ``retrain(ctx, value)`` (the grid ran on a
    short budget), every grid run is tuning and the chosen value is trained again in full: that run
    is the cell's training time and curve.

    Each grid run checkpoints as a stage of its own (``grid0``, ``grid1``...; the full retraining as
    ``main``): a resumed cell replays the runs already done from their files and goes on.

    A value whose training diverged (:class:`TrainingDiverged`) is excluded from the choice, its
    cost kept in ``tune_s`` and its epoch and reason in ``grid_diverged`` (value -> reason); if
    every value diverged, :class:`GridDiverged`.
    """
    keep = retrain is None  # the chosen grid run is the cell's model
    best, tune_s, scores, diverged = None, 0.0, {}, {}
    for i, value in enumerate(grid):
        rows: list[dict] = []
        sub = dataclasses.replace(ctx, clock=Clock(ctx.device), emit=rows.append if keep else lambda row: None,
                                  checkpoint=ctx.checkpoint.stage(f"grid{i}") if ctx.checkpoint else None)
        try:
            model, out, feed = train_one(sub, value)
        except TrainingDiverged as err:
            diverged[str(value)] = f"epoch {err.epoch}: {err.what}"
            tune_s += sub.clock.counted_s
            continue
        scores[str(value)] = out["val_acc"]
        if best is None or out["val_acc"] > best[1]["val_acc"]:  # the earliest value on ties
            if best is not None:
                tune_s += best[3].counted_s
            best = (model if keep else None, out, feed, sub.clock, rows, value)
        else:
            tune_s += sub.clock.counted_s
        del model
    if best is None:
        raise GridDiverged(diverged)
    noted = {"grid_val_acc": scores, **({"grid_diverged": diverged} if diverged else {})}
    model, out, feed, clock, rows, value = best
    best = None
    if keep:
        ctx.clock.merge(clock)
    else:
        tune_s += clock.counted_s
    ctx.clock.book("tune_s", tune_s, counted=False)
    for row in rows:
        ctx.emit(row)
    if not keep:
        model, out, feed = retrain(ctx, value)
    with ctx.clock.phase("predict_s", counted=False):
        out.update(score_test(model, ctx.data.test, feed))
    return {**out, "tuned_value": value, "tune_s": tune_s, **noted, "model": model}


def train_or_tune(ctx, cfg, train: Callable) -> tuple[nn.Module, dict]:
    """(model, metrics) of a trainer whose ``cfg`` has ``lr``, ``lr_grid`` and ``tune_epochs``:
    one training at ``cfg.lr``, or :func:`tune` over ``cfg.lr_grid`` (briefly, with ``tune_epochs``).
    ``train(ctx, lr, score_test=False, epochs=None) -> (model, out, feed)``."""
    if not cfg.lr_grid:
        model, out, _ = train(ctx, cfg.lr, score_test=True)
        return model, {**out, "lr": cfg.lr}
    short = (lambda c, lr: train(c, lr, epochs=cfg.tune_epochs)) if cfg.tune_epochs else train
    out = tune(ctx, cfg.lr_grid, short, retrain=train if cfg.tune_epochs else None)
    return out.pop("model"), {**out, "lr": out["tuned_value"]}
