"""Methods from outside the package (issue 24, item 1): an installed plugin found by its entry point, a class
named by file or module, each run through a single run, a suite, a report and the Ray executor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.harness.results import RESULTS_FILE, read_rows
from tiny_data import tiny_cifar10

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "tests" / "plugin_example"


@pytest.fixture(scope="module")
def tiny_dir(cifar10_dir, tmp_path_factory):
    return tiny_cifar10(cifar10_dir, tmp_path_factory.mktemp("cifar10-tiny"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example plugin package, installed (as a user would with pip) into a folder of its own."""
    import shutil

    target = tmp_path_factory.mktemp("site")
    source = shutil.copytree(EXAMPLE, tmp_path_factory.mktemp("src") / "plugin")  # build/ lands there, not in tests/
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    return target


def _gradfree(args: list[str], site: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (REPO, site) if p)}
    return subprocess.run([sys.executable, "-m", "benchmarks.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


TINY = ["--dataset", "cifar10", "--image-size", "32", "--train-per-class", "10", "--test-per-class", "5",
        "--batch-size", "64", "--device", "cpu", "--threads", "1", "--no-progress"]


def test_an_installed_plugin_runs_a_suite_resumes_and_is_reported(installed, tiny_dir, tmp_path):
    suite = tmp_path / "plugin.toml"
    suite.write_text("""
description = "the example plugin over its own setting"
[settings]
dataset = "cifar10"
image_size = 32
train_per_class = 10
test_per_class = 5
device = "cpu"
threads = 1
[[grid]]
method = "nearest-centroid"
shrink = [0.0, 0.5]
[[grid]]
method = "random-features"
n_components = 64
""")
    out = tmp_path / "r"
    run = ["run", "--suite", str(suite), "--data-dir", str(tiny_dir), "--out", str(out), "--no-progress"]
    first = _gradfree(run, installed)
    assert first.returncode == 0, first.stderr
    rows = [r for r in read_rows(out / RESULTS_FILE) if r["row_type"] == "final"]
    plugin = [r for r in rows if r["method"] == "nearest-centroid"]
    assert [r["status"] for r in rows] == ["ok"] * 3 and len(plugin) == 2
    assert {json.loads(r["method_config"])["shrink"] for r in plugin} == {0.0, 0.5}
    assert {json.loads(r["extra"])["method_source"] for r in plugin} == {"gradfree-nearest-centroid==0.1.0"}
    again = _gradfree(run, installed)
    assert again.returncode == 0 and "3 cells, 3 done before" in again.stdout
    report = _gradfree(["report", str(out)], installed)
    assert report.returncode == 0, report.stderr
    text = (out / "report" / "report.md").read_text()
    assert "nearest centroid shrink=0.5" in text


def test_an_installed_dataset_projection_and_backbone_run_a_cell_with_estimates(installed, tmp_path):
    # All three parts from the example package's entry points: nothing of gradfree names them.
    out = tmp_path / "parts"
    args = ["run", "--method", "random-features", "--dataset", "stripes", "--backbone", "tinynet", "--weights",
            "none", "--cut", "block1", "--projector", "cosine", "--n-components", "256", "--image-size", "32",
            "--train-per-class", "80", "--test-per-class", "0", "--device", "cpu", "--threads", "1",
            "--no-progress", "--out", str(out)]
    plan = _gradfree([*args, "--dry-run"], installed)
    assert plan.returncode == 0 and "to run" in plan.stdout, plan.stderr
    run = _gradfree(args, installed)
    assert run.returncode == 0, run.stderr[-2000:]
    (row,) = [r for r in read_rows(out / RESULTS_FILE) if r["row_type"] == "final"]
    assert (row["status"], row["dataset"], row["backbone"], row["cut"], row["projection"]) == \
        ("ok", "stripes", "tinynet", "block1", "cosine")
    assert int(row["n_classes"]) == 2 and int(row["n_components"]) == 256 and int(row["n_test"]) == 100
    assert int(row["feature_dim"]) == 16 * 8 * 8  # tinynet's second block at 32 px
    assert float(row["test_acc"]) > 0.9  # stripes are easy: a plugin that ran, not one that guessed
    extra = json.loads(row["extra"])
    assert extra["estimate"]["flops"]["project"] == 2 * 160 * 16 * 8 * 8 * 256  # its flops_per_mac, declared


@pytest.mark.parametrize("flag, name, message", [
    ("--dataset", "stripe", "unknown dataset 'stripe'; choose one of: cifar10"),
    ("--projector", "cosin", "unknown projection 'cosin'; choose one of: gaussian"),
    ("--backbone", "tinynets", "invalid choice: 'tinynets'"),
])
def test_an_unknown_part_lists_the_installed_plugins(installed, flag, name, message, tmp_path):
    bad = _gradfree(["run", flag, name, "--weights", "none", "--out", str(tmp_path / "o"), "--dry-run"], installed)
    said = bad.stdout + bad.stderr  # a dry run lists a refused cell with its reason; a bad flag is argparse's
    assert bad.returncode == 2 and message in said, said
    listed = {"--dataset": "stripes", "--projector": "cosine", "--backbone": "tinynet"}[flag]
    assert listed in said


def test_a_bad_plugin_setting_is_refused_by_a_dry_run(installed, tiny_dir, tmp_path):
    bad = _gradfree(["run", "--method", "nearest-centroid", "--set", "shrink=2", *TINY, "--data-dir", str(tiny_dir),
                     "--out", str(tmp_path / "o"), "--dry-run"], installed)
    assert bad.returncode == 2 and "shrink must be in [0, 1), got 2.0" in bad.stderr, bad.stderr
    assert not (tmp_path / "o").exists()


def _readme_plugin(tmp_path: Path) -> Path:
    text = (REPO / "README.md").read_text()
    block = text.split("## Bringing your own method", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.splitlines()) < 40  # the README promises a whole plugin in under 40 lines
    path = tmp_path / "my_method.py"
    path.write_text(block)
    return path


def test_the_readme_plugin_runs_as_a_file_under_ray(tiny_dir, tmp_path):
    pytest.importorskip("ray")
    path = _readme_plugin(tmp_path)
    out = tmp_path / "r"
    run = _gradfree(["run", "--method", f"{path}:NearestCentroid", "--set", "shrink=0.25", *TINY,
                     "--data-dir", str(tiny_dir), "--out", str(out), "--executor", "ray"])
    assert run.returncode == 0, run.stderr[-2000:]
    (row,) = [r for r in read_rows(out / RESULTS_FILE) if r["row_type"] == "final"]
    assert row["status"] == "ok" and row["method"] == f"{path}:NearestCentroid"
    assert json.loads(row["extra"])["method_source"].startswith("sha1:")
    assert 0.0 <= float(row["test_acc"]) <= 1.0
    assert (out / "predictions" / f"{row['cell_key']}.npz").exists()  # paired with others, image by image


def test_a_file_plugin_has_one_key_however_its_path_is_spelled(tmp_path, monkeypatch):
    from benchmarks.harness.cells import make_cell

    path = _readme_plugin(tmp_path)
    monkeypatch.chdir(tmp_path)
    keys = {make_cell({"method": f"{spelling}:NearestCentroid"}).key()
            for spelling in (str(path), "my_method.py", f"../{tmp_path.name}/my_method.py")}
    assert len(keys) == 1


@pytest.mark.parametrize("method, message", [
    ("json:JSONDecoder", "is not a gradfree method: it lacks name, Config"),
    ("no_such_module_here:Thing", "cannot import no_such_module_here"),
    ("json:NoSuchName", "json has no 'NoSuchName'"),
    ("/no/such/file.py:Thing", "no such file"),
    ("nearest-centroids", "unknown method 'nearest-centroids'"),
])
def test_a_method_that_cannot_be_had_is_refused_with_the_reason(method, message, tmp_path, capsys):
    assert main(["run", "--method", method, "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert message in capsys.readouterr().err
