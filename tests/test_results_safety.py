"""results.csv survives crashes, torn rows, two runs and a full disk: real files and real processes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.harness import results as res
from benchmarks.harness.results import ResultsError
from benchmarks.harness.resultsfile import ResultsFile

REPO = Path(__file__).resolve().parent.parent


def _row(key, row_type="final", run_id="r1", **extra):
    status = "failed" if row_type == "failed" else "ok"
    return {"run_id": run_id, "cell_key": key, "row_type": row_type, "status": status, **extra}


def _finished(out: Path) -> tuple[Path, bytes, int]:
    """A results file of three finished cells; the last row has quoted, multi-line fields."""
    path = out / res.RESULTS_FILE
    res.append_rows(path, [_row("a", test_acc=0.5), _row("b", test_acc=0.6)])
    c_start = path.stat().st_size
    res.append_rows(path, [_row("c", error="boom\nline two", method_config={"lr": 0.1, "epochs": 3})])
    return path, path.read_bytes(), c_start


def _keys(rows):
    return [r["cell_key"] for r in rows]


def _side_files(out: Path, kind="torn"):
    return sorted(out.glob(f"{res.RESULTS_FILE}.{kind}-*"))


@pytest.fixture
def spawn():
    """Start ``python -c script args...`` (stdin and stdout piped); killed at the end of the test if alive."""
    children = []

    def start(script: str, *args: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        child = subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, env=env, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdin.close()
        child.stdout.close()


# ----------------------------------------------------------------------------
# 1. Torn tails and malformed rows
# ----------------------------------------------------------------------------

def _cut_points(data: bytes, c_start: int) -> dict[str, int]:
    quoted = data.index(b'"boom', c_start)
    return {
        "mid-field": c_start + 3,  # inside run_id
        "mid-quoted-field": data.index(b'"{', c_start) + 5,  # inside the method_config JSON
        "after-newline-inside-quotes": data.index(b"\n", quoted) + 1,  # the error field's own newline
        "just-before-the-newline": len(data) - 1,
    }


CUTS = ["mid-field", "mid-quoted-field", "after-newline-inside-quotes", "just-before-the-newline"]


@pytest.mark.parametrize("cut", CUTS)
def test_torn_tail_is_set_aside_and_its_cell_runs_again(tmp_path, cut):
    path, data, c_start = _finished(tmp_path)
    at = _cut_points(data, c_start)[cut]
    path.write_bytes(data[:at])
    inode = path.stat().st_ino
    with ResultsFile(tmp_path) as results:
        assert len(results.notices) == 1 and "set aside" in results.notices[0]
        assert path.stat().st_ino == inode  # cut in place
        assert results.finished_keys() == {"a", "b"}  # the torn row is not done
        [side] = _side_files(tmp_path)
        assert side.read_bytes() == data[c_start:at]  # the torn bytes, exactly
        assert path.read_bytes() == data[:c_start]  # truncated to the last good row
        results.append([_row("c", error="boom\nline two")])  # the re-run
    assert _keys(res.read_rows(path)) == ["a", "b", "c"]
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(df.columns) == list(res.SCHEMA) and list(df["cell_key"]) == ["a", "b", "c"]


@pytest.mark.parametrize("cut", CUTS)
def test_readers_skip_a_torn_tail_without_touching_the_file(tmp_path, cut):
    path, data, c_start = _finished(tmp_path)
    path.write_bytes(data[:_cut_points(data, c_start)[cut]])
    before = path.read_bytes()
    with pytest.warns(res.ResultsWarning, match="malformed"):
        rows = res.read_rows(path)
    assert _keys(rows) == ["a", "b"] and all(len(r) == len(res.SCHEMA) for r in rows)
    with pytest.warns(res.ResultsWarning):
        assert res.finished_keys(path) == {"a", "b"}
    assert path.read_bytes() == before


def test_append_after_a_torn_tail_starts_its_own_line(tmp_path):
    # A writer that did not repair first (a scratch file, old code) must still not glue rows.
    path, data, c_start = _finished(tmp_path)
    path.write_bytes(data[:c_start + 10])
    res.append_rows(path, [_row("d")])
    with pytest.warns(res.ResultsWarning):
        assert _keys(res.read_rows(path)) == ["a", "b", "d"]
    with ResultsFile(tmp_path) as results:
        assert results.finished_keys() == {"a", "b", "d"}
    assert _side_files(tmp_path)[0].read_bytes() == data[c_start:c_start + 10] + b"\n"


def test_a_row_glued_onto_a_torn_one_is_set_aside(tmp_path):
    # What the old code left after a resume: half a row, the next row glued on (98 fields), more rows.
    path, data, c_start = _finished(tmp_path)
    head = data[:c_start]
    glued = data[c_start:c_start + 40] + res._encode([_row("e")])
    tail = res._encode([_row("f")])
    path.write_bytes(head + glued + tail)
    with ResultsFile(tmp_path) as results:
        assert results.finished_keys() == {"a", "b", "f"}
    assert path.read_bytes() == head + tail
    assert _side_files(tmp_path)[0].read_bytes() == glued


@pytest.mark.parametrize("quotes_after", [True, False], ids=["rows-with-quotes-after", "plain-rows-after"])
def test_open_quote_garbage_in_the_middle_swallows_nothing(tmp_path, quotes_after):
    path = tmp_path / res.RESULTS_FILE
    extra = {"method_config": {"lr": 0.1}} if quotes_after else {}
    head = res._HEADER + res._encode([_row("a")])
    garbage = b'garbage,"an open quote that never closes\n'
    tail = res._encode([_row("b", **extra), _row("c", **extra)])
    path.write_bytes(head + garbage + tail)
    os.chmod(path, 0o664)
    with pytest.warns(res.ResultsWarning):
        assert _keys(res.read_rows(path)) == ["a", "b", "c"]
    with ResultsFile(tmp_path) as results:
        assert results.finished_keys() == {"a", "b", "c"}
        assert any("malformed" in n for n in results.notices)
    assert path.read_bytes() == head + tail  # rewritten without the garbage, every good row kept
    assert stat.S_IMODE(path.stat().st_mode) == 0o664  # and its mode kept
    assert _side_files(tmp_path)[0].read_bytes() == garbage


def test_a_row_with_the_wrong_number_of_fields_is_set_aside(tmp_path):
    path = tmp_path / res.RESULTS_FILE
    good = res._HEADER + res._encode([_row("a")])
    path.write_bytes(good + b"x,y,final,ok\n")
    with ResultsFile(tmp_path) as results:
        assert results.finished_keys() == {"a"}
    assert path.read_bytes() == good


def test_a_torn_header_is_set_aside_and_rewritten(tmp_path):
    path = tmp_path / res.RESULTS_FILE
    path.write_bytes(res._HEADER[:30])
    with ResultsFile(tmp_path) as results:
        assert results.notices and results.rows() == []
    assert path.read_bytes() == res._HEADER
    assert _side_files(tmp_path)[0].read_bytes() == res._HEADER[:30]


def test_a_foreign_header_is_refused_and_left_alone(tmp_path, spawn):
    path = tmp_path / res.RESULTS_FILE
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ResultsError, match="new --out folder"):
        ResultsFile(tmp_path).__enter__()
    assert path.read_text() == "a,b\n1,2\n"
    path.rename(tmp_path / "old.csv")
    child = spawn(HOLD, str(tmp_path))  # the refusal released the claim it had taken
    assert child.stdout.readline().strip() == "claimed"
    child.stdin.close()
    child.wait()


def test_a_sigkill_while_appending_leaves_every_complete_row(tmp_path, spawn):
    script = (
        "import sys\n"
        "from benchmarks.harness.resultsfile import ResultsFile\n"
        "with ResultsFile(sys.argv[1]) as results:\n"
        "    for i in range(3000):\n"
        "        results.append([{'run_id': 'r', 'cell_key': f'c{i}', 'row_type': 'final', 'status': 'ok',\n"
        "                         'error': 'x' * 20000, 'method_config': {'i': i}}])\n"
        "        if i == 10:\n"
        "            print('appended', flush=True)\n"
    )
    child = spawn(script, str(tmp_path))
    assert child.stdout.readline().strip() == "appended"
    child.send_signal(signal.SIGKILL)
    child.wait()
    with ResultsFile(tmp_path) as results:  # the kernel released the dead child's claim
        assert len(results.notices) <= 1  # at most one partial final line
        rows = results.rows()
    assert len(rows) >= 11
    assert _keys(rows) == [f"c{i}" for i in range(len(rows))]  # consecutive: no complete row lost
    assert all(r["error"] == "x" * 20000 for r in rows)
    path = tmp_path / res.RESULTS_FILE
    assert path.read_bytes() == res._HEADER + b"".join(
        res._encode([{"run_id": "r", "cell_key": f"c{i}", "row_type": "final", "status": "ok",
                      "error": "x" * 20000, "method_config": {"i": i}}]) for i in range(len(rows)))
    assert len(pd.read_csv(path, dtype=str, keep_default_na=False)) == len(rows)


# ----------------------------------------------------------------------------
# 2. Appends, not rewrites
# ----------------------------------------------------------------------------

def _writes_to(monkeypatch, name: str, fake=None) -> list[int]:
    """Record the sizes of the os.write calls on files called ``name``; ``fake`` may replace them."""
    sizes, real = [], os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/" + name):
            sizes.append(len(data))
            if fake is not None:
                return fake(fd, data, len(sizes))
        return real(fd, data)

    monkeypatch.setattr(res.os, "write", write)
    return sizes


def test_an_append_is_one_write_to_the_same_file(tmp_path, monkeypatch):
    path = tmp_path / res.RESULTS_FILE
    res.append_rows(path, [_row("a")])
    os.chmod(path, 0o664)
    inode = path.stat().st_ino
    sizes = _writes_to(monkeypatch, res.RESULTS_FILE)
    rows = [_row(k, error="multi\nline") for k in "bcd"]
    res.append_rows(path, rows)
    assert sizes == [len(res._encode(rows))]  # one os.write of every complete line
    assert path.stat().st_ino == inode  # appended in place, never replaced
    assert stat.S_IMODE(path.stat().st_mode) == 0o664  # and its mode kept
    assert _keys(res.read_rows(path)) == ["a", "b", "c", "d"]


def test_a_full_disk_keeps_nothing_of_the_partial_write(tmp_path, monkeypatch):
    path = tmp_path / res.RESULTS_FILE
    res.append_rows(path, [_row("a")])
    before = path.read_bytes()

    def half_then_full(fd, data, call):
        if call == 1:
            return os.pwrite(fd, data[:len(data) // 2], os.fstat(fd).st_size)
        raise OSError(28, "No space left on device")

    _writes_to(monkeypatch, res.RESULTS_FILE, half_then_full)
    with pytest.raises(ResultsError, match="No space left on device.*Free some disk space"):
        res.append_rows(path, [_row("b", error="e" * 1000)])
    assert path.read_bytes() == before


def test_stale_temporary_files_are_removed_on_open(tmp_path):
    res.append_rows(tmp_path / res.RESULTS_FILE, [_row("a")])
    (tmp_path / "runs" / "r0").mkdir(parents=True)
    stale = [tmp_path / ".results.csv.k3j4h5.tmp", tmp_path / ".results.interrupted.csv.x9.tmp",
             tmp_path / "runs" / "r0" / ".metadata.json.q1w2.tmp"]
    for tmp in stale:
        tmp.write_text("half a file")
    with ResultsFile(tmp_path) as results:
        assert sum("temporary file" in n for n in results.notices) == 3
    assert not any(tmp.exists() for tmp in stale)
    assert results.finished_keys() == {"a"}


# ----------------------------------------------------------------------------
# 3. One run per folder; unusable folders and files
# ----------------------------------------------------------------------------

HOLD = (
    "import sys\n"
    "from benchmarks.harness.resultsfile import ResultsFile\n"
    "with ResultsFile(sys.argv[1]):\n"
    "    print('claimed', flush=True)\n"
    "    sys.stdin.readline()\n"
)


def test_a_second_run_into_a_claimed_folder_refuses_naming_the_holder(tmp_path, spawn):
    child = spawn(HOLD, str(tmp_path), "--marker-of-the-holder")
    try:
        assert child.stdout.readline().strip() == "claimed"
        with pytest.raises(ResultsError) as err:
            with ResultsFile(tmp_path):
                pass
        message = str(err.value)
        assert f"pid {child.pid}" in message and "--marker-of-the-holder" in message
        assert "wait for it to finish" in message and "another --out" in message
        assert not (tmp_path / res.RESULTS_FILE).exists()  # the refused run touched nothing
    finally:
        child.stdin.close()
        child.wait()
    with ResultsFile(tmp_path):  # released when the holder finished
        pass


def test_a_killed_holder_releases_the_folder(tmp_path, spawn):
    child = spawn(HOLD, str(tmp_path))
    assert child.stdout.readline().strip() == "claimed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    with ResultsFile(tmp_path) as results:
        results.append([_row("a")])
    assert res.finished_keys(tmp_path / res.RESULTS_FILE) == {"a"}


def test_nested_claims_in_one_process_share_the_folder(tmp_path, spawn):
    with ResultsFile(tmp_path) as outer:
        outer.append([_row("a", row_type="epoch", epoch=1)])  # a cell in progress
        with ResultsFile(tmp_path) as inner:  # e.g. the sweep, then the runner
            assert inner.notices == [] and len(inner.rows()) == 1  # the live curve is left alone
        with ResultsFile(tmp_path):  # the inner exit did not release the outer claim
            pass
    child = spawn(HOLD, str(tmp_path))
    assert child.stdout.readline().strip() == "claimed"  # released after the outer exit
    child.stdin.close()
    child.wait()


def test_a_read_only_results_file_is_refused(tmp_path):
    path = tmp_path / res.RESULTS_FILE
    res.append_rows(path, [_row("a")])
    before = path.read_bytes()
    os.chmod(path, 0o444)
    with pytest.raises(ResultsError, match=r"read-only .*chmod u\+w"):
        with ResultsFile(tmp_path):
            pass
    with pytest.raises(ResultsError, match="read-only"):
        res.append_rows(path, [_row("b")])
    assert path.read_bytes() == before and stat.S_IMODE(path.stat().st_mode) == 0o444


def test_an_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ResultsError, match="is a file, not a folder"):
        ResultsFile(tmp_path / "file").__enter__()
    with pytest.raises(ResultsError, match="cannot create the results folder"):
        ResultsFile(tmp_path / "file" / "below").__enter__()
    assert (tmp_path / "file").read_text() == "not a folder"


def test_an_unwritable_folder_is_refused(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    os.chmod(out, 0o555)
    try:
        with pytest.raises(ResultsError, match="not writable"):
            ResultsFile(out).__enter__()
    finally:
        os.chmod(out, 0o755)


# ----------------------------------------------------------------------------
# 4. Epoch rows of interrupted cells
# ----------------------------------------------------------------------------

def test_epoch_rows_of_interrupted_cells_are_set_aside(tmp_path):
    path = tmp_path / res.RESULTS_FILE
    interrupted = [_row("A", "epoch", "r1", epoch=1), _row("A", "epoch", "r1", epoch=2)]
    finished = [_row("A", "epoch", "r2", epoch=1), _row("A", "epoch", "r2", epoch=2), _row("A", "final", "r2")]
    failed = [_row("B", "epoch", "r1", epoch=1), _row("B", "failed", "r1", error="boom")]
    dangling = [_row("C", "epoch", "r2", epoch=1)]
    res.append_rows(path, interrupted[:1] + failed[:1] + interrupted[1:] + finished + failed[1:] + dangling)
    with ResultsFile(tmp_path) as results:
        assert any("interrupted" in n and "A, C" in n for n in results.notices)
        kept = results.rows()
    assert [(r["cell_key"], r["run_id"], r["row_type"], r["epoch"]) for r in kept] == [
        ("B", "r1", "epoch", "1"), ("A", "r2", "epoch", "1"), ("A", "r2", "epoch", "2"),
        ("A", "r2", "final", ""), ("B", "r1", "failed", "")]
    side = tmp_path / res.INTERRUPTED_FILE
    assert side.read_bytes() == res._HEADER + res._encode(interrupted + dangling)
    with ResultsFile(tmp_path) as again:  # nothing left to move; nothing moved twice
        assert again.notices == []
    assert side.read_bytes() == res._HEADER + res._encode(interrupted + dangling)


def test_a_torn_final_row_sets_its_curve_aside_too(tmp_path):
    path = tmp_path / res.RESULTS_FILE
    res.append_rows(path, [_row("A", "epoch", epoch=1), _row("A", "final"), _row("B", "epoch", epoch=1)])
    start = path.stat().st_size
    res.append_rows(path, [_row("B", "final", method_config={"lr": 0.1})])
    data = path.read_bytes()
    path.write_bytes(data[:start + 20])
    with ResultsFile(tmp_path) as results:
        assert results.finished_keys() == {"A"}
        assert [(r["cell_key"], r["row_type"]) for r in results.rows()] == [("A", "epoch"), ("A", "final")]
    assert res.read_rows(tmp_path / res.INTERRUPTED_FILE)[0]["cell_key"] == "B"
    assert _side_files(tmp_path)[0].read_bytes() == data[start:start + 20]


def test_a_clean_file_is_left_byte_for_byte(tmp_path):
    path, data, _ = _finished(tmp_path)
    inode = path.stat().st_ino
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ResultsFile(tmp_path) as results:
            assert results.notices == [] and results.finished_keys() == {"a", "b", "c"}
    assert path.read_bytes() == data and path.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == [res.LOCK_FILE, res.RESULTS_FILE]
