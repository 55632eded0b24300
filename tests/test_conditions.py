"""Times measured beside other work are said to be upper bounds (benchmarks.report.conditions): a cell's highest
1-minute load average over all of its rows, against its threads, marks it; the answer, the learning curve and
time to accuracy say so beside the times, the curve draws such points hollow. Tried on a copy of the committed
EfficientNet-Lite0 curve, alone on the machine when it ran, with one chosen cell's load raised."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.report.answer import answer
from benchmarks.report.build import build_report
from benchmarks.report.gate import compare
from benchmarks.report.curve import curve_table
from benchmarks.harness.loadavg import MARGIN
from benchmarks.report.conditions import busy_note, earlier_attempts, mark_busy
from benchmarks.report.tables import load_results, split_rows
from benchmarks.report.verdict import rows_of

REPO = Path(__file__).resolve().parent.parent
EFFNET = REPO / "results" / "curve-effnet-cifar10"


def _rows(*cells) -> pd.DataFrame:
    """(cell_key, run_id, row_type, threads, extra) rows, all ok."""
    return pd.DataFrame(cells, columns=["cell_key", "run_id", "row_type", "threads", "extra"]).assign(status="ok")


def _load(start: float, row: float, **more) -> str:
    return json.dumps({"load_at_start": start, "load_at_row": row, **more})


def test_a_cell_is_busy_when_a_row_of_its_run_saw_load_above_its_threads():
    rows = _rows(("a", "r2", "epoch", 2, _load(1.9, 4.9)), ("a", "r2", "final", 2, _load(1.9, 2.0)),
                 ("b", "r2", "final", 2, _load(2.0 + MARGIN, 2.1)),
                 ("c", "r2", "final", 2, _load(0.5, 2.0 + MARGIN + 0.01)),
                 ("d", "r2", "final", 2, ""),  # written before rows kept the load
                 ("e", "r2", "final", 2, "{not json"),
                 ("f", "r1", "failed", 2, _load(5.0, 5.0)), ("f", "r2", "final", 2, _load(2.0, 2.0)))
    marked = mark_busy(rows[rows["row_type"] == "final"], rows).set_index("cell_key")
    assert marked["highest_load"].dropna().to_dict() == {"a": 4.9, "b": 3.0, "c": pytest.approx(3.01), "f": 2.0}
    assert marked.loc["a", "busy"] == 1.0  # an epoch's row counts: the final one alone looked quiet
    assert marked.loc["b", "busy"] == 0.0  # at the margin, not over it
    assert marked.loc["c", "busy"] == 1.0
    assert marked.loc["f", "busy"] == 0.0  # a failed attempt before it is another run: not its time
    assert marked[["busy", "highest_load"]].loc[["d", "e"]].isna().all().all()  # unknown, not quiet
    note = busy_note(marked.reset_index())
    assert note.startswith("2 of 6 timed beside other work (load up to 4.9 on 2 threads)")
    assert busy_note(marked.loc[["b", "d"]].reset_index()) == ""


def test_a_resumed_cell_counts_the_epochs_of_the_attempt_it_resumed():
    # Its first epochs were timed in the interrupted run (results.interrupted.csv); the run that finished it
    # wrote them again from the checkpoint, with today's load.
    earlier = _rows(("a", "r1", "epoch", 2, _load(2.0, 4.4)), ("b", "r1", "epoch", 2, _load(2.0, 4.4)))
    rows = _rows(("a", "r2", "final", 2, _load(2.0, 2.0, resumed_from=["main@44"])),
                 ("b", "r2", "final", 2, _load(2.0, 2.0)))  # b's checkpoint was refused: it ran whole in r2
    marked = mark_busy(rows, rows, earlier).set_index("cell_key")
    assert marked["busy"].to_dict() == {"a": 1.0, "b": 0.0}


@pytest.fixture(scope="module")
def effnet():
    df = load_results(EFFNET)
    finals, _, _ = split_rows(df)
    return df, mark_busy(finals, df, earlier_attempts(EFFNET))


def test_the_committed_curve_ran_alone_and_says_nothing(effnet):
    _, finals = effnet
    assert finals["busy"].notna().all() and not finals["busy"].any()
    assert not curve_table(answer(finals, EFFNET), finals)["timing"].astype(bool).any()


XEON = "Intel Xeon (2 logical cores)"


@pytest.fixture(scope="module")
def edited(effnet, tmp_path_factory):
    """A copy of the committed curve where one seed of backprop's chosen configuration at 500 images saw a load
    of 5.5 at one epoch (another job, for a minute) and ran on another CPU model; its key, and its report."""
    _, finals = effnet
    chosen = answer(finals, EFFNET).entries[0].bp  # 500 images: backprop's validation-chosen configuration
    key = rows_of(finals, chosen)["cell_key"].iloc[0]
    tmp = tmp_path_factory.mktemp("conditions")
    copy = tmp / "curve"
    shutil.copytree(EFFNET, copy, ignore=shutil.ignore_patterns("report"))
    csv = pd.read_csv(copy / "results.csv", dtype=str, keep_default_na=False)
    epoch = csv.index[(csv["cell_key"] == key) & (csv["row_type"] == "epoch")][0]
    csv.at[epoch, "extra"] = json.dumps({**json.loads(csv.at[epoch, "extra"] or "{}"), "load_at_row": 5.5})
    csv["device_name"] = csv["device_name"].mask(csv["cell_key"] == key, XEON)
    csv.to_csv(copy / "results.csv", index=False)
    return copy, key, build_report(copy, tmp / "report").read_text()


def test_a_chosen_cell_timed_beside_other_work_is_said_so_in_the_report(edited):
    _, _, md = edited
    answer_table = md.split("## The answer\n")[1].split("## How it was decided")[0]
    line = next(row for row in answer_table.splitlines() if row.startswith("| cifar10 | 500 |"))
    assert "(timed beside other work: an upper bound)" in line
    curve = md.split("## Learning curve")[1].split("## Plots")[0]
    assert "1 of 2 timed beside other work (load up to 5.5 on 2 threads)" in curve
    assert "Hollow: timed beside other work" in md
    other = [row for row in answer_table.splitlines() if row.startswith("| cifar10 | 1500 |")]
    assert other and "other work" not in other[0]


def test_the_gate_says_which_side_was_timed_beside_other_work(edited):
    copy, key, _ = edited
    out = io.StringIO()
    assert compare(EFFNET, copy, out=out) == 0  # the same cells: it judges, it passes
    lines = [line for line in out.getvalue().splitlines() if "timed beside other work" in line]
    assert len(lines) == 1 and lines[0].startswith(key) and "(B timed beside other work)" in lines[0]


def test_times_from_two_cpu_models_are_said_to_make_no_ratio(edited):
    # Issue 23, item 9: a long suite's sessions may land on another CPU model.
    _, _, md = edited
    top = md.split("## The answer\n")[1].split("|")[0]
    [at500] = [line for line in top.splitlines() if line.startswith("cifar10, 500 training")]
    assert f"measured on 2 CPU models (AMD EPYC (2 logical cores); {XEON}): no ratio of them is a speed-up" in at500
    assert "CPU models" not in top.replace(at500, "")
    assert "Its times were measured on 2 CPU models" in md
    curve = md.split("## Learning curve")[1].split("## Plots")[0]
    [row] = [line for line in curve.splitlines() if line.startswith("| cifar10 | 500 | backprop |")]
    assert f"AMD EPYC (2 logical cores); {XEON}" in row
