"""``gradfree report``: tables and plots from a results folder, nothing else.

Reads ``results.csv`` (and the runs' ``metadata.json`` beside it), never a
model. Writes ``report.md`` (tables + PNG links) and a self-contained
``report.html`` (PNG embedded as base64) into ``--out`` (default
``<results folder>/report``), with:

* accuracy, time breakdown and model size per method x configuration x cut x
  precision, mean ± std over seeds;
* the plots of :mod:`benchmarks.plots` (accuracy and training time against
  model size across cut layers, accuracy against training time with the Pareto
  front, the stacked time per phase, per-epoch time-to-accuracy);
* the failed cells with their errors.

Which rows count: a cell's last successful ``final`` row; its ``epoch`` rows
from that same run (an interrupted earlier attempt leaves orphan epoch rows,
which are ignored); ``failed`` rows only for cells with no successful row.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.results import RESULTS_FILE, SCHEMA

NUMERIC = ("n_components", "seed", "image_size", "n_classes", "n_train", "n_val", "n_test", "threads", "epoch",
           "train_loss", "train_acc", "val_acc", "test_acc", "best_epoch", "epochs", "alpha", "warmup_s",
           "extract_s", "encode_s", "project_s", "fit_s", "train_s", "predict_s", "eval_s", "train_total_s",
           "train_time_s", "feature_dim", "backbone_param_count", "backbone_bytes", "projection_bytes",
           "projection_matrix_bytes", "ridge_weight_bytes", "model_param_count", "trainable_param_count",
           "model_bytes", "peak_memory_bytes")
#: Counted phases, in pipeline order (the stacked time breakdown).
COUNTED_PHASES = ("extract_s", "encode_s", "project_s", "fit_s", "train_s")
GROUP = ["method", "config", "dataset", "backbone", "cut", "precision"]
BACKPROP = ("finetune", "small_cnn", "wrn22")
SELECTION_NOTE = ("Hyperparameters were selected on the validation split: the ridge penalty alpha of random "
                  "features (the best of its grid by validation accuracy, then refitted on train + validation) "
                  "and the best epoch of the backprop methods (one-cycle WRN-22 keeps its last epoch). The test "
                  "split was scored once, for the selected model.")
TIME_NOTE = ("Training time (`train_total_s`) is the sum of the counted phases (extract, encode, project, fit "
             "for random features on train + validation images; train for backprop). Warm-up, evaluation and "
             "test prediction are measured but not counted. A cell whose features came from the feature cache "
             "is charged the seconds their extraction took when it ran (marked `cached`).")


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


def results_csv(path: str | Path) -> Path:
    path = Path(path)
    csv = path / RESULTS_FILE if path.is_dir() else path
    if not csv.is_file():
        raise FileNotFoundError(f"no results at {csv}: give a results folder (with {RESULTS_FILE}) or a csv file.")
    return csv


def load_results(path: str | Path) -> pd.DataFrame:
    """Every row of a results folder or csv, numeric columns as numbers, plus a ``config`` label."""
    df = pd.read_csv(results_csv(path), dtype=str, keep_default_na=False)
    for col in SCHEMA:
        if col not in df:
            df[col] = ""
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="coerce")
    df["config"] = _disambiguate(df, [config_label(r) for r in df.to_dict("records")])
    df["cached"] = df["extra"].str.contains("cached_phases", regex=False)
    return df


def config_label(row: dict) -> str:
    """A short name for what a row ran, beyond its axes: ``sign+gaussian k=1000``, ``linear-probe``..."""
    method = row.get("method", "")
    try:
        cfg = json.loads(row.get("method_config") or "{}")
    except (TypeError, json.JSONDecodeError):
        cfg = {}
    if method == "random-features":
        enc = row.get("encoder") or cfg.get("encoder", "")
        proj = row.get("projection") or cfg.get("projection", "")
        if proj == "none":
            return f"ridge on {'raw' if enc == 'none' else enc} features"
        k = row.get("n_components")
        k = int(float(k)) if k not in (None, "") and not (isinstance(k, float) and np.isnan(k)) else cfg.get("n_components")
        return f"{enc}+{proj} k={k}"
    if method == "finetune":
        label = cfg.get("mode", "finetune")
        return f"{label} ({cfg['preset']})" if cfg.get("preset") else label
    return method


def _disambiguate(df: pd.DataFrame, labels: list[str]) -> list[str]:
    """Append the options that differ between configurations sharing a label (``small_cnn (lr=0.05)``),
    so that mean ± std only ever runs over seeds."""
    configs = [_json(c) for c in df["method_config"]]
    by_label: dict[tuple, set[str]] = {}
    for method, label, cfg in zip(df["method"], labels, df["method_config"]):
        if cfg:
            by_label.setdefault((method, label), set()).add(cfg)
    out = []
    for method, label, cfg in zip(df["method"], labels, configs):
        variants = [_json(c) for c in by_label.get((method, label), ())]
        if len(variants) > 1 and cfg:
            keys = sorted(k for k in set().union(*variants) if len({str(v.get(k)) for v in variants}) > 1)
            label = f"{label} ({', '.join(f'{k}={cfg.get(k)}' for k in keys)})"
        out.append(label)
    return out


def _json(text: str) -> dict:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}


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


# ----------------------------------------------------------------------------
# Tables (mean ± std over seeds)
# ----------------------------------------------------------------------------


def aggregate(finals: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean and std over seeds of ``columns`` per :data:`GROUP`; ``seeds`` counts them."""
    if finals.empty:
        return pd.DataFrame()
    g = finals.fillna({c: "" for c in GROUP}).groupby(GROUP, sort=False, dropna=False)
    out = g[columns].mean()
    std = g[columns].std(ddof=1)
    out = out.join(std.add_suffix("_std"))
    out["seeds"] = g["seed"].nunique()
    out = out.reset_index()
    return out.iloc[sorted(range(len(out)), key=lambda i: _order(out.iloc[i]))].reset_index(drop=True)


_METHOD_ORDER = {"random-features": 0, "finetune": 1, "wrn22": 2, "small_cnn": 3}


def _order(row) -> tuple:
    """Methods in a fixed order, then configuration, cut (input side first) and precision."""
    from benchmarks.backbones import BackboneError, list_cuts

    try:
        cut = list_cuts(row["backbone"]).index(row["cut"]) if row["cut"] else -1
    except (BackboneError, ValueError):
        cut = -1
    return (_METHOD_ORDER.get(row["method"], 9), row["config"].split(" k=")[0], len(row["config"]), row["config"],
            cut, row["precision"])


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
    agg = aggregate(finals, ["test_acc", "val_acc", "train_acc", "alpha", "best_epoch"])
    if agg.empty:
        return agg
    return pd.DataFrame({
        **{c: agg[c] for c in GROUP}, "seeds": agg["seeds"],
        **{c: [_pm(m, s, ".4f") for m, s in zip(agg[c], agg[f"{c}_std"])] for c in ("test_acc", "val_acc", "train_acc")},
        "alpha (val)": [f"{a:.3g}" if pd.notna(a) else "" for a in agg["alpha"]],
        "best epoch (val)": [f"{e:.1f}" if pd.notna(e) else "" for e in agg["best_epoch"]],
    })


def time_table(finals: pd.DataFrame) -> pd.DataFrame:
    cols = [*COUNTED_PHASES, "train_total_s", "warmup_s", "eval_s", "predict_s"]
    agg = aggregate(finals, cols)
    if agg.empty:
        return agg
    out = {**{c: agg[c] for c in GROUP}, "seeds": agg["seeds"]}
    for c in cols:
        if agg[c].notna().any():
            label = c if c in (*COUNTED_PHASES, "train_total_s") else f"{c} (not counted)"
            out[label] = [_pm(m, s, ".2f") for m, s in zip(agg[c], agg[f"{c}_std"])]
    cached = finals.groupby(GROUP, sort=False, dropna=False)["cached"].any().values if "cached" in finals else False
    out["cached"] = np.where(cached, "yes", "")
    return pd.DataFrame(out)


def size_table(finals: pd.DataFrame) -> pd.DataFrame:
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
    cols = ["cell_key", "method", "dataset", "backbone", "cut", "precision", "seed", "error"]
    return failed[cols].copy() if not failed.empty else pd.DataFrame(columns=cols)


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (no extra dependency)."""
    if df.empty:
        return "_(none)_\n"
    cells = df.astype(object).where(df.notna(), "").astype(str)
    cells = cells.apply(lambda col: col.str.replace("|", "\\|", regex=False).str.replace("\n", " ", regex=False))
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.values.tolist()]
    return "\n".join(lines) + "\n"


def _run_info(csv: Path) -> list[dict]:
    runs = []
    for meta in sorted(csv.parent.glob("runs/*/metadata.json")):
        try:
            m = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        runs.append({"run": m.get("run_id"), "started": m.get("started_at"), "cpu": m.get("cpu"),
                     "cpus": m.get("cpu_count"), "gpus": ", ".join(m.get("cuda_devices") or []) or "none",
                     "torch": (m.get("packages") or {}).get("torch"),
                     "commit": ((m.get("git") or {}).get("commit") or "")[:10]})
    return runs


def build_report(results: str | Path, out: str | Path | None = None) -> Path:
    """Write report.md, report.html and the PNGs; return the Markdown file's path."""
    from benchmarks import plots

    csv = results_csv(results)
    out = Path(out) if out else csv.parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    df = load_results(csv)
    finals, epochs, failed = split_rows(df)
    figures = plots.make_all(finals, epochs, out)

    suites = ", ".join(sorted(s for s in df["suite"].unique() if s)) or "(single runs)"
    datasets = ", ".join(sorted(d for d in finals["dataset"].unique() if d)) if not finals.empty else ""
    sections: list[tuple[str, str, object]] = [
        ("Summary", f"{len(finals)} finished cells, {len(failed)} failed, suite(s): {suites}; dataset(s): "
                    f"{datasets}. Mean ± std over seeds (std blank with one seed).", summary_table(df)),
        ("Accuracy", SELECTION_NOTE, accuracy_table(finals)),
        ("Time breakdown (seconds)", TIME_NOTE, time_table(finals)),
        ("Model size", "What is kept after training: backbone up to the cut + ridge weights for random features "
                       "(R is regenerated from its seed, its would-be size shown for reference); the whole "
                       "network for backprop.", size_table(finals)),
    ]
    md = [f"# gradfree report: {suites}\n", f"Generated from `{csv}` (reports read only results files).\n",
          f"> {SELECTION_NOTE}\n"]
    body_html = [f"<h1>gradfree report: {html.escape(suites)}</h1>",
                 f"<p>Generated from <code>{html.escape(str(csv))}</code>.</p>",
                 f"<blockquote>{html.escape(SELECTION_NOTE)}</blockquote>"]
    for title, text, table in sections:
        md += [f"## {title}\n", f"{text}\n", markdown_table(table)]
        body_html += [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(text)}</p>", _html_table(table)]
    md.append("## Plots\n")
    body_html.append("<h2>Plots</h2>")
    for fig in figures:
        md.append(f"### {fig.title}\n")
        body_html.append(f"<h3>{html.escape(fig.title)}</h3>")
        if fig.path is None:
            md.append(f"_Skipped: {fig.note}_\n")
            body_html.append(f"<p><em>Skipped: {html.escape(fig.note)}</em></p>")
            continue
        md.append(f"{fig.caption}\n\n![{fig.title}]({fig.path.name})\n")
        data = base64.b64encode(fig.path.read_bytes()).decode()
        body_html += [f"<p>{html.escape(fig.caption)}</p>",
                      f'<img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">']
    md += ["## Failed cells\n", markdown_table(failed_table(failed))]
    body_html += ["<h2>Failed cells</h2>", _html_table(failed_table(failed))]
    runs = pd.DataFrame(_run_info(csv))
    md += ["## Runs\n", markdown_table(runs)]
    body_html += ["<h2>Runs</h2>", _html_table(runs)]
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text(_HTML.format(title=html.escape(f"gradfree report: {suites}"),
                                                  body="\n".join(body_html)))
    return out / "report.md"


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(none)</em></p>"
    return df.to_html(index=False, na_rep="", border=0, classes="table")


_HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f4f4f4; }}
img {{ max-width: 100%; }}
blockquote {{ border-left: 4px solid #8ab; margin: 1em 0; padding: 0.2em 1em; background: #f6fafb; }}
</style></head>
<body>
{body}
</body></html>
"""


def cmd_report(args: argparse.Namespace) -> int:
    try:
        path = build_report(args.results, args.out)
    except FileNotFoundError as err:
        print(f"gradfree: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path} and {path.with_suffix('.html')}")
    return 0


def add_commands(sub) -> None:
    from benchmarks import compare

    p = sub.add_parser("report", help="Markdown + HTML report (tables and plots) of a results folder",
                       description="Write report.md, report.html and PNG plots from RESULTS (a results folder "
                                   "or its results.csv). Reads only the results files.")
    p.add_argument("results", help="results folder (holding results.csv) or a csv file")
    p.add_argument("--out", default=None, help="report folder [<results folder>/report]")
    p.set_defaults(func=cmd_report)
    compare.add_commands(sub)
