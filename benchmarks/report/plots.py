"""The report's figures (seaborn, PNG), each from the rows :mod:`benchmarks.report.tables` counts.

Every function takes the rows it needs and returns a :class:`Figure` holding
its PNG bytes; when the rows lack what a plot needs (no epoch rows, one point,
no sizes...) it returns a figure with ``png=None`` and a ``note`` that the
report prints instead of the image, rather than failing. Nothing here writes a
file: the report (:mod:`benchmarks.report.reportdir`) names and writes them, so that a
report is replaced whole or not at all. A figure's ``name`` is a safe file-name
stem whatever the data's values (:func:`safe_name`).

Which side a method is drawn on (backprop curves, gradient-free points) comes from
:func:`benchmarks.report.tables.split_sides`, that is from the registry's ``is_backprop``.
matplotlib and seaborn are imported when a figure is drawn, not with the module.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmarks.report.comparison import data_groups, in_group, pareto_front, targets, with_final
from benchmarks.report.tables import BACKPROP, COUNTED_PHASES, GRADIENT_FREE, GROUP, aggregate, cut_index, side, split_sides


@dataclass
class Figure:
    """One figure of the report: ``name``, ``title``, ``caption`` and its PNG bytes, or ``png=None`` and a
    ``note`` printed in its place."""

    name: str  # a file-name stem: letters, digits, "_" and "-" only
    title: str
    caption: str = ""
    png: bytes | None = None
    note: str = ""


def safe_name(value: str, limit: int = 40) -> str:
    """``value`` as a file-name stem: itself when made of letters, digits, "_" and "-" only, else a slug
    of it plus a short hash of the whole value, so that two values never share a name
    (``imagefolder:/data/x`` -> ``imagefolder-data-x-<8 hex digits>``)."""
    value = str(value)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", value).strip("-")[:limit]
    if slug == value and value:
        return value
    return "-".join(filter(None, [slug, hashlib.sha256(value.encode()).hexdigest()[:8]]))


def pyplot():
    """(matplotlib.pyplot, seaborn), imported on first use, off-screen, with the report's theme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams["text.parse_math"] = False  # a "$" in a folder or class name is text, not a formula
    return plt, sns


def _series(df: pd.DataFrame) -> pd.Series:
    """One legend entry per method x config x precision (cuts become points along a line)."""
    parts = pd.Series([c if c.startswith(m) else f"{m}: {c}" for m, c in zip(df["method"], df["config"])],
                      index=df.index)
    multi_precision = df["precision"].replace("", np.nan).dropna().nunique() > 1
    return parts + np.where(multi_precision & (df["precision"] != ""), " " + df["precision"], "")


def plain_decades(axis) -> None:
    """Label a log axis at its decades only, as plain numbers (0.1, 10, 1000): matplotlib's default
    labels are formulas, and formulas are off here (a "$" in a folder or class name is text)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def log_x(ax) -> None:
    """A log x axis labelled at its decades only (minor labels overlap on short ranges)."""
    ax.set_xscale("log")
    plain_decades(ax.xaxis)


def side_palette(series: pd.Series, methods: pd.Series, sns) -> dict[str, tuple]:
    """A colour per series, the two sides in two hue families (gradient-free blue-green, backprop
    orange-red, a method this gradfree cannot place grey), so that a glance tells them apart."""
    names = list(dict.fromkeys(series))
    sides = {name: side(m) for name, m in zip(series, methods)}
    families = {GRADIENT_FREE: "crest", BACKPROP: "flare"}
    palette = {}
    for which, cmap in [*families.items(), ("other", "Greys")]:
        members = [n for n in names if (sides[n] if sides[n] in families else "other") == which]
        colours = sns.color_palette(cmap, max(len(members), 1) + (1 if which == "other" else 0))
        palette.update({n: colours[i + (1 if which == "other" else 0)] for i, n in enumerate(members)})
    return palette


def legend_outside(ax, **kwargs) -> None:
    """The legend beside the axes, never over the data."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def to_png(fig) -> bytes:
    """The PNG bytes of ``fig``, which is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def versus_size(finals: pd.DataFrame, y: str, name: str, title: str, ylabel: str) -> Figure:
    """``y`` against model size, one line per configuration through its cut layers (mean ± std over seeds)."""
    fig_info = Figure(name, title)
    if finals.empty or finals["model_bytes"].notna().sum() == 0 or finals[y].notna().sum() == 0:
        fig_info.note = f"no finished cell has both model_bytes and {y}."
        return fig_info
    plt, sns = pyplot()
    agg = aggregate(finals, [y, "model_bytes"]).dropna(subset=[y, "model_bytes"])
    agg["series"] = _series(agg)
    agg["cut_index"] = [cut_index(b, c) for b, c in zip(agg["backbone"], agg["cut"])]
    agg = agg.sort_values(["series", "cut_index"])
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    sns.lineplot(data=agg, x=agg["model_bytes"] / 1e6, y=y, hue="series", style="method", markers=True,
                 dashes=False, sort=False, estimator=None, ax=ax, markersize=8,
                 palette=side_palette(agg["series"], agg["method"], sns))
    ax.errorbar(agg["model_bytes"] / 1e6, agg[y], yerr=agg[f"{y}_std"].fillna(0), fmt="none", ecolor="0.4",
                elinewidth=1, capsize=3)
    n_cuts = agg["cut"].replace("", np.nan).nunique()
    if 1 < n_cuts <= 24:
        for _, r in agg[agg["cut"] != ""].iterrows():
            ax.annotate(_short_cut(r["cut"]), (r["model_bytes"] / 1e6, r[y]),
                        fontsize=6, alpha=0.7, xytext=(3, 3), textcoords="offset points")
    log_x(ax)
    ax.set_xlabel("model size kept after training (MB, log scale)")
    ax.set_ylabel(ylabel)
    if y == "train_total_s":
        ax.set_yscale("log")
        plain_decades(ax.yaxis)
    ax.set_title(title)
    legend_outside(ax)
    fig_info.png = to_png(fig)
    fig_info.caption = (f"{ylabel} against the size of the model kept, mean ± std over seeds; "
                        + ("each line joins the cut layers of one configuration." if n_cuts > 1
                           else "one cut layer in these results, so one point per configuration."))
    return fig_info


def _short_cut(cut: str) -> str:
    return cut.replace("denseblock", "db").replace("denselayer", "l")


def versus_cut(finals: pd.DataFrame, name: str = "by_cut", where: str = "") -> Figure:
    """Training time and model size at each cut layer in depth order, one line per configuration (the
    seeds' Figure 6), and test accuracy below them unless every cell ran on random weights (whose
    accuracies mean nothing). Drawn when the results hold three cuts or more."""
    fig_info = Figure(name, "Training time and model size by cut layer" + where)
    agg = aggregate(finals, ["train_total_s", "model_bytes", "test_acc"]) if not finals.empty else pd.DataFrame()
    if not agg.empty:
        agg["cut_index"] = [cut_index(b, c) for b, c in zip(agg["backbone"], agg["cut"])]
        agg = agg[agg["cut_index"] >= 0]
    if agg.empty or agg["cut"].nunique() < 3:
        fig_info.note = "fewer than 3 cut layers in these results: the size plots show them."
        return fig_info
    cut_rows = finals[finals["cut"].fillna("").astype(str) != ""]
    random_weights = "weights" in cut_rows and cut_rows["weights"].astype(str).str.lower().eq("none").all()
    panels = [("train_total_s", "training time (s, log scale)", 1.0), ("model_bytes", "model kept (MB)", 1e-6)]
    if not random_weights:
        panels.append(("test_acc", "test accuracy", 1.0))
    plt, _ = pyplot()
    agg["series"] = _series(agg)
    order = agg.drop_duplicates("cut").sort_values("cut_index")["cut"].tolist()
    x_of = {c: i for i, c in enumerate(order)}
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.0 * len(panels)), sharex=True, squeeze=False)
    colours = plt.get_cmap("tab20").colors
    for ax, (col, label, scale) in zip(axes[:, 0], panels):
        ax.set_prop_cycle(color=colours)
        for series, rows in agg.groupby("series", sort=False):
            rows = rows.sort_values("cut_index").dropna(subset=[col])
            ax.errorbar([x_of[c] for c in rows["cut"]], rows[col] * scale, yerr=rows[f"{col}_std"].fillna(0) * scale,
                        marker="o", markersize=5, capsize=3, label=series)
        if col == "train_total_s":
            ax.set_yscale("log")
            plain_decades(ax.yaxis)
        ax.set_ylabel(label)
    bottom = axes[-1, 0]
    bottom.set_xticks(range(len(order)))
    bottom.set_xticklabels([_short_cut(c) for c in order], rotation=60, ha="right", fontsize=7)
    bottom.set_xlabel("cut layer, from the input side")
    axes[0, 0].set_title(fig_info.title + (" (random weights: time and size only)" if random_weights else ""))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    bottom.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.6), ncol=1)
    fig_info.png = to_png(fig)
    fig_info.caption = ("Counted training time and the size of the model kept at each cut layer, mean ± std over "
                        "seeds" + ("; every cell ran on random weights, so no accuracy is shown." if random_weights
                                   else ", and test accuracy."))
    return fig_info


#: The three fronts: (x column, file name, title, x label, what a point's x is).
PARETO = (
    ("train_total_s", "pareto_acc_vs_time", "Test accuracy vs training time (Pareto front)",
     "training time, counted phases (s, log scale)", "faster"),
    ("train_plus_tune_s", "pareto_acc_vs_time_with_tuning",
     "Test accuracy vs training + tuning time (Pareto front)",
     "training time + hyperparameter tuning on validation (s, log scale)", "cheaper to train and tune"),
    ("model_bytes", "pareto_acc_vs_size", "Test accuracy vs model size (Pareto front)",
     "model kept (bytes, log scale)", "smaller"),
)


def pareto(finals: pd.DataFrame, x: str = "train_total_s", name: str = "pareto_acc_vs_time",
           title: str = PARETO[0][2], xlabel: str = PARETO[0][3], better: str = "faster") -> Figure:
    """Test accuracy against ``x``, gradient-free and backprop apart, with the Pareto front drawn: the
    configurations that no ``better`` one matches in accuracy."""
    fig_info = Figure(name, title)
    agg = aggregate(finals, ["test_acc", x]).dropna(subset=["test_acc", x]) if not finals.empty else pd.DataFrame()
    if agg.empty:
        fig_info.note = f"no finished cell with both test_acc and {x}."
        return fig_info
    plt, sns = pyplot()
    agg["series"] = _series(agg)
    agg["side"] = [side(m) for m in agg["method"]]
    front = pareto_front(agg, x)
    cuts = agg["cut"].replace("", np.nan).dropna().nunique()
    agg["cut layer"] = [_short_cut(c) if c else "(none)" for c in agg["cut"]]
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    sns.scatterplot(data=agg, x=x, y="test_acc", hue="series", style="cut layer" if cuts > 1 else None, s=80,
                    ax=ax, palette=side_palette(agg["series"], agg["method"], sns))
    ax.errorbar(agg[x], agg["test_acc"], xerr=agg[f"{x}_std"].fillna(0), yerr=agg["test_acc_std"].fillna(0),
                fmt="none", ecolor="0.5", elinewidth=1, capsize=2)
    ax.step(front[x], front["test_acc"], where="post", color="black", lw=1.2, ls="--", label="Pareto front")
    ax.scatter(front[x], front["test_acc"], s=160, facecolors="none", edgecolors="black", lw=1.2)
    log_x(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_title(fig_info.title)
    legend_outside(ax)
    fig_info.png = to_png(fig)
    fig_info.caption = ("Each point is a configuration (mean ± std over seeds; colour: blue-green gradient-free, "
                        "orange-red backprop" + ("; marker: the cut layer" if cuts > 1 else "") + "); "
                        f"the dashed line and circled points are the Pareto front: {len(front)} configuration(s) "
                        f"that no {better} one matches in accuracy.")
    return fig_info


def time_breakdown(finals: pd.DataFrame, name: str = "time_breakdown",
                   title: str = "Training time per phase") -> Figure:
    """Stacked seconds per counted phase, one bar per configuration."""
    fig_info = Figure(name, title)
    phases = [p for p in COUNTED_PHASES if not finals.empty and finals[p].fillna(0).gt(0).any()]
    if not phases:
        fig_info.note = "no counted phase was recorded."
        return fig_info
    plt, _ = pyplot()
    agg = aggregate(finals, phases)
    multi_cut = agg["cut"].replace("", np.nan).nunique() > 1
    labels = _series(agg) + np.where(multi_cut & (agg["cut"] != ""), " @ " + agg["cut"], "")
    data = agg[phases].fillna(0).set_axis(labels.values)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(data) + 1.8))
    data.rename(columns=lambda c: c[:-2]).plot.barh(stacked=True, ax=ax, width=0.7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (mean over seeds)")
    ax.set_ylabel("")
    ax.set_title(fig_info.title)
    ax.legend(title="phase", fontsize=8)
    fig_info.png = to_png(fig)
    fig_info.caption = "Counted phases only (warm-up, evaluation and test prediction are not counted)."
    return fig_info


def time_to_accuracy_data(finals: pd.DataFrame, epochs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, points) of the time-to-accuracy plot: every epoch row with a time and a validation
    accuracy (only trainers write them: backprop, or a method this gradfree does not know), and the
    final rows of the gradient-free methods. A final row of an unknown method is no point: nothing
    says it is gradient-free."""
    curves = with_final(epochs, finals)  # each line ends at the model kept, validated as it is scored
    points = split_sides(finals)[GRADIENT_FREE]
    points = points.dropna(subset=["train_total_s", "val_acc"]) if not points.empty else points
    return curves, points


def time_to_accuracy(finals: pd.DataFrame, epochs: pd.DataFrame, name: str = "time_to_accuracy",
                     title: str = "Time to accuracy: backprop epochs vs gradient-free fits") -> Figure:
    """Validation accuracy after each epoch against cumulative training time, gradient-free points alongside."""
    fig_info = Figure(name, title)
    curves, gf = time_to_accuracy_data(finals, epochs)
    if curves.empty:
        fig_info.note = "no per-epoch rows (no backprop method in these results)."
        return fig_info
    plt, sns = pyplot()
    curves = curves.copy()
    curves["series"] = _series(curves)
    # One line per run of a cell (one cut, one seed): epochs of different cuts or seeds are never joined.
    curves["curve"] = curves["cell_key"].astype(str) + "/" + curves["run_id"].astype(str)
    both = pd.concat([curves[["series", "method"]], gf.assign(series=_series(gf))[["series", "method"]]
                      if not gf.empty else curves[["series", "method"]].iloc[:0]])
    palette = side_palette(both["series"], both["method"], sns)
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    sns.lineplot(data=curves, x="train_time_s", y="val_acc", hue="series", units="curve", estimator=None,
                 marker="o", ax=ax, sort=True, palette={k: palette[k] for k in curves["series"].unique()})
    if not gf.empty:
        gf = gf.copy()
        gf["series"] = _series(gf)
        sns.scatterplot(data=gf, x="train_total_s", y="val_acc", hue="series", marker="*", s=220, ax=ax,
                        palette={k: palette[k] for k in gf["series"].unique()}, legend=True)
    n_censored = 0
    for group, target, by in targets(finals):
        ax.axhline(target, color="0.3", ls=":", lw=1)
        ax.annotate(f"gradient-free target {target:.3f} ({by}, n_train={group['n_train']:.0f})", (0.01, target),
                    xycoords=("axes fraction", "data"), fontsize=7, va="bottom", color="0.3")
        mine = curves[in_group(curves, group)]
        for _, curve in mine.groupby(["cell_key", "run_id"]):
            if curve["val_acc"].max() < target - 1e-12:  # never reached: censored at its last epoch
                last = curve.loc[curve["train_time_s"].idxmax()]
                ax.scatter([last["train_time_s"]], [last["val_acc"]], marker="X", s=120, color="crimson",
                           zorder=5, label="censored (target not reached)" if not n_censored else None)
                n_censored += 1
    log_x(ax)
    ax.set_xlabel("cumulative training time (s, log scale)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(fig_info.title)
    legend_outside(ax)
    fig_info.png = to_png(fig)
    fig_info.caption = ("Lines: validation accuracy after each epoch of the backprop methods (one line per seed), "
                        "the last point the model kept, validated as it is scored (airbench94: with test-time "
                        "augmentation). "
                        "Stars: random features, at their whole training time, with their validation accuracy "
                        "at the selected alpha. Dotted: the mean validation accuracy of the gradient-free "
                        "configuration chosen on validation in each data group, the target; red crosses: "
                        f"{n_censored} curve(s) that never reached it (censored at their last epoch).")
    return fig_info


def make_all(finals: pd.DataFrame, epochs: pd.DataFrame) -> list[Figure]:
    """Every figure; one set per data group (dataset, training-set size...) when the results hold several,
    since a front or a target across two training-set sizes would compare cells that saw different data."""
    groups = list(data_groups(finals))
    if len(groups) <= 1:
        return _figure_set(finals, epochs, "", "")
    figures, used = [], set()
    for i, (group, rows) in enumerate(groups):
        n_train = "" if pd.isna(group["n_train"]) or group["n_train"] < 0 else f"{group['n_train']:.0f}"
        suffix = f"__{safe_name(group['dataset'])}" + (f"_n{n_train}" if n_train else "")
        suffix = suffix if suffix not in used else f"{suffix}_{i}"  # same size, other validation/test split
        used.add(suffix)
        where = f" ({group['dataset']}" + (f", {n_train} training images" if n_train else "") + ")"
        mine = epochs[in_group(epochs, group)] if not epochs.empty else epochs
        figures += _figure_set(rows, mine, suffix, where)
    return figures


def _figure_set(finals: pd.DataFrame, epochs: pd.DataFrame, suffix: str, where: str) -> list[Figure]:
    n_cuts = finals["cut"].fillna("").astype(str).replace("", np.nan).nunique() if not finals.empty else 0
    return [
        versus_size(finals, "test_acc", "acc_vs_size" + suffix,
                    "Test accuracy vs model size across cut layers" + where, "test accuracy"),
        versus_size(finals, "train_total_s", "time_vs_size" + suffix,
                    "Training time vs model size across cut layers" + where, "training time (s, log scale)"),
        *(pareto(finals, x, name + suffix, title + where, xlabel, better)
          for x, name, title, xlabel, better in PARETO),
        time_breakdown(finals, "time_breakdown" + suffix, "Training time per phase" + where),
        time_to_accuracy(finals, epochs, "time_to_accuracy" + suffix,
                         "Time to accuracy: backprop epochs vs gradient-free fits" + where),
        *([versus_cut(finals, "by_cut" + suffix, where)] if n_cuts >= 3 else []),  # a sweep over cuts
    ]


__all__ = ["Figure", "make_all", "safe_name", "GROUP"]
