"""``gradfree compare A B``: per-cell differences between two result sets; non-zero exit on regression.

``A`` is the reference (e.g. the committed ``results/quick``), ``B`` the
candidate. Cells are matched by ``cell_key``; cells whose keys differ (another
gradfree version, another data folder) are matched by their axes (method,
configuration, dataset, backbone, cut, precision, seed, image size, numbers of
images). For each pair: the accuracy difference ``B - A`` (``test_acc`` by
default) and the training-time ratio ``B / A``. Then, for reference (it passes or
fails nothing), each file's answer per data group as the report opens with it
(:mod:`benchmarks.report.answer`): each side's configuration chosen on validation, never
on test, their test accuracies and the interval of the difference.

This is the CI regression gate, so anything that keeps it from judging a cell is
a failure, never a pass. Exit status 1 when:

* A or B lacks a required column (``cell_key``, ``row_type``, ``status``, ``method``
  and the metric), B has no rows, or A has no successful cell to compare against;
* a matched cell's metric is blank, NaN, infinite or not a number (in B, or in A);
* an accuracy dropped by more than ``--tolerance``;
* a cell of A is missing from B, or failed in B.

Time regressions (ratio above ``1 + --time-tolerance``, or a blank time in B) are
warnings unless ``--fail-on-time``; cells only in B are warnings. A cell timed beside other
work (its load above its threads, :mod:`benchmarks.report.conditions`) says so in its status: its
time ratio is not the code's. Rows the reader had to skip (a torn or garbled file) are warnings; the cells they held then count
as missing. The last line is always ``compare: N passed, M failed``, M counting
every failure above.

A tolerance that is not a finite number >= 0 (NaN would pass every drop, a negative
one fail identical files), or an accuracy tolerance of 1 or more (it accepts any drop;
accuracy is a fraction), is refused before anything is read: ``ValueError``, and exit
status 2 from the command line.
"""

from __future__ import annotations

import math
import sys

import pandas as pd

from benchmarks.report.answer import answer
from benchmarks.report.completeness import unfinished
from benchmarks.report.curve import crossovers
from benchmarks.report.conditions import earlier_attempts, mark_busy
from benchmarks.report.tables import load_results, results_csv, split_rows

AXES = ["method", "config", "dataset", "backbone", "cut", "precision", "seed", "image_size", "n_train", "n_test"]
#: Columns without which no cell can be matched or judged (the metric is required too).
REQUIRED = ("cell_key", "row_type", "status", "method")


#: What each tolerance means, for the messages that refuse one.
TOLERANCES = {"tolerance": "the largest accepted accuracy drop, absolute: 0.01 is one point",
              "time_tolerance": "the largest accepted relative slow-down: 0.5 is 1.5x the reference time"}


def check_tolerance(name: str, value: float) -> float:
    """``value`` if it is a usable ``name`` (a key of :data:`TOLERANCES`), else ``ValueError`` saying why."""
    flag = f"--{name.replace('_', '-')}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{flag} {value!r} is not a number; give {TOLERANCES[name]}.") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{flag} {value} is not a tolerance: give a finite number >= 0, {TOLERANCES[name]}.")
    if name == "tolerance" and number >= 1:
        raise ValueError(f"{flag} {value} accepts any accuracy drop (accuracy is a fraction); give "
                         f"{TOLERANCES[name]}.")
    return number


def _axes_key(df: pd.DataFrame) -> list[str]:
    return ["|".join(str(v) for v in row) for row in df[AXES].itertuples(index=False)]


def _match(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(pairs, only in A, only in B); pairs have columns suffixed _a and _b."""
    by_key = a.merge(b, on="cell_key", suffixes=("_a", "_b"))
    rest_a = a[~a["cell_key"].isin(by_key["cell_key"])]
    rest_b = b[~b["cell_key"].isin(by_key["cell_key"])]
    ra = rest_a.assign(match_axes=_axes_key(rest_a)).drop_duplicates("match_axes", keep="last")
    rb = rest_b.assign(match_axes=_axes_key(rest_b)).drop_duplicates("match_axes", keep="last")
    by_axes = ra.merge(rb, on="match_axes", suffixes=("_a", "_b"))
    pairs = pd.concat([by_key.assign(matched="key"),
                       by_axes.assign(matched="axes", cell_key=by_axes["cell_key_a"])], ignore_index=True)
    only_a = ra[~ra["match_axes"].isin(by_axes["match_axes"])]
    only_b = rb[~rb["match_axes"].isin(by_axes["match_axes"])]
    return pairs, only_a, only_b


def _load(name: str, path, metric: str, say) -> tuple[pd.DataFrame, list[str]]:
    """The rows of one side and what keeps them from being compared (missing columns)."""
    df = load_results(path, warn=lambda message: say(f"warning: {name}: {message}"))
    columns = df.attrs["columns"]
    if not columns:
        return df, [f"{name} ({path}) has no header row: not a results file (empty or unreadable)."]
    missing = [c for c in (*REQUIRED, metric) if c not in columns]
    if missing:
        return df, [f"{name} ({path}) has no column {', '.join(repr(c) for c in missing)}; a results file "
                    f"needs {', '.join((*REQUIRED, metric))}."]
    return df, []


def _unreadable(value, raw: dict, column: str, side: str) -> str:
    """Why a metric value cannot be compared, or '' when it can."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        return ""
    text = (raw or {}).get(column)
    what = "blank" if text is None and pd.isna(value) else repr(text if text is not None else str(value))
    return f"{column} in {side} is {what}, not a number"


def _cell(r, suffix: str = "") -> str:
    get = lambda c: getattr(r, f"{c}{suffix}", getattr(r, c, ""))  # noqa: E731
    return f"{r.cell_key} {get('method')} {get('config')} {get('cut')} {get('precision')} seed={get('seed')}".strip()


def compare(a_path, b_path, tolerance: float = 0.01, time_tolerance: float = 0.5, metric: str = "test_acc",
            fail_on_time: bool = False, out=None) -> int:
    """Print the comparison; return the exit status (0 fine, 1 regression or nothing to judge).
    Raises ``ValueError`` for a tolerance that is not a finite number >= 0 (see :func:`check_tolerance`)."""
    tolerance = check_tolerance("tolerance", tolerance)
    time_tolerance = check_tolerance("time_tolerance", time_tolerance)
    out = out or sys.stdout
    say = lambda line: print(line, file=out)  # noqa: E731
    say(f"A (reference): {a_path}\nB (candidate): {b_path}")
    a, errors = _load("A", a_path, metric, say)
    b, b_errors = _load("B", b_path, metric, say)
    errors += b_errors
    fa, _, faila = split_rows(a)
    fb, _, failb = split_rows(b)
    fa, fb = (mark_busy(f, rows, earlier_attempts(results_csv(path).parent))
              for f, rows, path in ((fa, a, a_path), (fb, b, b_path)))
    if not errors and fa.empty:
        errors.append(f"A ({a_path}) has no successful final row: nothing to compare against.")
    if not b_errors and b.empty:
        errors.append(f"B ({b_path}) has no rows" + (" it could read." if b.attrs["problems"] else "."))
    if errors:
        for e in errors:
            say(f"error: {e}")
        say(f"compare: 0 passed, {len(errors)} failed")
        return 1

    pairs, only_a, only_b = _match(fa, fb)
    _judge(pairs, metric, tolerance, time_tolerance, fail_on_time)
    _say_table(pairs, metric, tolerance, time_tolerance, say)
    _say_answers((("A", a_path, fa), ("B", b_path, fb)), say)
    _say_cell_errors(pairs, metric, tolerance, fail_on_time, say)
    newly_failed, missing = _lost_cells(only_a, failb)
    for r in newly_failed.itertuples():
        say(f"error: FAILED in B (ok in A): {_cell(r)}: {r.b_error}")
    for r in missing.itertuples():
        say(f"error: missing from B (ok in A): {_cell(r)}")
    for r in only_b.itertuples():
        say(f"warning: only in B: {_cell(r)}")
    if len(faila):
        say(f"note: {len(faila)} cell(s) failed in A too.")
    if not len(pairs):
        say("error: no cell in common between A and B.")
    _say_totals(pairs, metric, tolerance, time_tolerance, fail_on_time, say)
    failed = int(pairs["bad"].sum()) + len(newly_failed) + len(missing)
    # The plain closing line CI logs are read for.
    say(f"compare: {int((~pairs['bad']).sum())} passed, {failed} failed")
    return 1 if failed else 0


def _judge(pairs: pd.DataFrame, metric: str, tolerance: float, time_tolerance: float, fail_on_time: bool) -> None:
    """Each matched pair's difference, time ratio and verdict, as columns of ``pairs`` (in place)."""
    pairs["delta"] = pairs[f"{metric}_b"] - pairs[f"{metric}_a"]
    pairs["time_ratio"] = pairs["train_total_s_b"] / pairs["train_total_s_a"]
    pairs["problem"] = [_unreadable(r[f"{metric}_b"], r["unparsed_b"], metric, "B")
                        or _unreadable(r[f"{metric}_a"], r["unparsed_a"], metric, "A") for _, r in pairs.iterrows()]
    pairs["acc_regressed"] = (pairs["problem"] == "") & (pairs["delta"] < -tolerance)
    pairs["time_missing"] = pairs["train_total_s_a"].notna() & pairs["train_total_s_b"].isna()
    pairs["time_regressed"] = pairs["time_ratio"] > 1 + time_tolerance
    pairs["bad"] = (pairs["problem"] != "") | pairs["acc_regressed"]
    if fail_on_time:
        pairs["bad"] |= pairs["time_regressed"] | pairs["time_missing"]


def _say_table(pairs: pd.DataFrame, metric: str, tolerance: float, time_tolerance: float, say) -> None:
    status = [("NOT COMPARED" if r.problem else "ACC REGRESSION" if r.acc_regressed else "")
              + (" slower" if r.time_regressed else " no time" if r.time_missing else "")
              + "".join(f" ({side} timed beside other work)" for side in ("A", "B")
                        if getattr(r, f"busy_{side.lower()}") > 0) for r in pairs.itertuples()]
    table = pd.DataFrame({
        "cell_key": pairs["cell_key"], "method": pairs["method_a"], "config": pairs["config_a"],
        "cut": pairs["cut_a"], "precision": pairs["precision_a"], "seed": pairs["seed_a"],
        f"{metric} A": pairs[f"{metric}_a"].round(4), f"{metric} B": pairs[f"{metric}_b"].round(4),
        "delta": pairs["delta"].round(4), "time A s": pairs["train_total_s_a"].round(2),
        "time B s": pairs["train_total_s_b"].round(2), "B/A time": pairs["time_ratio"].round(2),
        "matched": pairs["matched"], "status": [s.strip() for s in status]})
    say(f"{len(pairs)} matched cells; accuracy tolerance {tolerance} ({metric}), time tolerance "
        f"x{1 + time_tolerance:.2f}\n")
    if not table.empty:
        with pd.option_context("display.width", 220, "display.max_columns", 30, "display.max_colwidth", 32):
            say(table.to_string(index=False))


def _say_answers(sets, say) -> None:
    """Each side's answer, shown for reference (the gate judges cells, not answers)."""
    for name, path, finals in sets:
        try:
            folder = results_csv(path).parent
            found = answer(finals, folder)
            lines = unfinished(folder, finals) + found.lines() + [c.line() for c in crossovers(found)]
        except (ValueError, KeyError, TypeError) as err:
            lines = []
            say(f"warning: {name}'s answer could not be worked out ({err}).")
        if lines:
            say(f"\n{name}'s answer (each side chosen on validation; for reference, not a pass or fail):")
            say("\n".join(f"  {line}" for line in lines))
    say("")


def _say_cell_errors(pairs: pd.DataFrame, metric: str, tolerance: float, fail_on_time: bool, say) -> None:
    for r in pairs[pairs["problem"] != ""].itertuples():
        say(f"error: {_cell(r, '_a')}: {r.problem}; cannot compare.")
    for r in pairs[pairs["acc_regressed"]].itertuples():
        say(f"error: {_cell(r, '_a')}: {metric} {getattr(r, f'{metric}_a'):.4f} -> {getattr(r, f'{metric}_b'):.4f} "
            f"({r.delta:+.4f}, below -{tolerance}).")
    if fail_on_time:
        for r in pairs[pairs["time_missing"]].itertuples():
            say(f"error: {_cell(r, '_a')}: train_total_s in B is blank.")


def _lost_cells(only_a: pd.DataFrame, failb: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cells ok in A and not in B: (failed there, with the error as ``b_error``; missing there).
    A cell that only failed in B (matched by key, else by axes) is a regression too."""
    b_errors_by = {**dict(zip(_axes_key(failb), failb["error"])), **dict(zip(failb["cell_key"], failb["error"]))}
    lost = only_a["cell_key"].isin(b_errors_by) | only_a["match_axes"].isin(b_errors_by)
    newly_failed = only_a[lost].copy()
    newly_failed["b_error"] = [b_errors_by.get(k, b_errors_by.get(m))
                               for k, m in zip(newly_failed["cell_key"], newly_failed["match_axes"])]
    return newly_failed, only_a[~lost]


def _say_totals(pairs: pd.DataFrame, metric: str, tolerance: float, time_tolerance: float, fail_on_time: bool,
                say) -> None:
    n_time = int(pairs["time_regressed"].sum())
    if n_time:
        say(f"{'error' if fail_on_time else 'warning'}: {n_time} cell(s) slower than x{1 + time_tolerance:.2f} "
            "the reference (times depend on the machine and its load).")
    if not fail_on_time and pairs["time_missing"].any():
        say(f"warning: {int(pairs['time_missing'].sum())} cell(s) of B have no train_total_s.")
    n_acc = int(pairs["acc_regressed"].sum())
    if n_acc:
        say(f"error: {n_acc} cell(s) regressed in {metric} by more than {tolerance}.")
