"""``gradfree report``: tables and plots from a results folder, nothing else.

Reads ``results.csv`` (and the runs' ``metadata.json`` beside it), never a
model. Writes ``report.md`` (tables + PNG links) and a self-contained
``report.html`` (PNG embedded as base64) into ``--out`` (default
``<results folder>/report``), with:

* first, the answer (:mod:`benchmarks.report.answer`): per data group and per cut, each
  side's configuration chosen on validation, its test accuracy and time, the
  interval of the difference (paired on the kept test predictions, else unpaired
  and said so) and the verdict after Holm's correction, or that the test split
  cannot separate the configurations; where a dataset has two training-set sizes or
  more, the learning curve and its crossover (:mod:`benchmarks.report.curve`);
* then the plots of :mod:`benchmarks.report.plots` (accuracy and training time against
  model size across cut layers, accuracy against training time with the Pareto
  front, the stacked time per phase, per-epoch time-to-accuracy);
* then time to accuracy, and the tables of every configuration (accuracy, time
  breakdown, tuning and model size per method x configuration x cut x precision,
  mean ± std over seeds), the failed cells with their errors, and the runs (commit,
  dirty tree flagged, the highest load average seen at a row). A time measured beside other work (a
  cell's load above its threads, :mod:`benchmarks.report.conditions`) is said to be an upper bound wherever it
  is shown.

The rows, which of them count and the tables come from :mod:`benchmarks.report.tables`;
this module only lays them out. Malformed rows are skipped with a warning on
standard error; a CSV that is not a results file, or holds no finished cell, is
refused before anything is written. Every value from the data (dataset, class,
cut and method names, errors) is shown literally, in Markdown (:func:`md_text`)
as in HTML. The figures are named by their content, and the previous report in
``--out`` is replaced whole or not at all, the folder's other files left as they
are (:mod:`benchmarks.report.reportdir`).
"""

from __future__ import annotations

import base64
import html
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks.report import plots
from benchmarks.report.answer import NOTE as ANSWER_NOTE
from benchmarks.report.answer import answer
from benchmarks.report.comparison import time_to_accuracy_table
from benchmarks.report.completeness import unfinished
from benchmarks.report.curve import CURVE_NOTE, crossovers, curve_figures, curve_table, shown
from benchmarks.report.conditions import earlier_attempts, mark_busy
from benchmarks.harness.metadata import read_metadata
from benchmarks.report.reportdir import ReportFolder
from benchmarks.harness.results import ResultsError
from benchmarks.report.tables import (accuracy_table, check_results_file, failed_table, load_results, results_csv,
                               size_table, split_rows, summary_table, time_table)
from benchmarks.report.tuning import tuning_table
from benchmarks.report.walltime import cell_walls, format_duration, wall_note

SELECTION_NOTE = ("Hyperparameters were selected on the validation split: the ridge penalty alpha (or the "
                  "logistic control's C) of random features (the best of its grid by validation accuracy, then "
                  "refitted on train + validation, unless the configuration says refit=False: then it keeps the "
                  "model fitted on the training images alone, as backprop does), the learning rate of a grid and "
                  "the best epoch of the backprop methods (one-cycle WRN-22 keeps its last epoch). The test "
                  "split was scored once, for the selected model.")
TTA_NOTE = ("For each backprop configuration: the counted training time at which each seed's validation curve "
            "first reaches the target, the mean validation accuracy of the gradient-free configuration chosen on "
            "validation for the same data, as the span from the validation point before (validation runs every "
            "eval_every epochs: the curve crossed the target in between; a curve that never does is censored, "
            "'not reached in X s', with X its whole training time); the speed-up at equal accuracy (those times "
            "over the target configuration's training time, mean over seeds, ± the std of the upper end), and "
            "beside it the same ratio with each side's tuning time "
            "(tune_s) added; no speed-up where a seed never reached the target, nor where the test split cannot "
            "separate the configurations; and the time the fastest gradient-free configuration needs to reach "
            "the backprop configuration's best validation accuracy. Targets are validation accuracies: the test "
            "split is scored once per cell and chooses nothing.")
TUNING_NOTE = ("What each configuration chose on the validation split, per seed: the learning rate of the "
               "backprop methods (each value of the grid trained for a few epochs, the best trained again; the "
               "grid's cost is tune_s, outside the training time) and the penalty of ridge (alpha) or logistic "
               "regression (C). A value at an end of its grid means the grid may have cut the optimum off. The "
               "spread of validation accuracy over the grid is how much that hyperparameter matters.")
SIZE_NOTE = ("What is kept after training: backbone up to the cut + ridge weights for random features (R is "
             "regenerated from its seed, its would-be size shown for reference); the whole network for backprop.")
TIME_NOTE = ("Training time (`train_total_s`) is the sum of the counted phases (extract, encode, project, fit "
             "for random features: on the training and validation images, the fit on the training images for each "
             "alpha and, unless refit=False, again on both; train for backprop). Warm-up, evaluation and "
             "test prediction are measured but not counted. A cell whose features came from the feature cache "
             "is charged the seconds their extraction took when it ran (marked `cached`).")


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------

#: What Markdown would read as markup in a value: backslash, code, emphasis, links, strikethrough, math,
#: a table's cell separator, and "_" at a word's edge ("small_cnn" stays as it is).
_MD_MARKUP = re.compile(r"[\\`*\[\]~$|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_text(value: object) -> str:
    """``value`` (a dataset, class, cut or method name, an error...) as Markdown that shows it literally:
    no HTML tag or entity (``<img onerror=...>`` is text) and markup characters backslashed (``[a](javascript:...)``
    is no link), on one line."""
    text = re.sub(r"[\r\n]+", " ", str(value).replace("&", "&amp;").replace("<", "&lt;"))
    return _MD_MARKUP.sub(lambda m: "\\" + m.group(0), text)


def _md_code(value: object) -> str:
    """``value`` as a Markdown code span, whatever backticks it holds."""
    text = re.sub(r"[\r\n]+", " ", str(value))
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"{fence}{text}{fence}"


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (no extra dependency), every value shown literally (:func:`md_text`)."""
    if df.empty:
        return "_(none)_\n"
    cells = df.astype(object).where(df.notna(), "").astype(str).map(md_text)
    lines = ["| " + " | ".join(md_text(c) for c in df.columns) + " |", "|" + "---|" * len(df.columns)]
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
                     "commit": ((m.get("git") or {}).get("commit") or "")[:10],
                     "dirty tree": _dirty(m.get("git") or {}),
                     "highest load": _highest_load(finals.loc[finals["run_id"] == m.get("run_id")])})
    return runs


def _dirty(git: dict) -> str:
    """'' for a clean tree; else flagged, with the hash of its diff."""
    if git.get("dirty") is None:
        return "unknown" if not git.get("commit") else ""
    return f"YES (diff {git.get('diff_sha1', '')[:10]})" if git["dirty"] else ""


def _highest_load(rows: pd.DataFrame) -> str:
    """The highest 1-minute load average seen at a row of the run's cells (:func:`mark_busy`), over their
    threads: a run timed beside other work shows a load well above its threads."""
    loads = rows.get("highest_load", pd.Series(dtype=float)).dropna()
    if loads.empty:
        return ""
    t = pd.to_numeric(rows.get("threads", pd.Series(dtype=object)), errors="coerce").max()
    return f"{loads.max():.2f}" + (f" ({int(t)} threads)" if pd.notna(t) else "")


def build_report(results: str | Path, out: str | Path | None = None) -> Path:
    """Write report.md, report.html and the PNGs; return the Markdown file's path.

    Refuses (:class:`benchmarks.harness.results.ResultsError`) a CSV that is not a results file and one with
    no finished cell, before writing anything. The folder's other files are left as they are, and the
    previous report is replaced whole or not at all (:mod:`benchmarks.report.reportdir`)."""
    csv = results_csv(results)
    check_results_file(csv)
    out = Path(out) if out else csv.parent / "report"
    warn = lambda message: print(f"warning: {message}", file=sys.stderr)  # noqa: E731
    df = load_results(csv, warn=warn)
    finals, epochs, failed = split_rows(df)
    finals = mark_busy(finals, df, earlier_attempts(csv.parent))  # times measured beside other work are said so
    if finals.empty:
        failures = f" ({len(failed)} failed: their errors are in the file's error column)" if len(failed) else ""
        raise ResultsError(f"nothing to report: {csv} holds no finished cell{failures}. Run cells into it "
                           "(`gradfree run ... --out FOLDER`), or give another results folder.")
    with ReportFolder(out) as folder:
        found = answer(finals, csv.parent)
        curve = curve_table(found, finals)
        crossers = crossovers(found)  # the datasets with two sizes or more
        crossings = [c.line() for c in crossers]
        figures = curve_figures(finals, curve, crossers) + plots.make_all(finals, epochs)
        files = {fig.name: folder.figure_name(fig.name, fig.png) for fig in figures if fig.png is not None}
        suites = ", ".join(sorted(s for s in df["suite"].unique() if s)) or "(single runs)"
        partial = unfinished(csv.parent, finals, failed)  # said first, on the terminal too
        for line in partial:
            warn(line)
        lines = [*partial, *(found.lines() or ["No data group has both sides."])]

        def answer_text(value: Callable[[str], str]) -> str:  # names from the data, shown literally
            return "\n\n".join(value(line) for line in lines)  # one paragraph per data group

        first: list[Section] = [
            ("The answer", answer_text, found.table()),
            ("How it was decided", ANSWER_NOTE, None),
            ("The answer per cut", "The same, within each cut both sides ran at.", found.table(per_cut=True)),
            *([("Learning curve", lambda value: "\n\n".join([*map(value, crossings), CURVE_NOTE]), shown(curve))]
              if crossings else []),
        ]
        after = _details(csv, df, (finals, epochs, failed), cell_walls(csv.parent), found.unseparable(), suites)
        title = f"gradfree report: {suites}"
        md = _markdown(title, csv, first, figures, files, after)
        page = _page(title, csv, first, figures, after)
        folder.replace({files[f.name]: f.png for f in figures if f.png is not None},
                       {"report.md": md.encode(), "report.html": page.encode()}, warn)
    return out / "report.md"


def _details(csv: Path, df: pd.DataFrame, rows: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
             walls: dict[tuple[str, str], float], unseparable: list[dict], suites: str) -> list[Section]:
    """The sections after the figures: time to accuracy, then every configuration's numbers, the failed
    cells and the runs (``rows``: the final, epoch and failed rows)."""
    finals, epochs, failed = rows
    datasets = ", ".join(sorted(d for d in finals["dataset"].unique() if d))

    def summary(value: Callable[[str], str]) -> str:  # the data's names through ``value``, the Markdown's or not
        return (f"{len(finals)} finished cells, {len(failed)} failed, suite(s): {value(suites)}; dataset(s): "
                f"{value(datasets)}. Mean ± std over seeds (std blank with one seed). {wall_note(walls, finals)}")

    return [
        ("Time to accuracy", TTA_NOTE, time_to_accuracy_table(finals, epochs, unseparable)),
        ("Summary", summary, summary_table(df)),
        ("Accuracy", SELECTION_NOTE, accuracy_table(finals)),
        ("Time breakdown (seconds)", TIME_NOTE, time_table(finals)),
        ("Hyperparameters chosen on validation", TUNING_NOTE, tuning_table(finals)),
        ("Model size", SIZE_NOTE, size_table(finals)),
        ("Failed cells", "", failed_table(failed)),
        ("Runs", RUNS_NOTE, pd.DataFrame(_run_info(csv, finals, walls))),
    ]


RUNS_NOTE = ("Each run: its commit, and a dirty tree flagged with the hash of its diff (a published study "
             "holds none); the highest 1-minute load average at one of its rows, against its threads: a "
             "load well above the threads means its times were measured beside other work.")

#: (heading, text or a function of how to show the data's names in it, table or None)
Section = tuple[str, str | Callable[[Callable[[str], str]], str], pd.DataFrame | None]


def _text(text, value: Callable[[str], str]) -> str:
    return text(value) if callable(text) else text


@dataclass(frozen=True)
class _Format:
    """How a section is written in one format: a heading, a paragraph (its text built with ``value``
    showing the data's names) and a table."""

    heading: Callable[[str], str]
    para: Callable[[str], str]
    table: Callable[[pd.DataFrame], str]
    value: Callable[[str], str]

    def sections(self, items: list[Section]) -> list[str]:
        out = []
        for heading, text, table in items:
            out += [self.heading(heading), *([self.para(_text(text, self.value))] if text else []),
                    *([self.table(table)] if table is not None else [])]
        return out


_MD = _Format(lambda h: f"## {h}\n", lambda t: f"{t}\n", lambda df: markdown_table(df), md_text)
_HTML_FORMAT = _Format(lambda h: f"<h2>{html.escape(h)}</h2>", lambda t: f"<p>{html.escape(t)}</p>",
                       lambda df: _html_table(df), str)


def _markdown(title: str, csv: Path, tables: list[Section], figures: list[plots.Figure], files: dict[str, str],
              after: list[Section]) -> str:
    md = [f"# {md_text(title)}\n", f"Generated from {_md_code(csv)} (reports read only results files).\n",
          f"> {SELECTION_NOTE}\n", *_MD.sections(tables), "## Plots\n"]
    for fig in figures:
        md.append(f"### {md_text(fig.title)}\n")
        if fig.png is None:
            md.append(f"_Skipped: {md_text(fig.note)}_\n")
        else:
            md.append(f"{md_text(fig.caption)}\n\n![{md_text(fig.title)}]({files[fig.name]})\n")
    return "\n".join(md + _MD.sections(after))


def _page(title: str, csv: Path, tables: list[Section], figures: list[plots.Figure], after: list[Section]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>Generated from <code>{html.escape(str(csv))}</code>.</p>",
            f"<blockquote>{html.escape(SELECTION_NOTE)}</blockquote>", *_HTML_FORMAT.sections(tables),
            "<h2>Plots</h2>"]
    for fig in figures:
        body.append(f"<h3>{html.escape(fig.title)}</h3>")
        if fig.png is None:
            body.append(f"<p><em>Skipped: {html.escape(fig.note)}</em></p>")
        else:
            data = base64.b64encode(fig.png).decode()
            body += [f"<p>{html.escape(fig.caption)}</p>",
                     f'<img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">']
    return _HTML.format(title=html.escape(title), body="\n".join(body + _HTML_FORMAT.sections(after)))


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
