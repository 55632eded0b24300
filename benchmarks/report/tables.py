"""Results as pandas frames: loading, the rows a report counts, their sides, and the tables.

This module owns everything that reads ``results.csv`` into frames; the report
(:mod:`benchmarks.report.build`), its figures (:mod:`benchmarks.report.plots`) and the
regression check (:mod:`benchmarks.report.gate`) read results through it only.

* :func:`check_results_file`: refuses a CSV that is not a results file (another tool's, gradfree
  perf's), naming what it holds.
* :func:`load_results`: every row of a results file, numeric columns as numbers,
  plus a ``config`` label per row (each method's own :func:`benchmarks.harness.registry.label`).
  Rows are read by :func:`benchmarks.harness.results.read_rows`: those a crash or a bad merge left
  malformed (a torn tail, two rows glued on one line, an unterminated quote) are skipped
  with a warning, never glued to the next.
* :func:`split_rows`: which rows count. A cell's last successful ``final`` row; its
  ``epoch`` rows from that same run (an interrupted earlier attempt leaves orphan
  epoch rows, which are ignored); ``failed`` rows only for cells with no successful row.
* :func:`side` / :func:`split_sides`: backprop or gradient-free, from the registry's
  ``is_backprop``. A method this gradfree does not know (a file from an older or newer
  version) is on neither side: it keeps its name as label, is ordered last, appears in
  every table and in the plots that draw all methods, but not as a gradient-free point.
* :func:`aggregate` and the summary, accuracy, time, size and failed-cell tables, mean ± std over seeds.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.core.backbones import BackboneError, list_cuts
from benchmarks.harness.registry import REGISTRY, config_fields, get_method, label, lenient_config, make_config
from benchmarks.harness.results import RESULTS_FILE, SCHEMA, ResultsError, ResultsWarning, read_rows

NUMERIC = ("n_components", "seed", "image_size", "n_classes", "n_train", "n_val", "n_test", "threads", "epoch",
           "train_loss", "train_acc", "val_acc", "test_acc", "best_epoch", "epochs", "alpha", "warmup_s",
           "extract_s", "encode_s", "project_s", "fit_s", "train_s", "predict_s", "eval_s", "train_total_s",
           "train_time_s", "feature_dim", "backbone_param_count", "backbone_bytes", "projection_bytes",
           "projection_matrix_bytes", "ridge_weight_bytes", "model_param_count", "trainable_param_count",
           "model_bytes", "peak_memory_bytes")
#: Counted phases, in pipeline order (the stacked time breakdown).
COUNTED_PHASES = ("extract_s", "encode_s", "project_s", "fit_s", "train_s")
#: One configuration: seeds are what a table's mean ± std runs over, and nothing else (two training-set
#: sizes are two rows).
GROUP = ["method", "config", "dataset", "n_train", "backbone", "cut", "precision"]
#: The sides of the comparison; UNKNOWN is a method this gradfree has no class for.
BACKPROP, GRADIENT_FREE, UNKNOWN = "backprop", "gradient-free", "unknown"


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


def results_csv(path: str | Path) -> Path:
    """The CSV that ``path`` names (``path/results.csv`` for a folder); ``FileNotFoundError`` if it is absent."""
    path = Path(path)
    csv_path = path / RESULTS_FILE if path.is_dir() else path
    if not csv_path.is_file():
        raise FileNotFoundError(f"no results at {csv_path}: give a results folder (with {RESULTS_FILE}) "
                                "or a csv file.")
    return csv_path


#: The columns without which a CSV is not a results file (the report and the comparison group by them).
IDENTITY = ("run_id", "cell_key", "row_type", "status", "method")


def check_results_file(csv_path: Path) -> None:
    """Raise :class:`benchmarks.harness.results.ResultsError` unless ``csv_path`` has a results file's columns
    (:data:`IDENTITY` at least), saying what it holds instead."""
    header = _header(csv_path)
    missing = [c for c in IDENTITY if c not in header]
    if not missing:
        return
    if not header or csv_path.stat().st_size == 0:
        what = "it is empty"
    else:
        shown = ", ".join(header[:6]) + (", ..." if len(header) > 6 else "")
        what = f"its columns are {shown}, without {', '.join(missing)}"
    raise ResultsError(f"{csv_path} is not a gradfree results file: {what}. Expected the {RESULTS_FILE} that "
                       f"`gradfree run` writes (columns {', '.join(SCHEMA[:4])}, ...); give its folder or the "
                       "file itself.")


def _header(csv_path: Path) -> list[str]:
    """The column names on the first line of ``csv_path`` ([] for an empty or unreadable one)."""
    with open(csv_path, "rb") as f:
        first = f.readline().decode("utf-8", errors="replace").replace("\0", "")
    try:
        return next(csv.reader([first], strict=True), [])
    except csv.Error:
        return []


def _read_rows(csv_path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """(rows, problems): the well-formed rows, as :func:`benchmarks.harness.results.read_rows` reads them
    (malformed records skipped, never glued to the next), and its warnings about the rest."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = read_rows(csv_path)
    problems = []
    for w in caught:
        if issubclass(w.category, ResultsWarning):
            problems.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return rows, problems


def load_results(path: str | Path, warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Every row of a results folder or csv: numeric columns as numbers, plus ``config`` (a label),
    ``cached`` and ``unparsed`` (a dict per row: the non-blank texts of its numeric columns that
    are not numbers, ``{"test_acc": "abc"}``). ``df.attrs["columns"]`` holds the file's own header,
    ``df.attrs["problems"]`` the skipped rows and unreadable values, each also passed to ``warn``
    (default: :func:`warnings.warn`)."""
    csv_path = results_csv(path)
    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    header = _header(csv_path)
    rows, messages = _read_rows(csv_path)
    df = pd.DataFrame.from_records(rows, columns=list(dict.fromkeys(header))).astype(str) if header \
        else pd.DataFrame()
    for col in SCHEMA:
        if col not in df:
            df[col] = ""
    labels = [config_label(r) for r in df.to_dict("records")]
    unparsed: list[dict[str, str]] = [{} for _ in range(len(df))]
    for col in NUMERIC:
        text = df[col].str.strip()
        df[col] = pd.to_numeric(text.replace("", np.nan), errors="coerce")
        bad = (text != "") & df[col].isna()
        for i in np.flatnonzero(bad.to_numpy()):
            unparsed[i][col] = text.iloc[i]
        words = bad & (text.str.lower() != "nan")
        if words.any():
            messages.append(f"{csv_path}: {col} is not a number on {int(words.sum())} row(s) "
                            f"(e.g. {text[words].iloc[0]!r}); read as blank")
    df["unparsed"] = unparsed
    df["config"] = _disambiguate(df, labels)
    df["cached"] = df["extra"].str.contains("cached_phases", regex=False)
    # Seconds spent choosing a hyperparameter grid on validation (kept in ``extra``): shown beside,
    # never inside, the training time.
    df["tune_s"] = pd.to_numeric(pd.Series([json_dict(e).get("tune_s") for e in df["extra"]], index=df.index,
                                           dtype=object), errors="coerce")
    df["train_plus_tune_s"] = df["train_total_s"] + df["tune_s"].fillna(0.0)
    df.attrs["columns"] = tuple(header)
    df.attrs["problems"] = messages
    for message in messages:
        warn(message)
    return df


def config_label(row: dict) -> str:
    """A short name for what a row ran, beyond its axes (``sign+gaussian k=1000``, ``linear-probe``),
    given by the method itself; the method's name for a method this gradfree does not know."""
    method = row.get("method", "")
    try:
        cls = get_method(method)
    except Exception:  # (a plugin not installed here)
        return method
    options = json_dict(row.get("method_config") or "")
    if not options:  # an older file: the row's own columns (encoder, projection, n_components...)
        options = {k: _number_or_text(v) for k, v in row.items() if v not in ("", None) and k in config_fields(method)}
    try:
        return cls.label(make_config(cls, options))
    except (TypeError, ValueError):  # options this version's Config rejects (another gradfree): read as given
        try:
            return cls.label(lenient_config(cls, options))
        except (TypeError, ValueError, KeyError, AttributeError):
            return label(method, options)


def _number_or_text(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# The search spaces that choose a hyperparameter on validation: named in a label only where they
# alone tell apart two configurations of one group, so that a mode keeps its name across cuts whose
# grids differ.
_TUNING_OPTIONS = ("lr_grid", "alphas", "tune_epochs")


def _disambiguate(df: pd.DataFrame, labels: list[str]) -> list[str]:
    """Append the options that differ between configurations sharing a label (``small_cnn (lr=0.05)``),
    so that mean ± std only ever runs over seeds. A search space (:data:`_TUNING_OPTIONS`) is named
    only where it is needed for that: in a group of the other :data:`GROUP` axes, two configurations
    that differ in nothing else."""
    axes = [c for c in GROUP if c != "config"]
    variants: dict[tuple[str, str], dict[tuple, set[str]]] = {}
    for i, (method, lab, cfg) in enumerate(zip(df["method"], labels, df["method_config"])):
        if cfg:
            where = tuple(str(df[a].iat[i]) for a in axes)
            variants.setdefault((method, lab), {}).setdefault(where, set()).add(cfg)
    named = {key: _named_options([[_with_defaults(key[0], json_dict(c)) for c in sorted(cfgs)]
                                  for cfgs in groups.values()])
             for key, groups in variants.items()}
    out = []
    for method, lab, cfg in zip(df["method"], labels, df["method_config"]):
        keys = named.get((method, lab), [])
        if keys and cfg:
            options = _with_defaults(method, json_dict(cfg))
            lab = f"{lab} ({', '.join(f'{k}={options.get(k)}' for k in keys)})"
        out.append(lab)
    return out


def _with_defaults(method: str, options: dict) -> dict:
    """``options`` and the Config's defaults for the fields a row predates (it ran with them)."""
    try:
        fields = config_fields(method)
    except Exception:  # a method this gradfree cannot load (a plugin not installed here)
        return options
    return {**{k: f.default for k, f in fields.items() if f.default is not dataclasses.MISSING}, **options}


def _named_options(groups: list[list[dict]]) -> list[str]:
    """The options whose values differ between the configurations of ``groups`` (lists of configs);
    a tuning option only if some two configurations of one group differ in no other option."""
    everything = [c for group in groups for c in group]
    differ = sorted(k for k in set().union(*everything) if len({str(c.get(k)) for c in everything}) > 1)
    plain = [k for k in differ if k not in _TUNING_OPTIONS]

    def same(a: dict, b: dict, keys: list[str]) -> bool:
        return all(str(a.get(k)) == str(b.get(k)) for k in keys)

    tied = any(same(a, b, plain) for group in groups for i, a in enumerate(group) for b in group[i + 1:])
    return differ if tied else plain


def json_dict(text: str) -> dict:
    """A JSON object from a results cell ({} for blank, malformed or non-object text)."""
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# ----------------------------------------------------------------------------
# Which rows count, and on which side
# ----------------------------------------------------------------------------


def split_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(finals, epochs, failed): the rows a report counts (module docstring)."""
    ok = df[(df["row_type"] == "final") & (df["status"] == "ok")]
    finals = ok.drop_duplicates("cell_key", keep="last")
    runs = set(zip(finals["cell_key"], finals["run_id"]))
    epochs = df[df["row_type"] == "epoch"]
    epochs = epochs[[k in runs for k in zip(epochs["cell_key"], epochs["run_id"])]]
    failed = df[(df["row_type"] == "failed") & ~df["cell_key"].isin(finals["cell_key"])]
    failed = failed.drop_duplicates("cell_key", keep="last")
    return finals.reset_index(drop=True), epochs.reset_index(drop=True), failed.reset_index(drop=True)


@lru_cache(maxsize=None)
def side(method: str) -> str:
    """:data:`BACKPROP` or :data:`GRADIENT_FREE` from the method's class (a plugin's too);
    :data:`UNKNOWN` for a method that cannot be had here."""
    try:
        cls = get_method(method)
    except Exception:  # (a plugin not installed here)
        return UNKNOWN
    return BACKPROP if cls.is_backprop else GRADIENT_FREE


def split_sides(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``rows`` by :func:`side` of their method: every side a key, each possibly empty."""
    sides = rows["method"].map(side) if not rows.empty else pd.Series([], dtype=str)
    return {s: rows[sides == s] if not rows.empty else rows for s in (GRADIENT_FREE, BACKPROP, UNKNOWN)}


def cut_index(backbone: str, cut: str) -> int:
    """Position of ``cut`` in its backbone, from the input side; -1 for none or an unknown one."""
    return _cut_positions(backbone).get(cut, -1) if cut else -1


@lru_cache(maxsize=None)
def _cut_positions(backbone: str) -> dict[str, int]:
    try:
        return {c: i for i, c in enumerate(list_cuts(backbone))}
    except BackboneError:
        return {}


# ----------------------------------------------------------------------------
# Tables (mean ± std over seeds)
# ----------------------------------------------------------------------------


def aggregate(finals: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean and std over seeds of ``columns`` per :data:`GROUP`; ``seeds`` counts them. Rows computed on
    different data (another ``data_fingerprint``) are never averaged together: they stay apart."""
    if finals.empty:
        return pd.DataFrame()
    by = GROUP + ["data_fingerprint"]
    g = finals.fillna({c: "" for c in by}).groupby(by, sort=False, dropna=False)
    out = g[columns].mean()
    std = g[columns].std(ddof=1)
    out = out.join(std.add_suffix("_std"))
    out["seeds"] = g["seed"].nunique()
    out = out.reset_index()
    return out.iloc[sorted(range(len(out)), key=lambda i: _order(out.iloc[i]))].reset_index(drop=True)


def _order(row) -> tuple:
    """Methods in registry order (unknown ones last, by name), then configuration, cut (input side
    first) and precision."""
    rank = list(REGISTRY).index(row["method"]) if row["method"] in REGISTRY else len(REGISTRY)
    return (rank, row["method"] if rank == len(REGISTRY) else "", row["config"].split(" k=")[0],
            len(row["config"]), row["config"], cut_index(row["backbone"], row["cut"]), row["precision"])


def _pm(mean, std, fmt: str) -> str:
    if pd.isna(mean):
        return ""
    if pd.isna(std):
        return format(mean, fmt)
    return f"{format(mean, fmt)} ± {format(std, fmt)}"


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per group: test accuracy, time and size (for the terminal and the report's top)."""
    finals, _, _ = split_rows(df)
    agg = aggregate(finals, ["test_acc", "val_acc", "train_total_s", "model_bytes"])
    if agg.empty:
        return agg
    return pd.DataFrame({
        **{c: agg[c] for c in GROUP},
        "seeds": agg["seeds"],
        "test_acc": [_pm(m, s, ".4f") for m, s in zip(agg["test_acc"], agg["test_acc_std"])],
        "val_acc": [_pm(m, s, ".4f") for m, s in zip(agg["val_acc"], agg["val_acc_std"])],
        "train_s": [_pm(m, s, ".1f") for m, s in zip(agg["train_total_s"], agg["train_total_s_std"])],
        "model_MB": (agg["model_bytes"] / 1e6).round(2),
    })


def accuracy_table(finals: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: test, validation and train accuracy (mean ± std over seeds), alpha and best epoch."""
    agg = aggregate(finals, ["test_acc", "val_acc", "train_acc", "alpha", "best_epoch"])
    if agg.empty:
        return agg
    return pd.DataFrame({
        **{c: agg[c] for c in GROUP}, "seeds": agg["seeds"],
        **{c: [_pm(m, s, ".4f") for m, s in zip(agg[c], agg[f"{c}_std"])]
           for c in ("test_acc", "val_acc", "train_acc")},
        "alpha (val)": [f"{a:.3g}" if pd.notna(a) else "" for a in agg["alpha"]],
        "best epoch (val)": [f"{e:.1f}" if pd.notna(e) else "" for e in agg["best_epoch"]],
    })


def time_table(finals: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: each phase's seconds (mean ± std), uncounted ones marked, and whether any was cached."""
    cols = [*COUNTED_PHASES, "train_total_s", "warmup_s", "eval_s", "predict_s"]
    agg = aggregate(finals, cols)
    if agg.empty:
        return agg
    out = {**{c: agg[c] for c in GROUP}, "seeds": agg["seeds"]}
    for c in cols:
        if agg[c].notna().any():
            name = c if c in (*COUNTED_PHASES, "train_total_s") else f"{c} (not counted)"
            out[name] = [_pm(m, s, ".2f") for m, s in zip(agg[c], agg[f"{c}_std"])]
    cached = aggregate(finals.assign(cached_n=finals["cached"].astype(float)), ["cached_n"])["cached_n"] > 0
    out["cached"] = np.where(cached, "yes", "")
    return pd.DataFrame(out)


def size_table(finals: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: parameters, trainable ones, sizes in MB, feature dimension and peak memory in MB."""
    cols = ["model_param_count", "trainable_param_count", "model_bytes", "backbone_bytes", "ridge_weight_bytes",
            "projection_matrix_bytes", "feature_dim", "peak_memory_bytes"]
    agg = aggregate(finals, cols)
    if agg.empty:
        return agg
    mb = lambda c: [f"{v / 1e6:.2f}" if pd.notna(v) else "" for v in agg[c]]  # noqa: E731
    count = lambda c: [f"{v:,.0f}" if pd.notna(v) else "" for v in agg[c]]  # noqa: E731
    return pd.DataFrame({
        **{c: agg[c] for c in GROUP},
        "params": count("model_param_count"), "trainable": count("trainable_param_count"),
        "model MB": mb("model_bytes"), "backbone MB": mb("backbone_bytes"), "ridge MB": mb("ridge_weight_bytes"),
        "R MB (regenerated, not kept)": mb("projection_matrix_bytes"), "feature dim": count("feature_dim"),
        "peak memory MB": mb("peak_memory_bytes"),
    })


def failed_table(failed: pd.DataFrame) -> pd.DataFrame:
    """The failed rows' key, axes, seed and error (an empty table with those columns when none failed)."""
    cols = ["cell_key", "method", "dataset", "backbone", "cut", "precision", "seed", "error"]
    return failed[cols].copy() if not failed.empty else pd.DataFrame(columns=cols)
