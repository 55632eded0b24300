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

The rows, which of them count and the tables come from :mod:`benchmarks.tables`;
this module only lays them out. Malformed rows are skipped with a warning on
standard error.
"""

from __future__ import annotations

import base64
import html
import sys
from pathlib import Path

import pandas as pd

from benchmarks import plots
from benchmarks.comparison import time_to_accuracy_table
from benchmarks.metadata import read_metadata
from benchmarks.tables import (accuracy_table, failed_table, load_results, results_csv, size_table, split_rows,
                               summary_table, time_table)
from benchmarks.tuning import tuning_table
from benchmarks.walltime import cell_walls, format_duration, wall_note

SELECTION_NOTE = ("Hyperparameters were selected on the validation split: the ridge penalty alpha of random "
                  "features (the best of its grid by validation accuracy, then refitted on train + validation) "
                  "and the best epoch of the backprop methods (one-cycle WRN-22 keeps its last epoch). The test "
                  "split was scored once, for the selected model.")
TTA_NOTE = ("For each backprop configuration: the counted training time at which each seed's validation curve "
            "first reaches the best gradient-free validation accuracy of the same data (the target; a curve that "
            "never does is censored, 'not reached in X s', with X its whole training time), the speed-up at "
            "equal accuracy (that time over the target configuration's training time, mean ± std over seeds; "
            "'>' when a seed is censored: a lower bound), and the time the fastest gradient-free configuration "
            "needs to reach the backprop configuration's best validation accuracy. Targets are validation "
            "accuracies: the test split is scored once per cell and chooses nothing.")
TUNING_NOTE = ("What each configuration chose on the validation split, per seed: the learning rate of the "
               "backprop methods (each value of the grid trained for a few epochs, the best trained again; the "
               "grid's cost is tune_s, outside the training time) and the penalty of ridge (alpha) or logistic "
               "regression (C). A value at an end of its grid means the grid may have cut the optimum off. The "
               "spread of validation accuracy over the grid is how much that hyperparameter matters.")
TIME_NOTE = ("Training time (`train_total_s`) is the sum of the counted phases (extract, encode, project, fit "
             "for random features on train + validation images; train for backprop). Warm-up, evaluation and "
             "test prediction are measured but not counted. A cell whose features came from the feature cache "
             "is charged the seconds their extraction took when it ran (marked `cached`).")


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


def _run_info(csv: Path, finals: pd.DataFrame, walls: dict[tuple[str, str], float]) -> list[dict]:
    runs = []
    for m in read_metadata(csv.parent):
        mine = finals.loc[finals["run_id"] == m.get("run_id"), "cell_key"]
        timed = [walls[(m.get("run_id"), key)] for key in mine if (m.get("run_id"), key) in walls]
        runs.append({"run": m.get("run_id"), "started": m.get("started_at"), "cells counted": len(mine),
                     "their wall": format_duration(sum(timed)) if timed else "",
                     "cpu": m.get("cpu"), "cpus": m.get("cpu_count"),
                     "gpus": ", ".join(m.get("cuda_devices") or []) or "none",
                     "torch": (m.get("packages") or {}).get("torch"),
                     "commit": ((m.get("git") or {}).get("commit") or "")[:10]})
    return runs


def build_report(results: str | Path, out: str | Path | None = None) -> Path:
    """Write report.md, report.html and the PNGs; return the Markdown file's path."""
    csv = results_csv(results)
    out = Path(out) if out else csv.parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    df = load_results(csv, warn=lambda message: print(f"warning: {message}", file=sys.stderr))
    finals, epochs, failed = split_rows(df)
    walls = cell_walls(csv.parent)
    figures = plots.make_all(finals, epochs, out)

    suites = ", ".join(sorted(s for s in df["suite"].unique() if s)) or "(single runs)"
    datasets = ", ".join(sorted(d for d in finals["dataset"].unique() if d)) if not finals.empty else ""
    sections: list[tuple[str, str, object]] = [
        ("Summary", f"{len(finals)} finished cells, {len(failed)} failed, suite(s): {suites}; dataset(s): "
                    f"{datasets}. Mean ± std over seeds (std blank with one seed). {wall_note(walls, finals)}",
         summary_table(df)),
        ("Accuracy", SELECTION_NOTE, accuracy_table(finals)),
        ("Time breakdown (seconds)", TIME_NOTE, time_table(finals)),
        ("Time to accuracy", TTA_NOTE, time_to_accuracy_table(finals, epochs)),
        ("Hyperparameters chosen on validation", TUNING_NOTE, tuning_table(finals)),
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
    runs = pd.DataFrame(_run_info(csv, finals, walls))
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
