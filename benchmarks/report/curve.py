"""The answer as a learning curve: per dataset, each side's validation-chosen configuration at every
training-set size the results hold, and the crossover between the sides.

Built on :func:`benchmarks.report.answer.answer` (its entries are already chosen on validation and
compared with Holm's correction over the whole family), so the curve adds no selection and no test of
its own:

* :func:`curve_table`: one row per dataset x training-set size x side: the chosen configuration, its
  test accuracy with a 95 % band (binomial on the test images plus the spread over seeds, as
  :func:`benchmarks.report.verdict.accuracy_variance`), counted training time, the model kept and the
  measured inference time per test image (``predict_s``: the whole pipeline, a kernel scoring against
  its kept training rows, which is what a user deploys; blank for trainers' rows written before they
  timed their test scoring apart from evaluation), and ``timing``: how many seeds were timed beside
  other work (:mod:`benchmarks.report.conditions`), blank where none was; ``cpu``: the CPU models it ran
  on (times from two make no ratio: the figure's caption says so).
* :func:`crossovers`: per dataset with two sizes or more, where the lead changes hands: the interval
  between the last size where the side ahead at the small sizes is significantly ahead and the first
  where the other side is; else "none detected in the range", with the sizes of each kind named.
* :func:`figure`: accuracy, training time, model size and inference time against the training-set
  size, both sides' chosen configurations, with bands.
* :func:`every_configuration`: every configuration's test accuracy against the size
  (:func:`configurations_by_size`), the chosen ones ringed: the method under test beside its controls,
  for reading, not choosing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks.report.answer import Answer, Entry
from benchmarks.report.conditions import busy_note, machines
from benchmarks.report.plots import Figure, legend_outside, pyplot, safe_name, side_palette, to_png
from benchmarks.report.tables import aggregate, side as side_of
from benchmarks.report.verdict import BP_AHEAD, GF_AHEAD, LEVEL, accuracy_variance, name, rows_of

SIDES = {"gradient-free": "gf", "backprop": "bp"}
CURVE_NOTE = (f"Each side's configuration chosen on validation at each training-set size (the answer above), "
              f"its test accuracy with a {LEVEL:.0%} band (the binomial error on the test images plus the spread "
              "over seeds), its counted training time, the model it keeps and its inference time per test image "
              "(the whole pipeline, measured on this machine: a kernel scores against its kept training rows). "
              "Crossover: between the last size where the side ahead at the small sizes is significantly ahead "
              "and the first where the other side is (after Holm's correction over every comparison of the "
              "report); a tie is no lead.")


def _curve_entries(found: Answer) -> dict[str, list[Entry]]:
    """The whole-group entries with a positive training-set size, per dataset, by size."""
    out: dict[str, list[Entry]] = {}
    for e in found.entries:
        n = e.group["n_train"]
        if e.cut is None and pd.notna(n) and n > 0:
            out.setdefault(str(e.group["dataset"]), []).append(e)
    return {d: sorted(es, key=lambda e: e.group["n_train"]) for d, es in out.items()}


def curve_table(found: Answer, finals: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset x training-set size x side with a chosen configuration (columns in the module's
    docstring); empty when no dataset has a training-set size."""
    rows = []
    for dataset, entries in _curve_entries(found).items():
        for e in entries:
            for side, attr in SIDES.items():
                config = getattr(e, attr)
                if config is None:
                    continue
                mine = rows_of(finals, config)
                n_test = int(mine["n_test"].max()) if mine["n_test"].notna().any() else 0
                half = _half_band(mine)
                per_image = mine["predict_s"].mean() / n_test if n_test > 0 else np.nan
                rows.append({"dataset": dataset, "n_train": int(e.group["n_train"]), "side": side,
                             "configuration": name(config), "seeds": int(config["seeds"]),
                             "val_acc": float(config["val_acc"]), "test_acc": float(config["test_acc"]),
                             "band_low": float(config["test_acc"] - half), "band_high": float(config["test_acc"] + half),
                             "train_s": float(mine["train_total_s"].mean()), "model_mb": float(mine["model_bytes"].mean()) / 1e6,
                             "inference_ms_per_image": 1e3 * float(per_image), "verdict": e.verdict(),
                             "timing": busy_note(mine), "cpu": "; ".join(machines(mine))})
    return pd.DataFrame(rows)


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`curve_table` as the report shows it: accuracies to 4 decimals, the band as one interval, seconds
    to 0.1, megabytes to 0.01, milliseconds to 0.001 (the figure draws the numbers themselves)."""
    if table.empty:
        return table
    out = table.drop(columns=["band_low", "band_high"])
    out.insert(out.columns.get_loc("test_acc") + 1, "95% band",
               [f"[{lo:.4f}, {hi:.4f}]" if pd.notna(lo) else "" for lo, hi in zip(table["band_low"], table["band_high"])])
    for column, digits in (("val_acc", 4), ("test_acc", 4), ("train_s", 1), ("model_mb", 2),
                           ("inference_ms_per_image", 3)):
        out[column] = [f"{v:.{digits}f}" if pd.notna(v) else "" for v in table[column]]
    return out


@dataclass
class Crossover:
    """Where the lead changes hands along one dataset's sizes (``low``, ``high``: the sizes bracketing it,
    None when none was detected)."""

    dataset: str
    sizes: list[int]
    verdicts: list[str]
    low: int | None = None
    high: int | None = None
    first: str = ""  # the side ahead at the smallest size where either side is ahead
    then: str = ""  # the side ahead after the crossover

    def line(self) -> str:
        """One sentence: where the lead changed hands, or that it did not, with the sizes each side led at."""
        span = f"{self.sizes[0]:,}–{self.sizes[-1]:,} training images"
        where = "; ".join(f"{n:,}: {v or 'no comparison'}" for n, v in zip(self.sizes, self.verdicts))
        if self.low is None:
            return f"{self.dataset}: crossover: none detected in the range ({span}; {where})."
        again = [n for n, v in zip(self.sizes, self.verdicts) if n > self.high and v == self.first]
        tail = f"; but {self.first} again at {', '.join(f'{n:,}' for n in again)}" if again else ""
        return (f"{self.dataset}: crossover between {self.low:,} and {self.high:,} training images: {self.first} "
                f"up to {self.low:,}, {self.then} from {self.high:,} ({where}){tail}.")


def crossovers(found: Answer) -> list[Crossover]:
    """Per dataset with two training-set sizes or more, where the significant lead passes from one side
    to the other (:class:`Crossover`)."""
    out = []
    for dataset, entries in _curve_entries(found).items():
        if len(entries) < 2:
            continue
        sizes = [int(e.group["n_train"]) for e in entries]
        verdicts = [e.verdict() for e in entries]
        c = Crossover(dataset, sizes, verdicts)
        wins = [(n, v) for n, v in zip(sizes, verdicts) if v in (GF_AHEAD, BP_AHEAD)]
        if wins:
            c.first = wins[0][1]
            c.then = BP_AHEAD if c.first == GF_AHEAD else GF_AHEAD
            later = [n for n, v in wins if v == c.then]
            if later:
                c.high = later[0]
                c.low = max(n for n, v in wins if v == c.first and n < c.high)
        out.append(c)
    return out


#: The panels whose values are times: a point timed beside other work is drawn hollow there.
TIMED = ("train_s", "inference_ms_per_image")
#: The panels of :func:`figure`: (column, axis label, log scale).
PANELS = [("test_acc", "test accuracy", False), ("train_s", "counted training time (s, log)", True),
          ("model_mb", "model kept (MB, log)", True), ("inference_ms_per_image", "inference (ms per image, log)", True)]


def figure(table: pd.DataFrame, dataset: str, crossover: Crossover | None = None) -> Figure:
    """Four panels against the training-set size (log) for ``dataset``: each side's validation-chosen
    configuration, the accuracy with its band and the ``crossover``'s interval shaded; a note instead when
    fewer than two sizes."""
    fig_info = Figure("learning_curve__" + safe_name(dataset), f"Learning curve ({dataset})")
    rows = table[table["dataset"] == dataset] if not table.empty else table
    if rows.empty or rows["n_train"].nunique() < 2:
        fig_info.note = "fewer than two training-set sizes: no curve."
        return fig_info
    plt, sns = pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    colours = {"gradient-free": sns.color_palette("crest", 3)[1], "backprop": sns.color_palette("flare", 3)[1]}
    sizes = sorted(rows["n_train"].unique())
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for ax, (column, label, log) in zip(axes.flat, PANELS):
        for side, mine in rows.sort_values("n_train").groupby("side", sort=False):
            ax.plot(mine["n_train"], mine[column], marker="o", color=colours[side], label=side)
            if column == "test_acc":
                ax.fill_between(mine["n_train"], mine["band_low"], mine["band_high"], color=colours[side], alpha=0.2)
            busy = mine[mine["timing"].astype(bool)] if column in TIMED and "timing" in mine else mine.iloc[:0]
            ax.plot(busy["n_train"], busy[column], "o", markerfacecolor="white", color=colours[side])
        if column == "test_acc" and crossover is not None and crossover.low is not None:
            ax.axvspan(crossover.low, crossover.high, color="0.92", zorder=0, label="crossover")
        _size_axis(ax, sizes)
        if log and rows[column].gt(0).any():
            values = rows[column][rows[column] > 0]
            ax.set_yscale("log")  # at least a factor 4 shown, so that a flat line looks flat
            middle = np.sqrt(values.min() * values.max())
            span = max(np.sqrt(values.max() / values.min()) * 1.3, 2.0)
            ax.set_ylim(middle / span, middle * span)
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(label)
    legend_outside(axes.flat[1])
    if crossover is not None and crossover.low is not None:
        axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(fig_info.title)
    fig_info.png = to_png(fig)
    fig_info.caption = (f"Each side's configuration chosen on validation at each size; accuracy with its {LEVEL:.0%} "
                        "band (test images and seeds)"
                        + (", the crossover's interval shaded" if crossover is not None and crossover.low else "")
                        + _conditions(rows)
                        + ". The configuration may change from one size to the next: the table below names it.")
    return fig_info


def _size_axis(ax, sizes) -> None:
    """A log x axis labelled at the training-set sizes measured, as plain numbers."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training images (log)")


def configurations_by_size(finals: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Every configuration of ``dataset`` at each training-set size: its mean test accuracy over seeds and
    ``half``, the half-width of its 95 % band (binomial on the test images plus the spread over seeds, as
    :func:`benchmarks.report.verdict.accuracy_variance`), ``series`` naming it as the tables do (with its
    cut where the results hold several)."""
    rows = finals[(finals["dataset"] == dataset) & (finals["n_train"] > 0)] if not finals.empty else finals
    agg = aggregate(rows, ["test_acc", "n_test"]).dropna(subset=["test_acc"]) if not rows.empty else rows
    if agg.empty:
        return pd.DataFrame(columns=["series", "method", "n_train", "test_acc", "half"])
    one_cut = agg["cut"].replace("", np.nan).nunique() <= 1  # (a from-scratch trainer has none)
    agg["series"] = [f"{r['method']}: {r['config']}" if one_cut else name(r) for _, r in agg.iterrows()]
    agg["half"] = [_half_band(rows_of(rows, r)) for _, r in agg.iterrows()]
    return agg


def _half_band(mine: pd.DataFrame) -> float:
    """The half-width of the 95 % band of one configuration's seeds' test accuracy (``mine``: their rows):
    :func:`benchmarks.report.verdict.accuracy_variance` on its test images; NaN without either."""
    acc = mine["test_acc"].dropna()
    n_test = int(mine["n_test"].max()) if mine["n_test"].notna().any() else 0
    return stats.norm.ppf((1 + LEVEL) / 2) * np.sqrt(accuracy_variance(acc, n_test)[1]) if len(acc) and n_test > 0 \
        else np.nan


def every_configuration(finals: pd.DataFrame, table: pd.DataFrame, dataset: str) -> Figure:
    """Every configuration's test accuracy against the training-set size for ``dataset``
    (:func:`configurations_by_size`), one line per configuration as the report's tables name it, the two
    sides in two hue families; ringed: each side's configuration chosen on validation at that size
    (``table``, :func:`curve_table`). Where each configuration stands, the method under test beside its
    controls: nothing is chosen on it."""
    fig_info = Figure("every_configuration__" + safe_name(dataset), f"Every configuration against the "
                      f"training-set size ({dataset})")
    agg = configurations_by_size(finals, dataset)
    if agg["n_train"].nunique() < 2:
        fig_info.note = "fewer than two training-set sizes: no curve."
        return fig_info
    plt, sns = pyplot()
    palette = side_palette(agg["series"], agg["method"], sns)
    markers, taken = {}, {}  # within a side, each configuration its own marker (its hues are close)
    for series, method in dict(zip(agg["series"], agg["method"])).items():
        n = taken[side_of(method)] = taken.get(side_of(method), -1) + 1
        markers[series] = "osD^vP*Xph<>"[n % 12]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for series, mine in agg.groupby("series", sort=False):
        mine = mine.sort_values("n_train")
        ax.errorbar(mine["n_train"], mine["test_acc"], yerr=mine["half"], marker=markers[series],
                    color=palette[series], label=series, capsize=2, markersize=5, linewidth=1.2)
    chosen = table[table["dataset"] == dataset] if not table.empty else table
    if not chosen.empty:
        ax.scatter(chosen["n_train"], chosen["test_acc"], s=180, facecolors="none", edgecolors="black",
                   linewidths=1.2, zorder=5, label="chosen on validation (the curve)")
    _size_axis(ax, sorted(agg["n_train"].unique()))
    ax.set_ylabel("test accuracy")
    ax.set_title(fig_info.title)
    legend_outside(ax)
    fig_info.png = to_png(fig)
    fig_info.caption = (f"Test accuracy of every configuration, mean over seeds with its {LEVEL:.0%} band (test images "
                        "and seeds); blue-green gradient-free, orange-red backprop; ringed: each side's configuration "
                        "chosen on validation at that size. A configuration whose budget a suite sets by size "
                        "(epochs, patience) is named, and drawn, apart at each size. For reading where each stands, "
                        "the method under test beside its controls: nothing is chosen here.")
    return fig_info


def curve_figures(finals: pd.DataFrame, table: pd.DataFrame, found: list[Crossover]) -> list[Figure]:
    """For each dataset of ``found`` (:func:`crossovers`): its :func:`figure`, then :func:`every_configuration`."""
    return [f for c in found for f in (figure(table, c.dataset, c), every_configuration(finals, table, c.dataset))]


def _conditions(rows: pd.DataFrame) -> str:
    """The caption's clauses on how the curve's times were measured: hollow points timed beside other work,
    and the CPU models when more than one."""
    timing = rows["timing"] if "timing" in rows else pd.Series(dtype=str)
    busy = ". Hollow: timed beside other work (an upper bound)" if timing.astype(bool).any() else ""
    cpus = sorted({c for cell in rows.get("cpu", ()) for c in str(cell).split("; ") if c})
    return busy + ((f". Its times were measured on {len(cpus)} CPU models ({'; '.join(cpus)}): the table below "
                    "says which; compare times within one") if len(cpus) > 1 else "")
