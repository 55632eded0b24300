"""The answer: per data group (and per cut), each side chosen on validation, compared on test with an
interval, a test and a correction for multiplicity, before anything is called a win.

* **Selection** (:func:`choose`): each side's answer is its configuration (mean over seeds, per
  :data:`benchmarks.report.tables.GROUP`) with the best mean *validation* accuracy; the earlier one in the
  report's order on ties. The test split chooses nothing: the configuration best on test appears
  only as the *oracle*, labelled so, never in a verdict.
* **Paired comparison** (cells whose test predictions were kept, :mod:`benchmarks.harness.predictions`):
  both sides must have predicted the same test images (same ``ids``), else they are not paired.
  The 95 % interval of the accuracy difference (gradient-free minus backprop) is a bootstrap over
  test images and seeds (:func:`paired_bootstrap`: the images resampled jointly for both sides,
  the seeds within each side), and its p-value the same bootstrap's: the difference over its standard
  error, two-sided (so that an interval and its p tell one story, seeds included). McNemar's exact
  mid-p test (:func:`mcnemar`) is shown beside it for reference: it sees one trained model per side,
  so it is computed for every pairing of the two sides' seeds and the largest p is shown (a majority
  vote over seeds instead drops the images the seeds disagree on, a quarter of them at 500 images,
  and came out at p = 1e-9 for a difference whose interval held 0).
* **Unpaired fallback** (older results, no predictions kept): a normal interval from the binomial
  standard error of each side's accuracy on its n test images plus its spread over seeds
  (:func:`unpaired_interval`), and the matching two-sided z-test; labelled as such.
* **Holm** (:func:`holm`) over the whole family of comparisons in the report (every data group and
  every cut), at level :data:`ALPHA`. Verdict: ``tie`` when the interval contains 0 or the
  Holm-adjusted p-value is not below :data:`ALPHA`; else ``gradient-free ahead`` or ``backprop
  ahead``.
* **Cannot separate** (:func:`separable`): when even the best and the worst configuration of a data
  group (by test accuracy, over both sides) are a tie by the same interval, its test split is too
  small to tell any two configurations apart; the report then names no winner and no speed-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks.harness.predictions import read_predictions
from benchmarks.report.tables import GROUP, aggregate

#: Family-wise error rate of the verdicts, and the interval's coverage.
ALPHA = 0.05
LEVEL = 0.95
N_BOOT = 2000
TIE, GF_AHEAD, BP_AHEAD = "tie", "gradient-free ahead", "backprop ahead"
PAIRED, UNPAIRED = "paired (bootstrap over test images and seeds)", \
    "unpaired (binomial standard errors: no kept predictions)"


# ----------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------


def mcnemar(b: int, c: int) -> tuple[float, float]:
    """(exact, mid-p) two-sided p-values of McNemar's test for ``b`` and ``c`` discordant pairs
    (``b``: the first side right and the second wrong; ``c`` the reverse)."""
    n, k = int(b) + int(c), min(int(b), int(c))
    if n == 0:
        return 1.0, 1.0
    exact = min(1.0, 2.0 * stats.binom.cdf(k, n, 0.5))
    mid = min(1.0, 2.0 * stats.binom.cdf(k, n, 0.5) - stats.binom.pmf(k, n, 0.5))
    return float(exact), float(mid)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is no member of the family)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
                     level: float = LEVEL) -> tuple[float, float, float, float]:
    """(difference, low, high, p): the mean accuracy of side a minus side b, the percentile interval of a
    bootstrap resampling the test images jointly for both sides and each side's seeds, and the two-sided p
    of the difference over that bootstrap's standard error.

    ``correct_a: (seeds_a, n_images)`` and ``correct_b: (seeds_b, n_images)``, booleans over the same
    images in the same order."""
    a, b = np.atleast_2d(correct_a).astype(float), np.atleast_2d(correct_b).astype(float)
    n = a.shape[1]
    diff = float(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, n_boot, 250):
        size = min(250, n_boot - start)
        seeds_a = rng.multinomial(len(a), np.full(len(a), 1.0 / len(a)), size=size) / len(a)
        seeds_b = rng.multinomial(len(b), np.full(len(b), 1.0 / len(b)), size=size) / len(b)
        per_image = seeds_a @ a - seeds_b @ b  # (size, n): each draw's seed-mean difference per image
        images = rng.integers(0, n, size=(size, n))  # the same images for both sides
        draws.append(np.take_along_axis(per_image, images, axis=1).mean(axis=1))
    draws = np.concatenate(draws)
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    se = float(draws.std(ddof=1))
    p = float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else (1.0 if diff == 0 else 0.0)
    return diff, float(low), float(high), p


def accuracy_variance(acc, n: int) -> tuple[float, float]:
    """(mean, variance of the mean) of per-seed accuracies ``acc`` on ``n`` test images: the binomial
    variance on the images plus the variance over seeds divided by their number."""
    acc = np.asarray(acc, dtype=float)
    p = acc.mean()
    spread = acc.var(ddof=1) / len(acc) if len(acc) > 1 else 0.0
    return float(p), float(p * (1 - p) / max(n, 1) + spread)


def unpaired_interval(acc_a, acc_b, n_a: int, n_b: int, level: float = LEVEL) -> tuple[float, float, float, float]:
    """(difference, low, high, p): mean of ``acc_a`` minus mean of ``acc_b`` (per-seed accuracies on
    ``n_a`` and ``n_b`` test images), with a normal interval whose variance is each side's
    :func:`accuracy_variance`, and a z-test's p."""
    pa, va = accuracy_variance(acc_a, n_a)
    pb, vb = accuracy_variance(acc_b, n_b)
    diff, se = float(pa - pb), float(np.sqrt(va + vb))
    if se == 0:
        return diff, diff, diff, (1.0 if diff == 0 else 0.0)
    z = stats.norm.ppf((1 + level) / 2)
    return diff, diff - z * se, diff + z * se, float(2 * stats.norm.sf(abs(diff) / se))


# ----------------------------------------------------------------------------
# Selection and comparison of configurations
# ----------------------------------------------------------------------------


def choose(rows: pd.DataFrame) -> pd.Series | None:
    """The configuration of ``rows`` (final rows) with the best mean validation accuracy (the first in
    the report's order on ties), aggregated over seeds; None when none has a validation accuracy."""
    if rows.empty:
        return None
    columns = ["val_acc", "test_acc", "train_total_s", "train_plus_tune_s"] + [c for c in ("busy",) if c in rows]
    agg = aggregate(rows, columns).dropna(subset=["val_acc"])
    return None if agg.empty else agg.loc[agg["val_acc"].idxmax()]


def oracle(rows: pd.DataFrame) -> pd.Series | None:
    """The configuration best on *test*: for reference only, never a selection."""
    agg = aggregate(rows, ["test_acc"]).dropna(subset=["test_acc"]) if not rows.empty else pd.DataFrame()
    return None if agg.empty else agg.loc[agg["test_acc"].idxmax()]


def rows_of(rows: pd.DataFrame, config: pd.Series) -> pd.DataFrame:
    """The seeds' rows of one aggregated configuration."""
    mask = pd.Series(True, index=rows.index)
    for c in [*GROUP, "data_fingerprint"]:
        mask &= rows[c].fillna("").astype(str) == str("" if pd.isna(config[c]) else config[c])
    return rows[mask]


def name(config: pd.Series) -> str:
    """``method: config`` of an aggregated configuration, with `` @ cut`` when it has a cut."""
    return f"{config['method']}: {config['config']}" + (f" @ {config['cut']}" if config["cut"] else "")


class NotComparable(ValueError):
    """Two configurations that cannot be compared (no test accuracy, no number of test images...)."""


class NotPaired(NotComparable):
    """The two sides' kept predictions are not on the same test images."""


def _correct(rows: pd.DataFrame, folder: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids sorted, correct (seeds, n)) from the kept predictions of every row, or None when any is missing;
    :class:`NotPaired` when the seeds' test images differ."""
    if folder is None:
        return None
    ids, correct = None, []
    for key, run in zip(rows["cell_key"], rows["run_id"]):
        p = read_predictions(folder, key, run)
        if p is None:
            return None
        order = np.argsort(p.ids, kind="stable")
        if ids is None:
            ids = p.ids[order]
        elif len(p.ids) != len(ids) or not np.array_equal(p.ids[order], ids):
            raise NotPaired(f"the seeds of {key} predicted other test images than their configuration's first")
        correct.append(p.correct[order])
    return (ids, np.array(correct)) if ids is not None else None


@dataclass
class Comparison:
    """Side a minus side b (gradient-free minus backprop in a verdict)."""

    diff: float
    low: float
    high: float
    p: float
    kind: str
    n_test: int
    p_holm: float = float("nan")
    mcnemar: float = float("nan")  # paired only: McNemar's mid-p, the largest over the pairings of seeds

    @property
    def contains_zero(self) -> bool:
        """Whether the interval ``[low, high]`` holds 0."""
        return self.low <= 0 <= self.high

    def verdict(self, ahead: str = GF_AHEAD, behind: str = BP_AHEAD) -> str:
        """``TIE`` when the interval holds 0 or p (Holm's once set) is not below :data:`ALPHA`; else ``ahead``
        when a is ahead, ``behind`` when b is."""
        p = self.p_holm if not np.isnan(self.p_holm) else self.p
        if self.contains_zero or not p < ALPHA:
            return TIE
        return ahead if self.diff > 0 else behind

    def interval(self) -> str:
        """The difference and its interval in signed points: ``+1.23 [+0.45, +2.01]``."""
        return f"{100 * self.diff:+.2f} [{100 * self.low:+.2f}, {100 * self.high:+.2f}]"


def compare_configs(rows_a: pd.DataFrame, rows_b: pd.DataFrame, folder: Path | None) -> Comparison:
    """Configuration a against b (their seeds' final rows): paired when both kept their predictions on
    the same images (:class:`NotPaired` when they kept them on different images), else unpaired."""
    a, b = _correct(rows_a, folder), _correct(rows_b, folder)
    if a is not None and b is not None:
        if len(a[0]) != len(b[0]) or not np.array_equal(a[0], b[0]):
            raise NotPaired("the two sides' kept predictions are on different test images (their ids differ): "
                            "they cannot be paired; run both on the same data.")
        diff, low, high, p = paired_bootstrap(a[1], b[1])
        pairs = [mcnemar(int((x & ~y).sum()), int((~x & y).sum()))[1] for x in a[1] for y in b[1]]
        return Comparison(diff, low, high, p, PAIRED, len(a[0]), mcnemar=max(pairs))
    acc_a, acc_b = rows_a["test_acc"].dropna(), rows_b["test_acc"].dropna()
    n_a, n_b = rows_a["n_test"].max(), rows_b["n_test"].max()
    if acc_a.empty or acc_b.empty or not (n_a > 0 and n_b > 0):
        raise NotComparable("no test accuracy or no number of test images to compare")
    diff, low, high, p = unpaired_interval(acc_a, acc_b, int(n_a), int(n_b))
    return Comparison(diff, low, high, p, UNPAIRED, int(min(n_a, n_b)))
