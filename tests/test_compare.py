"""``gradfree compare`` as the CI regression gate, on copies of the committed quick results.

Anything that keeps a cell from being judged must fail the gate: a missing or unreadable
metric, a missing column, a cell of the reference absent from the candidate, an empty
candidate, a reference with nothing to compare against, a torn file.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import pytest

from benchmarks.report.gate import compare
from benchmarks.report.tables import load_results

QUICK = Path(__file__).resolve().parent.parent / "results" / "quick" / "results.csv"
N_CELLS = 10  # successful final rows in results/quick


def _rows() -> tuple[list[str], list[dict]]:
    with open(QUICK, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def _write(path: Path, rows: list[dict], fields: list[str] | None = None) -> Path:
    fields = fields or _rows()[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def _finals(rows):
    return [r for r in rows if r["row_type"] == "final" and r["status"] == "ok"]


@pytest.fixture
def ref(tmp_path) -> Path:
    return _write(tmp_path / "a" / "results.csv", _rows()[1])


def _run(a, b, **kw) -> tuple[int, str]:
    out = io.StringIO()
    code = compare(a, b, tolerance=0.03, out=out, **kw)
    return code, out.getvalue()


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_identical_results_pass(ref):
    code, text = _run(ref, ref)
    assert code == 0
    assert _last_line(text) == f"compare: {N_CELLS} passed, 0 failed"


@pytest.mark.parametrize("value, shown", [("nan", "'nan'"), ("", "blank"), ("n/a", "'n/a'"), ("inf", "'inf'")])
def test_a_candidate_without_accuracy_fails(ref, tmp_path, value, shown):
    rows = _rows()[1]
    victim = _finals(rows)[3]
    victim["test_acc"] = value
    code, text = _run(ref, _write(tmp_path / "b.csv", rows))
    assert code == 1
    assert f"error: {victim['cell_key']}" in text and f"test_acc in B is {shown}, not a number" in text
    assert _last_line(text) == f"compare: {N_CELLS - 1} passed, 1 failed"


def test_every_candidate_accuracy_blank_fails_every_cell(ref, tmp_path):
    rows = _rows()[1]
    for r in rows:
        r["test_acc"] = ""
    code, text = _run(ref, _write(tmp_path / "b.csv", rows))
    assert code == 1 and _last_line(text) == f"compare: 0 passed, {N_CELLS} failed"


@pytest.mark.parametrize("side", ["A", "B"])
@pytest.mark.parametrize("column", ["test_acc", "cell_key", "status"])
def test_a_missing_required_column_is_named(ref, tmp_path, side, column):
    fields, rows = _rows()
    cut = _write(tmp_path / "cut.csv", rows, [f for f in fields if f != column])
    a, b = (cut, ref) if side == "A" else (ref, cut)
    code, text = _run(a, b)
    assert code == 1
    assert f"error: {side} ({cut}) has no column '{column}'" in text
    assert _last_line(text) == "compare: 0 passed, 1 failed"


def test_the_compared_metric_is_the_required_one(ref, tmp_path):
    fields, rows = _rows()
    no_val = _write(tmp_path / "b.csv", rows, [f for f in fields if f != "val_acc"])
    assert _run(ref, no_val)[0] == 0  # test_acc is compared; val_acc is not needed
    code, text = _run(ref, no_val, metric="val_acc")
    assert code == 1 and "has no column 'val_acc'" in text


def test_a_cell_missing_from_the_candidate_fails(ref, tmp_path):
    rows = _rows()[1]
    gone = _finals(rows)[0]
    code, text = _run(ref, _write(tmp_path / "b.csv", [r for r in rows if r is not gone]))
    assert code == 1
    assert f"error: missing from B (ok in A): {gone['cell_key']}" in text
    assert _last_line(text) == f"compare: {N_CELLS - 1} passed, 1 failed"


def test_a_cell_only_in_the_candidate_is_a_warning(ref, tmp_path):
    rows = _rows()[1]
    extra = dict(_finals(rows)[0], cell_key="ffffffffffffffff", seed="7")
    code, text = _run(ref, _write(tmp_path / "b.csv", [*rows, extra]))
    assert code == 0
    assert "warning: only in B: ffffffffffffffff" in text
    assert _last_line(text) == f"compare: {N_CELLS} passed, 0 failed"


def test_a_cell_that_failed_in_the_candidate_fails(ref, tmp_path):
    rows = _rows()[1]
    cell = _finals(rows)[2]
    cell.update(row_type="failed", status="failed", error="RuntimeError: out of memory", test_acc="")
    code, text = _run(ref, _write(tmp_path / "b.csv", rows))
    assert code == 1
    assert f"FAILED in B (ok in A): {cell['cell_key']}" in text and "out of memory" in text
    assert "missing from B" not in text  # one failure, told once
    assert _last_line(text) == f"compare: {N_CELLS - 1} passed, 1 failed"


def test_an_accuracy_drop_beyond_the_tolerance_fails(ref, tmp_path):
    rows = _rows()[1]
    cell = _finals(rows)[1]
    cell["test_acc"] = str(float(cell["test_acc"]) - 0.05)
    code, text = _run(ref, _write(tmp_path / "b.csv", rows))
    assert code == 1 and "ACC REGRESSION" in text and f"error: {cell['cell_key']}" in text
    assert _last_line(text) == f"compare: {N_CELLS - 1} passed, 1 failed"


def test_a_candidate_with_no_rows_fails(ref, tmp_path):
    fields, _ = _rows()
    code, text = _run(ref, _write(tmp_path / "b.csv", [], fields))
    assert code == 1 and "error: B (" in text and "has no rows" in text
    assert _last_line(text) == "compare: 0 passed, 1 failed"
    (tmp_path / "empty.csv").write_text("")
    code, text = _run(ref, tmp_path / "empty.csv")
    assert code == 1 and "has no header row" in text


def test_a_reference_with_no_successful_cell_fails(ref, tmp_path):
    rows = [r for r in _rows()[1] if r["row_type"] == "failed"]
    assert rows  # the quick results hold failed rows of their own
    code, text = _run(_write(tmp_path / "a.csv", rows), ref)
    assert code == 1 and "nothing to compare against" in text
    assert _last_line(text) == "compare: 0 passed, 1 failed"


def test_a_torn_tail_loses_only_the_torn_cell(ref, tmp_path):
    text = ref.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    torn_at = last.index('{""')  # inside the quoted method_config: the quote never closes
    b = tmp_path / "b.csv"
    b.write_text(text.rstrip("\n")[: len(text.rstrip("\n")) - len(last) + torn_at])
    code, out = _run(ref, b)
    assert code == 1
    assert "warning: B: " in out and "malformed" in out
    # The torn cell's earlier failed attempt is what B holds of it now.
    assert f"FAILED in B (ok in A): {last.split(',')[1]}" in out
    assert _last_line(out) == f"compare: {N_CELLS - 1} passed, 1 failed"


def test_a_torn_row_in_the_middle_is_skipped_not_glued(ref, tmp_path):
    lines = ref.read_text().splitlines()
    torn = 3
    victim = lines[torn].split(",")[1]
    # A crash left line 3 without its end (and an open quote); later appends went on after it.
    lines[torn] = lines[torn][: lines[torn].index('{""') + 5]
    b = tmp_path / "b.csv"
    b.write_text("\n".join(lines) + "\n")
    warned = []
    df = load_results(b, warn=warned.append)
    assert victim not in set(df["cell_key"]) and len(df) == len(lines) - 2  # every other row, none glued
    assert len(warned) == 1 and "malformed" in warned[0]
    assert list(df["cell_key"]) == [line.split(",")[1] for i, line in enumerate(lines) if i not in (0, torn)]
    # Glued rows (a torn line without its newline, then the next row): skipped, the rest read.
    lines = ref.read_text().splitlines()
    glued = lines[:torn] + [lines[torn][:40] + lines[torn + 1]] + lines[torn + 2:]
    b.write_text("\n".join(glued) + "\n")
    code, out = _run(ref, b)
    assert code == 1 and "warning: B: " in out and "malformed" in out
    assert _last_line(out).startswith(f"compare: {N_CELLS - 2} passed, ")


def test_garbage_is_an_error_not_a_crash(ref, tmp_path):
    rng = random.Random(0)
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(bytes(rng.randrange(256) for _ in range(4000)))
    code, out = _run(ref, garbage)
    assert code == 1 and _last_line(out).startswith("compare: 0 passed, ")
    code, out = _run(garbage, ref)
    assert code == 1 and "error: A (" in out


def test_command_line_exit_status(ref, tmp_path):
    from benchmarks.cli import main

    rows = _rows()[1]
    for r in rows:
        r["test_acc"] = "nan"
    bad = _write(tmp_path / "bad" / "results.csv", rows)
    assert main(["compare", str(ref.parent), str(ref.parent), "--tolerance", "0.03"]) == 0
    assert main(["compare", str(ref.parent), str(bad.parent), "--tolerance", "0.03"]) == 1
    assert main(["compare", str(ref.parent), str(tmp_path / "nowhere")]) == 2
