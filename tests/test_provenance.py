"""Provenance (issue 23, item 8): a run records the commit it ran from, whether the code differed from it
(results written into the checkout do not count) and a hash of the difference; rows name the CPU's flags."""

from __future__ import annotations

import subprocess

from benchmarks.metadata import _git_commit, cpu_flags


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
