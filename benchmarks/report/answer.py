"""The report's opening: per data group and per cut, each side's validation-chosen configuration, its
test accuracy and time, the interval of the difference and the verdict after Holm
(the statistics are :mod:`benchmarks.report.verdict`'s). ``gradfree compare`` prints the same lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.report.comparison import data_groups
from benchmarks.report.conditions import machines
from benchmarks.report.tables import BACKPROP, GRADIENT_FREE, aggregate, cut_index, split_sides
from benchmarks.report.verdict import (ALPHA, LEVEL, PAIRED, TIE, Comparison, NotComparable, choose, compare_configs,
                                holm, name, oracle, rows_of)

CANNOT_SEPARATE = "cannot separate"
#: The answer table's first columns: what a reader looks for, before the details.
ANSWER_FIRST = ("dataset", "n_train", "n_val", "n_test", "cut", "gradient-free", "gradient-free test",
                "gradient-free train s", "backprop", "backprop test", "backprop train s", "gf − bp, points [95% interval]",
                "verdict")
NOTE = (f"Each side's answer is its configuration with the best mean validation accuracy (the test split chooses "
        f"nothing); their test accuracies are compared. Difference: gradient-free minus backprop, in points, "
        f"with its {LEVEL:.0%} interval: paired (a bootstrap over the test images, resampled jointly for both "
        "sides, and over each side's seeds; p: the difference over that bootstrap's standard error; McNemar's "
        "exact mid-p test beside it for reference, the largest over the pairings of the two sides' seeds) where "
        "both kept their test predictions on the same images, else unpaired (binomial standard errors plus the spread over seeds; "
        f"results written before predictions were kept). p-values are corrected by Holm over every comparison "
        f"below (each data group and each cut); a difference is a win only if its interval excludes 0 and its "
        f"Holm p is below {ALPHA}, else a tie. 'Cannot separate': even the best and the worst configuration of "
        "the data group are a tie on its test split, so it names no winner and no speed-up. The oracle (best "
        "on test) is shown for reference only: it is not a selection.")


@dataclass
class Entry:
    """One entry of the answer, for a data group (``cut`` None) or one cut of it: each side's configuration
    chosen on validation (``gf``, ``bp``; None when it has none), their comparison, or the ``problem`` that
    prevented one."""

    group: dict
    cut: str | None  # None: the whole data group
    gf: pd.Series | None
    bp: pd.Series | None
    comparison: Comparison | None = None
    problem: str = ""
    separable: bool = True
    spread: str = ""  # best against worst configuration, when it decides "cannot separate"
    oracle: str = ""
    has: dict = field(default_factory=dict)  # side -> whether the group has cells of it
    machines: list[str] = field(default_factory=list)  # the CPU models the two chosen configurations ran on

    def verdict(self) -> str:
        """``not compared: <problem>``, ``cannot separate``, or the comparison's verdict (empty without one)."""
        if self.problem:
            return f"not compared: {self.problem}"
        if not self.separable:
            return CANNOT_SEPARATE
        return self.comparison.verdict() if self.comparison is not None else ""


@dataclass
class Answer:
    """The entries of every data group and of each of its cuts (:func:`answer`)."""

    entries: list[Entry] = field(default_factory=list)

    def unseparable(self) -> list[dict]:
        """The data groups whose test split cannot separate their configurations."""
        return [e.group for e in self.entries if e.cut is None and not e.separable]

    def table(self, per_cut: bool = False) -> pd.DataFrame:
        """One row per data group (``per_cut``: per cut), the answer first: the group, each side's
        configuration, test accuracy and training seconds, the difference's interval and the verdict; then each
        side's validation accuracy, p, Holm's p, McNemar's p, the kind of comparison and the oracle."""
        rows = []
        for e in self.entries:
            if (e.cut is not None) != per_cut:
                continue
            c = e.comparison
            rows.append({
                "dataset": e.group["dataset"], "n_train": _int(e.group["n_train"]), "n_val": _int(e.group["n_val"]),
                "n_test": _int(e.group["n_test"]), **({"cut": e.cut} if per_cut else {}),
                **_side("gradient-free", e.gf), **_side("backprop", e.bp),
                "gf − bp, points [95% interval]": c.interval() if c else "",
                "p": f"{c.p:.3g}" if c else "", "p (Holm)": f"{c.p_holm:.3g}" if c and not np.isnan(c.p_holm) else "",
                "McNemar p (largest over seed pairs)": f"{c.mcnemar:.3g}" if c and not np.isnan(c.mcnemar) else "",
                "comparison": ("paired" if c.kind == PAIRED else "unpaired") if c else "",
                "verdict": e.verdict(),
                "oracle: best on test (not a selection)": e.oracle})
        table = pd.DataFrame(rows)
        first = [c for c in ANSWER_FIRST if c in table.columns]
        return table[first + [c for c in table.columns if c not in first]]

    def lines(self) -> list[str]:
        """One sentence per data group: the answer, for the report's top and ``gradfree compare``."""
        out = []
        for e in self.entries:
            if e.cut is not None:
                continue
            where = (f"{e.group['dataset']}, {_int(e.group['n_train'])} training / {_int(e.group['n_val'])} "
                     f"validation / {_int(e.group['n_test'])} test images")
            if e.gf is None or e.bp is None:
                missing = "gradient-free" if e.gf is None else "backprop"
                what = "configuration with a validation accuracy" if e.has[missing] else "cell"
                out.append(f"{where}: no {missing} {what}; nothing to compare.")
                continue
            chosen = (f"gradient-free {name(e.gf)} (test {e.gf['test_acc']:.2%}) against backprop {name(e.bp)} "
                      f"(test {e.bp['test_acc']:.2%}), each chosen on validation")
            if e.problem:
                out.append(f"{where}: {chosen}; not compared: {e.problem}")
            elif not e.separable:
                difference = f" ({e.comparison.interval()} points)" if e.comparison else ""
                out.append(f"{where}: {chosen}{difference}: the comparison cannot separate them: its "
                           f"{_int(e.group['n_test'])} test images cannot tell apart even the best and the worst "
                           f"configuration ({e.spread}); no winner and no speed-up is named.")
            else:
                c = e.comparison
                out.append(f"{where}: {chosen}: {c.interval()} points ({'paired' if c.kind == PAIRED else 'unpaired'}"
                           f", Holm p = {c.p_holm:.3g}): {e.verdict()}.")
            if len(e.machines) > 1:
                out[-1] += (f" Their times were measured on {len(e.machines)} CPU models ({'; '.join(e.machines)}): "
                            "no ratio of them is a speed-up.")
        return out


def _int(v) -> str:
    return "" if pd.isna(v) or v == -1 else f"{int(v)}"


def _side(label: str, config: pd.Series | None) -> dict:
    if config is None:
        return {label: "(none with a validation accuracy)", f"{label} val": "", f"{label} test": "",
                f"{label} train s": ""}
    return {label: name(config), f"{label} val": f"{config['val_acc']:.4f}", f"{label} test": f"{config['test_acc']:.4f}",
            f"{label} train s": _seconds(config)}


def _seconds(config: pd.Series) -> str:
    """The configuration's counted training time, said to be an upper bound where a seed of it was timed beside
    other work (:mod:`benchmarks.report.conditions`)."""
    if pd.isna(config["train_total_s"]):
        return ""
    busy = config.get("busy", 0.0)
    return f"{config['train_total_s']:.1f}" + (" (timed beside other work: an upper bound)" if busy > 0 else "")


def _compare(entry: Entry, gf: pd.DataFrame, bp: pd.DataFrame, folder: Path | None) -> None:
    entry.gf, entry.bp = choose(gf), choose(bp)
    entry.has = {"gradient-free": not gf.empty, "backprop": not bp.empty}
    best = oracle(pd.concat([gf, bp]))
    if best is not None:
        entry.oracle = f"{name(best)} ({best['test_acc']:.4f})"
    if entry.gf is None or entry.bp is None:
        return
    entry.machines = machines(pd.concat([rows_of(gf, entry.gf), rows_of(bp, entry.bp)]))
    try:
        entry.comparison = compare_configs(rows_of(gf, entry.gf), rows_of(bp, entry.bp), folder)
    except NotComparable as err:
        entry.problem = str(err)


def _separable(entry: Entry, cells: pd.DataFrame, folder: Path | None) -> None:
    """Whether the best and the worst configuration of ``cells`` (by test accuracy) differ beyond a tie."""
    agg = aggregate(cells, ["test_acc"]).dropna(subset=["test_acc"])
    if len(agg) < 2:
        return
    hi, lo = agg.loc[agg["test_acc"].idxmax()], agg.loc[agg["test_acc"].idxmin()]
    try:
        c = compare_configs(rows_of(cells, hi), rows_of(cells, lo), folder)
    except NotComparable:
        return
    if c.verdict() == TIE:
        entry.separable = False
        entry.spread = (f"{name(hi)} {hi['test_acc']:.2%} against {name(lo)} {lo['test_acc']:.2%}: "
                        f"{c.interval()} points")


def answer(finals: pd.DataFrame, folder: str | Path | None = None) -> Answer:
    """Every data group's and every cut's entry, with Holm's correction over all of them. ``folder``: the
    results folder, where the kept predictions are (None: unpaired everywhere)."""
    folder = Path(folder) if folder is not None else None
    result = Answer()
    for group, cells in data_groups(finals):
        sides = split_sides(cells)
        gf, bp = sides[GRADIENT_FREE], sides[BACKPROP]
        if gf.empty and bp.empty:
            continue
        whole = Entry(group, None, None, None)
        _compare(whole, gf, bp, folder)
        _separable(whole, pd.concat([gf, bp]), folder)
        result.entries.append(whole)
        cuts = set(gf["cut"].dropna()) & set(bp["cut"].dropna()) - {""}
        backbone = dict(zip(gf["cut"], gf["backbone"]))
        for cut in sorted(cuts, key=lambda c: (cut_index(backbone[c], c), c)):  # input side first
            entry = Entry(group, cut, None, None, separable=whole.separable)
            _compare(entry, gf[gf["cut"] == cut], bp[bp["cut"] == cut], folder)
            result.entries.append(entry)
    compared = [e for e in result.entries if e.comparison is not None]
    for e, p in zip(compared, holm([e.comparison.p for e in compared])):
        e.comparison.p_holm = float(p)
    return result
