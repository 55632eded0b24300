"""Files gradfree does not own stay untouched, its own files are checked before they are trusted, and a
stop request stops a run whatever it is writing (issue 21 items 3, 7, 8, 9 and 15), through the
public commands on tiny real CIFAR-10 runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks.cli import main
from benchmarks.core.features import FeatureCacheWarning
TMP_PREFIX = ".gradfree-feat-"
from benchmarks.harness.results import read_rows
from tiny_data import restore_torch_threads, tiny_cifar10  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parent.parent
HOURS_AGO_3 = time.time() - 3 * 3600


@pytest.fixture(scope="module")
def tiny_dir(cifar10_dir, tmp_path_factory):
    return tiny_cifar10(cifar10_dir, tmp_path_factory.mktemp("cifar10-tiny"))


def _run_args(data: Path, out: Path, *more: str) -> list[str]:
    # --val-fraction 0.5: the train, validation and test splits all hold 50 images (one shape).
    return ["run", "--dataset", "cifar10", "--data-dir", str(data), "--train-per-class", "10",
            "--test-per-class", "5", "--val-fraction", "0.5", "--image-size", "32", "--n-components", "128",
            "--device", "cpu", "--threads", "1", "--no-progress", "--out", str(out), *more]


def _final(out: Path) -> dict:
    [row] = [r for r in read_rows(out / "results.csv") if r["row_type"] in ("final", "failed")]
    return row


def _scores(row: dict) -> tuple:
    return row["status"], row["alpha"], row["val_acc"], row["test_acc"]


# ----------------------------------------------------------------------------
# Item 3: --cache-dir sweeps only gradfree's own temporary files
# ----------------------------------------------------------------------------

def test_cache_dir_keeps_other_programs_hidden_tmp_files(tmp_path, tiny_dir, mobilenet_weights):
    cache = tmp_path / "cache"
    cache.mkdir()
    theirs = {cache / ".thesis.tmp": b"chapter 3\n", cache / ".notes.txt.tmp": b"draft\x00\xff"}
    stale = cache / f"{TMP_PREFIX}0123456789abcdef0123.1@another-host.{'a' * 32}.tmp"  # gradfree's own
    for path, data in [*theirs.items(), (stale, b"half a cache file")]:
        path.write_bytes(data)
        os.utime(path, (HOURS_AGO_3, HOURS_AGO_3))
    assert main(_run_args(tiny_dir, tmp_path / "out", "--cache-dir", str(cache))) == 0
    assert {path: path.read_bytes() for path in theirs} == theirs
    assert not stale.exists()
    assert len(list(cache.glob("*.pt"))) == 3  # train, validation and test features


# ----------------------------------------------------------------------------
# Item 8: cache entries are checked against what they must be
# ----------------------------------------------------------------------------

def _rotate(entries: list[Path]) -> None:
    """Every entry gets the next one's contents: foreign features of the right shape and dtype."""
    blobs = [p.read_bytes() for p in entries]
    for path, blob in zip(entries, blobs[1:] + blobs[:1]):
        path.write_bytes(blob)


def _reshaped(entries: list[Path]) -> None:
    torch.save({"key": entries[0].stem, "features": torch.zeros(3, 7), "seconds": 1.0}, entries[0])


def _retyped(entries: list[Path]) -> None:
    blob = torch.load(entries[0], weights_only=True)
    torch.save({**blob, "features": blob["features"].double()}, entries[0])


@pytest.mark.parametrize("damage, why", [(_rotate, "written for entry"), (_reshaped, r"shape \(3, 7\)"),
                                         (_retyped, "dtype torch.float64")])
def test_a_cache_entry_that_is_not_its_keys_features_is_dropped_and_extracted_again(
        tmp_path, tiny_dir, mobilenet_weights, damage, why):
    cache = tmp_path / "cache"
    assert main(_run_args(tiny_dir, tmp_path / "first", "--cache-dir", str(cache))) == 0
    entries = sorted(cache.glob("*.pt"))
    assert len(entries) == 3
    damage(entries)
    with pytest.warns(FeatureCacheWarning, match=why):
        assert main(_run_args(tiny_dir, tmp_path / "again", "--cache-dir", str(cache))) == 0
    assert _scores(_final(tmp_path / "again")) == _scores(_final(tmp_path / "first"))
    assert sorted(cache.glob("*.pt")) == entries  # re-extracted and written again, each for its own key
    for path in entries:
        blob = torch.load(path, weights_only=True)
        assert blob["key"] == path.stem and blob["features"].shape[0] == 50


# ----------------------------------------------------------------------------
# Item 7: a stop request while a cache file is written stops the run
# ----------------------------------------------------------------------------

# Runs `gradfree run` through benchmarks.cli.main; torch.save writes through a file that delivers the
# signal to this very process on its second write, i.e. in the middle of writing a feature cache file.
_SIGNAL_WHILE_SAVING = """
import io, os, signal, sys, torch
from benchmarks.cli import main

# As in a terminal: a process started in the background by a script inherits SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
signum, real_save = int(sys.argv[1]), torch.save

class SignalledFile(io.RawIOBase):
    def __init__(self, f):
        self.f, self.writes = f, 0
    def writable(self):
        return True
    def write(self, data):
        self.writes += 1
        if self.writes == 2:
            os.kill(os.getpid(), signum)
        return self.f.write(data)

def save(obj, f, *args, **kwargs):
    return real_save(obj, SignalledFile(f), *args, **kwargs)

torch.save = save
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("signum, code, said", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                (signal.SIGINT, 130, "interrupted")])
def test_a_stop_request_while_writing_the_feature_cache_stops_the_run(tmp_path, tiny_dir, mobilenet_weights,
                                                                      signum, code, said):
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = _run_args(tiny_dir, out, "--cache-dir", str(cache))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _SIGNAL_WHILE_SAVING, str(int(signum)), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == code, done.stderr[-3000:]
    assert said in done.stderr and "could not write the feature cache file" not in done.stderr
    assert [r for r in read_rows(out / "results.csv") if r["row_type"] != "epoch"] == []  # not recorded done
    assert list(cache.iterdir()) == []  # the half-written temporary file is gone, no entry was made
    assert main(args) == 0  # the same command resumes: the cell runs
    assert _final(out)["status"] == "ok" and len(list(cache.glob("*.pt"))) == 3


# ----------------------------------------------------------------------------
# Item 9: compare refuses tolerances that would pass or fail everything
# ----------------------------------------------------------------------------

QUICK = REPO / "results" / "quick" / "results.csv"


def _dropped(tmp_path: Path, drop: float) -> Path:
    """A copy of results/quick whose first successful cell lost ``drop`` of test accuracy."""
    import csv

    with open(QUICK, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    first = next(r for r in rows if r["row_type"] == "final" and r["status"] == "ok")
    first["test_acc"] = repr(float(first["test_acc"]) - drop)
    path = tmp_path / "b" / "results.csv"
    path.parent.mkdir()
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("flags, b_drop", [
    (["--tolerance", "nan"], 0.22),  # would pass a 22-point drop
    (["--tolerance", "-0.01"], 0.0),  # would fail two identical files
    (["--tolerance", "inf"], 0.22),
    (["--tolerance", "1"], 0.22),  # accuracy is a fraction: 1 accepts any drop
    (["--time-tolerance", "nan", "--fail-on-time"], 0.0),  # could never fail
    (["--time-tolerance", "-1", "--fail-on-time"], 0.0),
])
def test_compare_refuses_a_tolerance_that_is_not_a_finite_non_negative_number(tmp_path, capsys, flags, b_drop):
    b = _dropped(tmp_path, b_drop)
    with pytest.raises(SystemExit) as stop:
        main(["compare", str(QUICK), str(b), *flags])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flags[0]}: {flags[1]} " in err
    assert "give a finite number >= 0" in err or "accuracy is a fraction" in err


@pytest.mark.parametrize("kwargs", [{"tolerance": float("nan")}, {"tolerance": -0.01},
                                    {"time_tolerance": float("nan")}, {"time_tolerance": -1.0}])
def test_the_compare_function_refuses_them_too(tmp_path, kwargs):
    from benchmarks.report.gate import compare

    flag = "--" + next(iter(kwargs)).replace("_", "-")
    with pytest.raises(ValueError, match=f"^{flag} .* is not a tolerance"):
        compare(QUICK, _dropped(tmp_path, 0.22), fail_on_time=True, **kwargs)


# ----------------------------------------------------------------------------
# Item 15: errors that name the file and the fix, and agree between commands
# ----------------------------------------------------------------------------

def _disk_full_under(monkeypatch, folder: Path, call: str) -> None:
    """``os.<call>`` (write or pwrite) fails with ENOSPC for every file under ``folder``: a full disk there."""
    real = getattr(os, call)

    def full(fd, *args):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            raise OSError(28, os.strerror(28))
        return real(fd, *args)

    monkeypatch.setattr(os, call, full)


@pytest.mark.parametrize("call", ["write", "pwrite"])  # the run's metadata; the folder's lock file
def test_a_full_disk_at_the_start_names_the_folder_and_the_fix_and_leaves_nothing(
        tmp_path, tiny_dir, mobilenet_weights, monkeypatch, capsys, call):
    out = tmp_path / "out"
    _disk_full_under(monkeypatch, tmp_path, call)
    for _ in range(2):  # each try leaves nothing behind
        assert main(_run_args(tiny_dir, out)) == 2
        err = capsys.readouterr().err
        assert "No space left on device" in err and f"the disk holding {out}" in err and "Free some space" in err
        assert "[Errno" not in err
        assert not (out / "runs").exists() and not (out / "results.csv").exists()
        assert [p.name for p in out.iterdir() if p.name != ".gradfree.lock"] == []


@pytest.mark.parametrize("below", ["", "below"])
def test_an_out_that_is_a_file_is_refused_before_anything(tmp_path, capsys, below):
    user = tmp_path / "results.csv"
    user.write_bytes(b"the user's own table\n")
    out = user / below if below else user
    for extra in ([], ["--dry-run"], ["--suite", "quick"]):
        assert main(_run_args(tmp_path / "no-data-needed", out, *extra)) == 2
        err = capsys.readouterr().err
        assert str(out) in err and f"{user} is a file, not a folder" in err
        assert "give a folder" in err or "give --out a folder" in err
        assert "[Errno" not in err
    assert user.read_bytes() == b"the user's own table\n"


def test_a_suite_file_that_is_not_utf8_is_named_with_the_fix(tmp_path, tiny_dir, capsys):
    path = tmp_path / "latin1.toml"
    suite = 'description = "café au lait"\n[settings]\ndataset = "cifar10"\nmethod = "random-features"\n'
    path.write_bytes(suite.encode("latin-1"))
    assert main(["run", "--suite", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "not UTF-8" in err and "line 1" in err and "save it again as UTF-8" in err
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().decode("latin-1").encode())  # UTF-8 with a BOM: fine
    assert main(["run", "--suite", str(path), "--data-dir", str(tiny_dir), "--out", str(tmp_path / "out"),
                 "--dry-run"]) == 0


@pytest.mark.filterwarnings("error::benchmarks.harness.results.ResultsWarning")  # no byte of it is malformed
def test_a_crlf_results_file_is_one_layout_for_run_report_and_compare(tmp_path, tiny_dir, mobilenet_weights):
    out = tmp_path / "out"
    assert main(_run_args(tiny_dir, out)) == 0
    path = out / "results.csv"
    crlf = path.read_bytes().replace(b"\n", b"\r\n")  # as saved by a Windows editor
    path.write_bytes(crlf)
    assert main(_run_args(tiny_dir, out, "--seed", "1")) == 0  # appended to, not refused
    data = path.read_bytes()
    assert data.startswith(crlf)  # never rewritten
    assert data.count(b"\n") == data.count(b"\r\n")  # the new row ends with the file's own line ending
    rows = read_rows(path)
    assert [(r["seed"], r["status"]) for r in rows if r["row_type"] == "final"] == [("0", "ok"), ("1", "ok")]
    assert main(_run_args(tiny_dir, out, "--seed", "1")) == 0 and path.read_bytes() == data  # done: skipped
    assert main(["compare", str(out), str(out)]) == 0
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert path.read_bytes() == data


def test_repair_writes_through_a_symlinked_results_file(tmp_path, tiny_dir, mobilenet_weights, capsys):
    first = tmp_path / "first"
    assert main(_run_args(tiny_dir, first)) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    target, other = mine / "table.csv", mine / "notes.txt"
    header, *rows = (first / "results.csv").read_bytes().splitlines(keepends=True)
    target.write_bytes(header + b"a torn line, garbage in the middle\n" + b"".join(rows))
    other.write_bytes(b"the user's other file\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").symlink_to(target)
    assert main(_run_args(tiny_dir, out, "--seed", "1")) == 0
    assert "set aside" in capsys.readouterr().out  # the garbage went to a side file in out/
    assert (out / "results.csv").is_symlink() and os.readlink(out / "results.csv") == str(target)
    assert target.read_bytes().startswith(header + b"".join(rows))  # the good rows, byte for byte
    assert [r["seed"] for r in read_rows(target) if r["row_type"] == "final"] == ["0", "1"]
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "table.csv"]
    assert other.read_bytes() == b"the user's other file\n"


def test_a_symlinked_results_file_that_points_nowhere_is_refused(tmp_path, tiny_dir, mobilenet_weights):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").symlink_to(tmp_path / "gone.csv")
    # In a child process: appending through such a link once looped for ever.
    done = subprocess.run([sys.executable, "-m", "benchmarks.cli", *_run_args(tiny_dir, out)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "is a symbolic link to" in done.stderr and "does not exist" in done.stderr
    assert not (tmp_path / "gone.csv").exists() and (out / "results.csv").is_symlink()
