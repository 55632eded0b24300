"""Reports and comparisons, from the results of a tiny real run made once for this module."""

from __future__ import annotations

import csv
import shutil
import textwrap

import pytest

from benchmarks.cli import main
from benchmarks.compare import compare
from benchmarks.report import build_report, load_results, split_rows, summary_table
from tiny_data import restore_torch_threads, tiny_cifar10  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.slow

SUITE = """
    description = "tiny report"
    [settings]
    dataset = "cifar10"
    image_size = 32
    train_per_class = 10
    test_per_class = 5
    batch_size = 64
    device = "cpu"
    threads = 1                # steady on a busy machine
    seed = [0, 1]
    [[grid]]                   # two cuts, two seeds
    method = "random-features"
    n_components = 128
    cut = ["features.14", "features.18"]
    [[grid]]
    method = "random-features"
    n_components = 256
    seed = 0
    [[grid]]
    method = "finetune"
    epochs = 2
    batch_size = 16            # one-cycle needs more than a handful of steps
    seed = 0
    [[grid]]
    method = "small_cnn"
    epochs = 2
    width = 4
    seed = 0
    [[grid]]                   # fails when its data loads (the tiny copy has 10 images per class)
    method = "small_cnn"
    train_per_class = 11
    seed = 0
"""
PLOTS = ("acc_vs_size", "time_vs_size", "pareto_acc_vs_time", "time_breakdown", "time_to_accuracy")


@pytest.fixture(scope="module")
def results(tmp_path_factory, cifar10_dir, mobilenet_weights):
    root = tmp_path_factory.mktemp("report")
    data = tiny_cifar10(cifar10_dir, root / "cifar10-tiny")
    (root / "tiny.toml").write_text(textwrap.dedent(SUITE))
    code = main(["run", "--suite", str(root / "tiny.toml"), "--data-dir", str(data),
                 "--out", str(root / "results"), "--no-progress"])
    assert code == 1  # the one failing cell
    return root / "results"


def test_report_writes_markdown_html_and_every_plot(results, tmp_path):
    md_path = build_report(results, tmp_path / "rep")
    out = md_path.parent
    for name in PLOTS:
        assert (out / f"{name}.png").stat().st_size > 5000, name
    md = md_path.read_text()
    html = (out / "report.html").read_text()
    assert "selected on the validation split" in md and "selected on the validation split" in html
    for name in PLOTS:
        assert f"]({name}.png)" in md
    assert html.count("data:image/png;base64,") == len(PLOTS)
    assert "Skipped" not in md
    # mean ± std over the two seeds, the failed cell and its error
    assert "±" in md and "## Failed cells" in md and "DatasetError" in md and "asked for 11" in md
    for title in ("## Accuracy", "## Time breakdown", "## Model size", "features.14", "linear-probe"):
        assert title in md


def test_report_command_defaults_to_a_report_folder_beside_the_results(results):
    assert main(["report", str(results)]) == 0
    assert (results / "report" / "report.html").exists()
    assert main(["report", str(results / "nowhere")]) == 2


def test_plots_degrade_when_an_axis_is_missing(results, tmp_path):
    # Only random-features rows: no epoch rows -> the time-to-accuracy plot is skipped with a note.
    rows = list(csv.DictReader(open(results / "results.csv")))
    only_rf = tmp_path / "rf.csv"
    with open(only_rf, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=rows[0].keys())
        w.writeheader()
        w.writerows(r for r in rows if r["method"] == "random-features")
    md = build_report(only_rf, tmp_path / "rep").read_text()
    assert "_Skipped: no per-epoch rows" in md
    assert (tmp_path / "rep" / "pareto_acc_vs_time.png").exists()
    assert not (tmp_path / "rep" / "time_to_accuracy.png").exists()


def test_orphan_epoch_rows_of_an_interrupted_attempt_are_ignored(results):
    df = load_results(results)
    finals, epochs, failed = split_rows(df)
    assert len(failed) == 1
    assert set(epochs["cell_key"]) <= set(finals["cell_key"])
    table = summary_table(df)
    assert (table["seeds"] == 2).any()


def _edit(src, dst, change):
    rows = list(csv.DictReader(open(src / "results.csv")))
    for r in rows:
        change(r)
    dst.mkdir()
    with open(dst / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=rows[0].keys())
        w.writeheader()
        w.writerows(rows)
    return dst


def test_compare_passes_on_identical_results_and_flags_regressions(results, tmp_path, capsys):
    assert compare(results, results) == 0
    assert "failed" in capsys.readouterr().out

    def worse(r):
        if r["row_type"] == "final" and r["method"] == "random-features" and r["n_components"] == "128":
            r["test_acc"] = str(float(r["test_acc"]) - 0.05)
    assert compare(results, _edit(results, tmp_path / "worse", worse), tolerance=0.01) == 1
    assert "ACC REGRESSION" in capsys.readouterr().out

    def slower(r):
        if r["row_type"] == "final" and r["train_total_s"]:
            r["train_total_s"] = str(float(r["train_total_s"]) * 3)
    slow = _edit(results, tmp_path / "slow", slower)
    assert compare(results, slow) == 0  # time regressions are warnings...
    assert "slower" in capsys.readouterr().out
    assert compare(results, slow, fail_on_time=True) == 1  # ...unless asked otherwise

    # Keys differ (e.g. another data folder): cells are matched by their axes instead.
    def rekey(r):
        r["cell_key"] = "x" + r["cell_key"][1:]
    assert compare(results, _edit(results, tmp_path / "rekeyed", rekey)) == 0
    assert " axes " in capsys.readouterr().out


def test_compare_command_exit_status(results, tmp_path):
    shutil.copytree(results, tmp_path / "same")
    assert main(["compare", str(results), str(tmp_path / "same"), "--tolerance", "0.01"]) == 0
