"""``gradfree compare A B``: per-cell differences between two result sets; non-zero exit on regression.

``A`` is the reference (e.g. the committed ``results/quick``), ``B`` the
candidate. Cells are matched by ``cell_key``; cells whose keys differ (another
gradfree version, another data folder) are matched by their axes (method,
configuration, dataset, backbone, cut, precision, seed, image size, numbers of
images). For each pair: the accuracy difference ``B - A`` (``test_acc`` by
default) and the training-time ratio ``B / A``.

Exit status 1 when an accuracy dropped by more than ``--tolerance`` or a cell
that succeeded in A failed in B; time regressions (ratio above
``1 + --time-tolerance``) are warnings unless ``--fail-on-time``. Cells only in
one set are listed as warnings.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from benchmarks.report import load_results, split_rows

AXES = ["method", "config", "dataset", "backbone", "cut", "precision", "seed", "image_size", "n_train", "n_test"]


def _axes_key(df: pd.DataFrame) -> list[str]:
    return ["|".join(str(v) for v in row) for row in df[AXES].itertuples(index=False)]


def _match(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(pairs, only in A, only in B); pairs have columns suffixed _a and _b."""
    by_key = a.merge(b, on="cell_key", suffixes=("_a", "_b"))
    rest_a = a[~a["cell_key"].isin(by_key["cell_key"])]
    rest_b = b[~b["cell_key"].isin(by_key["cell_key"])]
    ra = rest_a.assign(_axes=_axes_key(rest_a)).drop_duplicates("_axes", keep="last")
    rb = rest_b.assign(_axes=_axes_key(rest_b)).drop_duplicates("_axes", keep="last")
    by_axes = ra.merge(rb, on="_axes", suffixes=("_a", "_b"))
    pairs = pd.concat([by_key.assign(matched="key"),
                       by_axes.assign(matched="axes", cell_key=by_axes["cell_key_a"])], ignore_index=True)
    only_a = ra[~ra["_axes"].isin(by_axes["_axes"])]
    only_b = rb[~rb["_axes"].isin(by_axes["_axes"])]
    return pairs, only_a, only_b


def compare(a_path, b_path, tolerance: float = 0.01, time_tolerance: float = 0.5, metric: str = "test_acc",
            fail_on_time: bool = False, out=None) -> int:
    """Print the comparison; return the exit status (0 fine, 1 regression)."""
    out = out or sys.stdout
    fa, _, faila = split_rows(load_results(a_path))
    fb, _, failb = split_rows(load_results(b_path))
    pairs, only_a, only_b = _match(fa, fb)
    pairs["delta"] = pairs[f"{metric}_b"] - pairs[f"{metric}_a"]
    pairs["time_ratio"] = pairs["train_total_s_b"] / pairs["train_total_s_a"]
    pairs["acc_regressed"] = pairs["delta"] < -tolerance
    pairs["time_regressed"] = pairs["time_ratio"] > 1 + time_tolerance
    status = [("ACC REGRESSION" if r.acc_regressed else "")
              + (" slower" if r.time_regressed else "") for r in pairs.itertuples()]
    table = pd.DataFrame({
        "cell_key": pairs["cell_key"], "method": pairs["method_a"], "config": pairs["config_a"],
        "cut": pairs["cut_a"], "precision": pairs["precision_a"], "seed": pairs["seed_a"],
        f"{metric} A": pairs[f"{metric}_a"].round(4), f"{metric} B": pairs[f"{metric}_b"].round(4),
        "delta": pairs["delta"].round(4), "time A s": pairs["train_total_s_a"].round(2),
        "time B s": pairs["train_total_s_b"].round(2), "B/A time": pairs["time_ratio"].round(2),
        "matched": pairs["matched"], "status": [s.strip() for s in status]})
    print(f"A (reference): {a_path}\nB (candidate): {b_path}\n{len(pairs)} matched cells; accuracy tolerance "
          f"{tolerance} ({metric}), time tolerance x{1 + time_tolerance:.2f}\n", file=out)
    if not table.empty:
        with pd.option_context("display.width", 220, "display.max_columns", 30, "display.max_colwidth", 32):
            print(table.to_string(index=False), file=out)
    # A cell that succeeded in A but only failed in B is a regression too.
    newly_failed = failb[failb["cell_key"].isin(fa["cell_key"])]
    for r in newly_failed.itertuples():
        print(f"FAILED in B (ok in A): {r.cell_key} {r.method} {r.cut} seed={r.seed}: {r.error}", file=out)
    for label, rows in (("only in A (missing from B)", only_a), ("only in B", only_b)):
        for r in rows.itertuples():
            print(f"warning: {label}: {r.cell_key} {r.method} {r.config} {r.cut} {r.precision} seed={r.seed}",
                  file=out)
    if len(faila):
        print(f"note: {len(faila)} cell(s) failed in A too.", file=out)
    n_acc = int(pairs["acc_regressed"].sum()) + len(newly_failed)
    n_time = int(pairs["time_regressed"].sum())
    if n_time:
        print(f"{'error' if fail_on_time else 'warning'}: {n_time} cell(s) slower than x{1 + time_tolerance:.2f} "
              "the reference (times depend on the machine and its load).", file=out)
    if n_acc:
        print(f"error: {n_acc} cell(s) regressed in {metric} by more than {tolerance} (or failed).", file=out)
    if not len(pairs) and not len(newly_failed):
        print("error: no cell in common between A and B.", file=out)
        return 1
    bad = pairs["acc_regressed"] | (pairs["time_regressed"] if fail_on_time else False)
    # The plain closing line CI logs are read for.
    print(f"compare: {int((~bad).sum())} passed, {int(bad.sum()) + len(newly_failed)} failed", file=out)
    return 1 if n_acc or (fail_on_time and n_time) else 0


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        return compare(args.a, args.b, args.tolerance, args.time_tolerance, args.metric, args.fail_on_time)
    except FileNotFoundError as err:
        print(f"gradfree: error: {err}", file=sys.stderr)
        return 2


def add_commands(sub) -> None:
    p = sub.add_parser("compare", help="per-cell differences between two result sets; exit 1 on regression",
                       description="Compare result set B (candidate) with A (reference), cell by cell (matched by "
                                   "cell_key, else by axes). Exit status 1 when accuracy dropped by more than "
                                   "--tolerance or a cell newly failed; slower cells are warnings unless --fail-on-time.")
    p.add_argument("a", help="reference results folder or csv")
    p.add_argument("b", help="candidate results folder or csv")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="largest accepted accuracy drop, absolute (0.01 = one point) [0.01]")
    p.add_argument("--time-tolerance", type=float, default=0.5,
                   help="largest accepted relative slow-down of train_total_s (0.5 = 1.5x) [0.5]")
    p.add_argument("--fail-on-time", action="store_true", help="exit 1 on time regressions too")
    p.add_argument("--metric", default="test_acc", choices=["test_acc", "val_acc", "train_acc"],
                   help="accuracy column compared [test_acc]")
    p.set_defaults(func=cmd_compare)
