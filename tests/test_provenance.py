"""Provenance (issue 23, item 8): a run records the commit it ran from, whether the code differed from it
(results written into the checkout do not count) and a hash of the difference; rows name the CPU's flags."""

from __future__ import annotations

import subprocess

from benchmarks.harness.metadata import _git_commit, cpu_flags


def _repo(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "results.csv").write_text("a\n")
    git("add", ".")
    git("commit", "-qm", "first")
    return tmp_path


def test_results_written_into_the_checkout_leave_it_clean_and_code_edits_do_not(tmp_path):
    repo = _repo(tmp_path)
    clean = _git_commit(repo)
    assert clean["commit"] and clean["dirty"] is False and "diff_sha1" not in clean
    (repo / "results" / "results.csv").write_text("a\nrow\n")  # a suite appending to its tracked results
    (repo / "results" / "new.csv").write_text("untracked\n")
    assert _git_commit(repo)["dirty"] is False
    (repo / "code.py").write_text("x = 2\n")
    first = _git_commit(repo)
    assert first["dirty"] is True and len(first["diff_sha1"]) == 40
    assert _git_commit(repo)["diff_sha1"] == first["diff_sha1"]  # the same edit, the same name
    (repo / "code.py").write_text("x = 3\n")
    assert _git_commit(repo)["diff_sha1"] != first["diff_sha1"]


def test_cpu_flags_name_only_known_features_of_this_cpu():
    flags = cpu_flags().split()
    text = open("/proc/cpuinfo").read()
    assert all(f" {f}" in text for f in flags)


def test_the_report_flags_a_dirty_tree_and_shows_the_highest_load_at_a_row():
    import json

    import pandas as pd

    from benchmarks.report.build import _dirty, _highest_load
    from benchmarks.report.conditions import mark_busy

    assert _dirty({"commit": "abc", "dirty": False}) == ""
    assert _dirty({"commit": "abc", "dirty": True, "diff_sha1": "0123456789abcdef"}) == "YES (diff 0123456789)"
    assert _dirty({"commit": None, "dirty": None}) == "unknown"
    rows = pd.DataFrame({"extra": [json.dumps({"load_at_row": 1.9}), json.dumps({"load_at_row": 4.2}), "", "{bad"],
                         "threads": [2, 2, 2, 2], "cell_key": list("abcd"), "run_id": "r", "row_type": "final",
                         "status": "ok"})
    rows = mark_busy(rows, rows)
    assert _highest_load(rows) == "4.20 (2 threads)"
    assert _highest_load(rows.iloc[2:]) == ""


def test_a_row_records_the_load_average_when_its_cell_starts_and_at_the_row(cifar10_dir, tmp_path):
    import json
    import os

    from benchmarks.harness.cells import make_cell
    from benchmarks.core.features import FeatureCache
    from benchmarks.harness.runner import Runner
    from tiny_data import tiny_cifar10

    data = tiny_cifar10(cifar10_dir, tmp_path / "cifar10", train_per_class=10, test_per_class=5)
    cell = make_cell({"method": "small_cnn", "dataset": "cifar10", "data_dir": str(data), "image_size": 32,
                      "train_per_class": 10, "test_per_class": 5, "device": "cpu", "threads": 1, "epochs": 1})
    rows: list[dict] = []
    row = Runner(progress=False, feature_cache=FeatureCache(None)).run_cell(cell, rows.extend)
    assert row["status"] == "ok", row.get("error")
    for r in rows:  # in the row dicts the method emits; the results file keeps them in ``extra``
        assert 0 <= r["load_at_start"] <= 64 * os.cpu_count() and 0 <= r["load_at_row"] <= 64 * os.cpu_count()
    assert json.loads(json.dumps(rows[-1], default=str))["load_at_row"] is not None
