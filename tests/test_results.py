import json

import pytest

from benchmarks.harness import results as res
from benchmarks.harness.resultsfile import ResultsFile


def test_append_keeps_schema_and_fields_with_newlines_and_quotes(tmp_path):
    path = tmp_path / "out" / "results.csv"
    res.append_rows(path, [{"cell_key": "a", "row_type": "final", "status": "ok", "test_acc": 0.5,
                            "unknown_column": 3}])
    res.append_rows(path, [{"cell_key": "b", "row_type": "failed", "status": "failed", "error": "x, \"y\"\nz"}])
    rows = res.read_rows(path)
    assert [r["cell_key"] for r in rows] == ["a", "b"]
    assert list(rows[0]) == list(res.SCHEMA)
    assert json.loads(rows[0]["extra"]) == {"unknown_column": 3}
    assert rows[1]["error"] == "x, \"y\"\nz"
    assert res.finished_keys(path) == {"a"}
    assert not list(path.parent.glob("*.tmp")) and not list(path.parent.glob(".*.tmp"))


def test_results_error_is_a_value_error():
    # The CLI prints "gradfree: error: <message>" for a ValueError.
    assert issubclass(res.ResultsError, ValueError)


def test_a_new_file_gets_its_header_once(tmp_path):
    path = tmp_path / "deep" / "results.csv"
    res.append_rows(path, [{"cell_key": "a", "row_type": "final", "status": "ok"}])
    res.append_rows(path, [{"cell_key": "b", "row_type": "final", "status": "ok"}])
    assert path.read_bytes().count(b"run_id,cell_key") == 1
    assert path.read_bytes().startswith(res._HEADER)


def test_an_empty_results_file_is_given_its_header(tmp_path):
    (tmp_path / "results.csv").write_bytes(b"")
    assert res.read_rows(tmp_path / "results.csv") == []
    with ResultsFile(tmp_path) as results:
        results.append([{"cell_key": "a", "row_type": "final", "status": "ok"}])
        assert results.finished_keys() == {"a"}


def test_append_refuses_a_foreign_layout(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(res.ResultsError, match="new --out folder"):
        res.append_rows(path, [{"cell_key": "x"}])
    assert path.read_text() == "a,b\n1,2\n"  # nothing lost


def test_metadata_records_environment(tmp_path):
    from benchmarks.harness.metadata import write_metadata

    path = write_metadata(tmp_path, "run1", {"k": 1}, argv=["gradfree", "run"])
    meta = json.loads(path.read_text())
    assert meta["config"] == {"k": 1}
    assert meta["command_line"] == ["gradfree", "run"]
    assert meta["packages"]["torch"]
    assert "commit" in meta["git"]
