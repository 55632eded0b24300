"""The measured wall time of a suite's cells, read back from its results folder."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.harness.results import SCHEMA, SUPERSEDED_FILE, ResultsWarning
from benchmarks.report.walltime import cell_walls, format_duration, suite_wall, wall_note

T0 = "2026-12-01T10:00:00+00:00"


def _at(seconds: int, start: str = T0) -> str:
    return (datetime.fromisoformat(start) + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def _rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SCHEMA, lineterminator="\n")
        w.writeheader()
        w.writerows({k: "" for k in SCHEMA} | r for r in rows)


def _run(folder: Path, run_id: str, started: str) -> None:
    (folder / "runs" / run_id).mkdir(parents=True)
    (folder / "runs" / run_id / "metadata.json").write_text(json.dumps({"run_id": run_id, "started_at": started}))


def _row(run: str, key: str, at: str, row_type: str = "final") -> dict:
    return {"run_id": run, "cell_key": key, "row_type": row_type, "status": "ok", "finished_at": at}


def test_each_cell_runs_from_the_end_of_the_one_before_it_even_a_set_aside_one(tmp_path):
    t1 = "2026-12-02T08:00:00+00:00"
    _run(tmp_path, "A", T0)
    _run(tmp_path, "B", t1)
    _rows(tmp_path / "results.csv", [
        _row("A", "c1", _at(10)),
        _row("A", "c3", _at(33), row_type="epoch"),  # an epoch row ends no cell
        _row("A", "c3", _at(40)),
        _row("B", "c4", _at(5, t1)),
        _row("C", "c5", _at(99)),  # a run without metadata: its first cell has no start
        _row("C", "c6", _at(120)),
    ])
    _rows(tmp_path / SUPERSEDED_FILE, [_row("A", "c2", _at(25))])
    walls = cell_walls(tmp_path)
    assert walls == {("A", "c1"): 10, ("A", "c2"): 15, ("A", "c3"): 15, ("B", "c4"): 5, ("C", "c6"): 21}
    counted = [("A", "c1"), ("A", "c3"), ("B", "c4"), ("C", "c5"), ("C", "c6")]
    assert suite_wall(walls, counted) == (51, 4, 3)

    finals = pd.DataFrame(counted, columns=["run_id", "cell_key"])
    note = wall_note(walls, finals)
    assert "51 s (4 cells over 3 run(s); 1 without a start on record" in note


def test_a_folder_without_metadata_says_so(tmp_path):
    _rows(tmp_path / "results.csv", [_row("A", "c1", _at(10))])
    assert cell_walls(tmp_path) == {}
    assert wall_note(cell_walls(tmp_path), pd.DataFrame({"run_id": ["A"], "cell_key": ["c1"]})).startswith("No wall time")


def test_durations_read_as_a_person_writes_them():
    assert [format_duration(s) for s in (45, 119.6, 738, 3599, 7740, 3600 * 2 + 9 * 60 + 20)] == [
        "45 s", "120 s", "12.3 min", "60.0 min", "2 h 09 min", "2 h 09 min"]


def test_a_torn_last_row_is_skipped_not_trusted(tmp_path):
    _run(tmp_path, "A", T0)
    _rows(tmp_path / "results.csv", [_row("A", "c1", _at(10))])
    with open(tmp_path / "results.csv", "a") as f:  # a crash mid-write: half a final row
        f.write(f"A,c2,final,ok,,{_at(30)[:13]}")
    with pytest.warns(ResultsWarning, match="skipped"):
        assert cell_walls(tmp_path) == {("A", "c1"): 10}
