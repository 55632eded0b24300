"""``gradfree run --retime-busy``: the finished cells whose times were measured beside other work (a load average
above their threads by more than one core at one of their rows, benchmarks.harness.loadavg) are set aside,
rows and kept predictions, and run again; the others are left as they are. A real tiny suite on real CIFAR-10
images; the loads its rows recorded are then set by hand, so that which cell is busy does not depend on how
busy this machine is."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cli import main
from benchmarks.harness.loadavg import busy_cells, is_busy
from benchmarks.harness.predictions import path_of, read_predictions
from benchmarks.harness.results import append_rows, read_rows
from tiny_data import restore_torch_threads, tiny_cifar10, tiny_settings  # noqa: F401 (autouse fixture)

SUITE = tiny_settings("retime") + """
    [[grid]]
    method = "random-features"
    n_components = [128, 256]
"""


@pytest.fixture(scope="module")
def tiny_dir(cifar10_dir, tmp_path_factory):
    return tiny_cifar10(cifar10_dir, tmp_path_factory.mktemp("cifar10-tiny"))


def _set_loads(path: Path, loads: dict[str, float]) -> None:
    """Rewrite results.csv with every row of each cell of ``loads`` recording that load (start and row)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    for row in rows:
        if row["cell_key"] in loads:
            extra = json.loads(row["extra"] or "{}")
            row["extra"] = json.dumps({**extra, "load_at_start": loads[row["cell_key"]],
                                       "load_at_row": loads[row["cell_key"]]})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_the_rule_is_the_threads_plus_one_core():
    assert is_busy(3.01, "2") and not is_busy(3.0, 2) and not is_busy(0.4, "1")
    assert is_busy(5.0, "") is None and is_busy(5.0, None) is None  # threads unknown: not said either way
    final = {"row_type": "final", "status": "ok", "run_id": "r1", "threads": "1"}
    rows = [{**final, "cell_key": "a", "extra": json.dumps({"load_at_start": 0.9, "load_at_row": 2.5})},
            {**final, "cell_key": "b", "extra": json.dumps({"load_at_start": 0.9, "load_at_row": 1.9})},
            {**final, "cell_key": "c", "threads": "", "extra": json.dumps({"load_at_row": 9.0})},
            {**final, "cell_key": "d", "extra": json.dumps({"load_at_row": True})},  # not a load
            {**final, "cell_key": "e", "status": "failed", "extra": json.dumps({"load_at_row": 9.0})}]  # not done
    assert busy_cells(rows) == {"a"}


def test_retime_busy_runs_the_busy_cells_again_and_keeps_what_it_replaced(tmp_path, tiny_dir, capsys):
    suite = tmp_path / "retime.toml"
    suite.write_text(textwrap.dedent(SUITE))
    out = tmp_path / "out"
    args = ["run", "--suite", str(suite), "--data-dir", str(tiny_dir), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    finals = {r["n_components"]: r for r in read_rows(out / "results.csv") if r["row_type"] == "final"}
    busy, quiet = finals["128"]["cell_key"], finals["256"]["cell_key"]
    _set_loads(out / "results.csv", {busy: 4.5, quiet: 0.5})
    before = read_rows(out / "results.csv")
    # An interrupted attempt of each (kept in results.interrupted.csv, as a repair leaves them).
    attempts = [{**r, "row_type": "epoch", "run_id": "r0"} for r in before]
    append_rows(out / "results.interrupted.csv", attempts)
    interrupted = read_rows(out / "results.interrupted.csv")
    old_run = read_predictions(out, busy).run_id

    capsys.readouterr()
    assert main([*args, "--dry-run", "--retime-busy"]) == 0
    plan = capsys.readouterr().out
    assert [line.split()[1] for line in plan.splitlines() if " re-time " in line] == [busy]
    assert "2 cells, 1 done before" in plan
    assert main(args) == 0 and read_rows(out / "results.csv") == before  # without the flag: nothing runs again

    assert main([*args, "--retime-busy"]) == 0
    # its rows, then its attempt's: the new run starts whole, and the load it is judged by is its own
    assert read_rows(out / "results.superseded.csv") == [r for r in before + interrupted if r["cell_key"] == busy]
    assert [r["cell_key"] for r in read_rows(out / "results.interrupted.csv")] == [quiet]
    after = read_rows(out / "results.csv")
    assert [r for r in after if r["cell_key"] == quiet] == [r for r in before if r["cell_key"] == quiet]
    [again] = [r for r in after if r["cell_key"] == busy]
    assert again["row_type"] == "final" and again["status"] == "ok" and again["run_id"] != old_run
    assert read_predictions(out, busy, again["run_id"]) is not None  # its own predictions, paired as before
    [kept] = (out / "predictions" / "superseded").iterdir()
    assert kept.name == f"{busy}.{old_run}.npz" and path_of(out, busy).exists()
    with np.load(kept) as old:  # whole, and of the same test images as the new ones
        assert str(old["run_id"]) == old_run and (old["ids"] == read_predictions(out, busy).ids).all()
