"""The comparison metrics: time to accuracy (censored where a curve misses), speed-up at equal
accuracy with its spread over seeds, and the Pareto fronts, from the rows :mod:`benchmarks.report.tables`
counts.

Cells are compared within a *group*: the same dataset and numbers of training, validation and
test images (the same stratified subsets), so that both sides saw the same images. The image size
is the method's own choice (a CNN from scratch at CIFAR-10's native 32 px, a pretrained backbone
at 96 px on the same images), shown in the tables. In a group:

* the **gradient-free target** is the validation accuracy (mean over seeds) of the gradient-free
  side's validation-chosen configuration (:func:`benchmarks.report.verdict.choose`, the one the report's
  answer names), not a maximum taken over seeds or epochs. Targets are validation accuracies: the
  backprop curves (per-epoch rows) carry validation accuracy only, and the test split is scored
  once per cell, never used to choose anything;
* **time to accuracy** of a backprop curve (one seed of one configuration) is the counted training
  time of the first validation point (every ``eval_every`` epochs) whose accuracy reaches the target,
  shown as the span from the point before it: the curve crossed the target in between. A curve's last
  point is the model it keeps, validated as it is scored (:func:`with_final`: airbench94's with
  test-time augmentation, which its per-epoch points lack). A curve that never reaches the target is
  *censored*: "not reached in X s", X its whole counted time, never dropped;
* the **gradient-free time to the backprop best**: the counted time of the fastest gradient-free
  configuration whose mean validation accuracy reaches the best backprop configuration's (mean over
  seeds of each curve's best epoch), or censored when none does;
* **speed-up at equal accuracy**: for each backprop configuration whose every seed reached the
  target, its time to the target divided by the target configuration's mean training time, per
  seed, as mean ± std over seeds, from the same ratio at the validation point before (``10.2–11.4x``:
  the true ratio lies in the span); beside it the same ratio with each side's tuning time
  (``tune_s``) added. A configuration with a censored seed gets no speed-up (it never reached equal
  accuracy), and neither does a data group whose test split cannot separate its configurations
  (:mod:`benchmarks.report.answer`), nor a configuration whose seeds and the target's ran on more than one
  CPU model (``device_name``: a ratio of times from two CPUs measures the CPUs; the sessions of a long suite
  may land on different machines). ``timing`` says which side's times
  were measured beside other work (:mod:`benchmarks.report.conditions`): upper bounds.

Training time is ``train_total_s`` (the counted phases); ``tune_s`` is what choosing a
hyperparameter grid on validation cost (the learning-rate grid of the trainers), shown beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.report.conditions import busy_note, machines
from benchmarks.report.tables import BACKPROP, GRADIENT_FREE, GROUP, aggregate, split_sides
from benchmarks.report.verdict import choose, rows_of

#: The columns that make two cells comparable (same data).
DATA_GROUP = ["dataset", "n_train", "n_val", "n_test"]


def data_groups(finals: pd.DataFrame):
    """(group, rows) per :data:`DATA_GROUP` value of ``finals``: the cells that saw the same data."""
    if finals.empty:
        return
    filled = finals.fillna({c: -1 for c in DATA_GROUP if c != "dataset"})
    for key, rows in filled.groupby(DATA_GROUP, sort=True, dropna=False):
        yield dict(zip(DATA_GROUP, key)), finals.loc[rows.index]


def _best_gf(gf: pd.DataFrame) -> pd.Series | None:
    """The gradient-free side's validation-chosen configuration (its val_acc: the target)."""
    return choose(gf)


def targets(finals: pd.DataFrame) -> list[tuple[dict, float, str]]:
    """(group, target validation accuracy, configuration that sets it) per group with a gradient-free cell."""
    out = []
    for group, cells in data_groups(finals):
        best = _best_gf(split_sides(cells)[GRADIENT_FREE])
        if best is not None:
            out.append((group, float(best["val_acc"]), f"{best['config']} @ {best['cut']}"))
    return out


def in_group(rows: pd.DataFrame, group: dict) -> pd.Series:
    """Which of ``rows`` (final or epoch rows) belong to ``group``."""
    mask = pd.Series(True, index=rows.index)
    for k, v in group.items():
        mask &= rows[k].fillna(-1) == v
    return mask


def with_final(epochs: pd.DataFrame, finals: pd.DataFrame) -> pd.DataFrame:
    """The epoch rows with a time and a validation accuracy, each run's last point raised to its final row's
    validation accuracy where that is above every point of its curve. The model a trainer keeps, and scores
    on test, may be validated otherwise than its per-epoch curve: airbench94's with test-time augmentation
    and the last Lookahead average (0.838 on its curve, 0.852 kept, at 15,000 CIFAR-10 images); it exists at
    the end of the counted training, so that is when it reached what it reached. A trainer that keeps its
    best epoch, or its last, is unchanged: its final accuracy is a point of its curve."""
    curves = epochs.dropna(subset=["train_time_s", "val_acc"]) if not epochs.empty else epochs
    if curves.empty or finals.empty:
        return curves
    final = finals.dropna(subset=["val_acc"]).set_index(["cell_key", "run_id"])["val_acc"]
    final = final[~final.index.duplicated(keep="last")]
    curves = curves.copy()
    tails = curves.sort_values("train_time_s", kind="stable").groupby(["cell_key", "run_id"])
    best = tails["val_acc"].max()
    for index, key, run in tails.tail(1)[["cell_key", "run_id"]].itertuples(name=None):
        kept = final.get((key, run), np.nan)
        if kept > best[(key, run)]:  # (NaN: no final row, nothing to raise)
            curves.loc[index, "val_acc"] = kept
    return curves


def _curve_times(curve: pd.DataFrame, target: float) -> tuple[float, bool, float]:
    """(seconds, censored, before): the counted time of the first validation point at or above ``target``,
    else the whole time; and the time of the validation point before it (0 for the first): the curve
    crossed the target somewhere between the two (validation runs every ``eval_every`` epochs)."""
    curve = curve.sort_values("train_time_s")
    times = curve["train_time_s"].to_numpy(dtype=float)
    hit = np.flatnonzero(curve["val_acc"].to_numpy(dtype=float) >= target - 1e-12)
    if len(hit):
        return float(times[hit[0]]), False, float(times[hit[0] - 1]) if hit[0] > 0 else 0.0
    return float(times.max()), True, float(times.max())


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds:.0f} s"


def time_to_accuracy_table(finals: pd.DataFrame, epochs: pd.DataFrame,
                           unseparable: list[dict] | None = None) -> pd.DataFrame:
    """One row per backprop configuration of each group: its time to the gradient-free target
    (per seed, censored ones marked), the speed-up at equal accuracy without and with tuning time,
    and the gradient-free time to that configuration's best accuracy. ``unseparable``: the data
    groups whose test split cannot separate their configurations: no speed-up is named there."""
    rows = []
    for group, cells in data_groups(finals):
        sides = split_sides(cells)
        gf, bp = sides[GRADIENT_FREE], sides[BACKPROP]
        best = _best_gf(gf)
        if best is None or bp.empty:
            continue
        target, target_s = float(best["val_acc"]), float(best["train_total_s"])
        target_tuned_s = float(best["train_plus_tune_s"])
        unseparated = group in (unseparable or [])
        target_rows = rows_of(gf, best)
        gf_agg = aggregate(gf, ["val_acc", "train_total_s"])
        gf_agg = gf_agg.dropna(subset=["val_acc", "train_total_s"])
        keys = set(zip(bp["cell_key"], bp["run_id"]))
        curves = epochs[[k in keys for k in zip(epochs["cell_key"], epochs["run_id"])]] if not epochs.empty else epochs
        curves = with_final(curves, bp)
        for config_key, runs in bp.groupby(GROUP, sort=False, dropna=False):
            times, censored, bests, tunes, befores = _seed_curves(runs, curves, target)
            if not times:
                continue
            on = machines(pd.concat([runs, target_rows]))  # times from two CPU models make no ratio
            no_claim = f"none (measured on {len(on)} CPU models: {'; '.join(on)})" if len(on) > 1 else unseparated
            times, befores, tunes = np.array(times), np.array(befores), np.array(tunes)
            speedup = _speedup(times, target_s, censored, no_claim, befores)
            speedup_tuned = _speedup(times + tunes, target_tuned_s, censored, no_claim, befores + tunes)
            bp_best = float(np.mean(bests))
            reach = gf_agg[gf_agg["val_acc"] >= bp_best - 1e-12]
            if len(reach):
                fastest = reach.loc[reach["train_total_s"].idxmin()]
                gf_time = f"{_fmt_s(float(fastest['train_total_s']))} ({fastest['config']})"
            else:
                gf_time = f"not reached (best gradient-free val {gf_agg['val_acc'].max():.4f})"
            per_seed = ", ".join(f"not reached in {_fmt_s(t)}" if c else f"{_fmt_s(b)[:-2]}–{_fmt_s(t)}"
                                 for t, c, b in zip(times, censored, befores))
            rows.append({**{k: group[k] for k in ("dataset", "n_train")},
                         "backprop": f"{config_key[0]}: {config_key[1]}", "cut": dict(zip(GROUP, config_key))["cut"],
                         "seeds": len(times), "censored": int(sum(censored)),
                         "target (val)": round(target, 4), "target set by": f"{best['config']} @ {best['cut']}",
                         "target time": _fmt_s(target_s),
                         "backprop time to target": per_seed,
                         "speed-up at equal accuracy": speedup,
                         "the same, tuning included": speedup_tuned,
                         "backprop best (val)": round(bp_best, 4),
                         "gradient-free time to backprop best": gf_time,
                         "timing": "; ".join(f"{who}: {note}" for who, note in
                                             (("backprop", busy_note(runs)), ("target", busy_note(target_rows)))
                                             if note)})
    return pd.DataFrame(rows)


def _seed_curves(runs: pd.DataFrame, curves: pd.DataFrame, target: float) -> tuple[list, list, list, list, list]:
    """Per seed of one backprop configuration (``runs``: its final rows) with a curve among ``curves``: its time
    to ``target``, whether that is censored, its best validation accuracy, its tuning time and the time of the
    validation point before the one that reached the target (:func:`_curve_times`)."""
    times, censored, bests, tunes, befores = [], [], [], [], []
    for _, run in runs.iterrows():
        curve = curves[(curves["cell_key"] == run["cell_key"]) & (curves["run_id"] == run["run_id"])]
        curve = curve.dropna(subset=["train_time_s", "val_acc"])
        if curve.empty:
            continue
        seconds, cens, before = _curve_times(curve, target)
        times.append(seconds)
        befores.append(before)
        tunes.append(0.0 if pd.isna(run["tune_s"]) else float(run["tune_s"]))
        censored.append(cens)
        bests.append(float(curve["val_acc"].max()))
    return times, censored, bests, tunes, befores


def _speedup(times: np.ndarray, target_s: float, censored: list[bool], no_claim: bool | str,
             befores: np.ndarray | None = None) -> str:
    """Mean ± std over seeds of ``times / target_s``, from the mean of ``befores / target_s`` (the validation point
    before: the curve crossed the target in between) when given: only where every seed reached the target, and
    ``no_claim`` is false (a text: why none is named)."""
    if isinstance(no_claim, str):
        return no_claim
    if no_claim:
        return "none named (the test split cannot separate the configurations)"
    if any(censored):
        return f"none ({sum(censored)} of {len(censored)} seeds never reached the target: not at equal accuracy)"
    if not target_s > 0:
        return ""
    ratios = times / target_s
    low = f"{float(np.mean(befores / target_s)):.1f}–" if befores is not None else ""
    text = f"{low}{float(np.mean(ratios)):.1f}x"
    return text + (f" ± {float(np.std(ratios, ddof=1)):.1f}" if len(ratios) > 1 else "")


def pareto_front(points: pd.DataFrame, x: str, y: str = "test_acc") -> pd.DataFrame:
    """The points no other point beats: none with a smaller-or-equal ``x`` has a larger ``y``."""
    pts = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False])
    keep, best = [], -np.inf
    for idx, value in zip(pts.index, pts[y]):
        if value > best:
            keep.append(idx)
            best = value
    return pts.loc[keep]
