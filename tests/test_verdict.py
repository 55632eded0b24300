"""Issue 23, items 1, 3, 7 and 10 (report): each side chosen on validation, compared on the same test
images with a paired interval, McNemar and Holm; ties; a test split too small to separate anything;
time to accuracy at the validation-chosen target; kept test predictions. A tiny real run (40 test
images) made once for the module; its copies are edited where a test needs a known answer."""

from __future__ import annotations

import csv
import errno
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.report.answer import CANNOT_SEPARATE, answer
from benchmarks.cli import main
from benchmarks.report.comparison import time_to_accuracy_table
from benchmarks.harness.predictions import (ROW_KEY, Predictions, read_predictions, write_predictions)
from benchmarks.report.build import build_report
from benchmarks.report.tables import load_results, split_rows
from benchmarks.report.verdict import (BP_AHEAD, GF_AHEAD, PAIRED, TIE, UNPAIRED, Comparison, compare_configs, holm,
                                mcnemar, paired_bootstrap)
from tiny_data import restore_torch_threads, tiny_cifar10, tiny_settings  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parent.parent
N_TEST = 40  # 4 of the tiny copy's 5 test images per class

SUITE = tiny_settings("verdict", seed="[0, 1]").replace("test_per_class = 5", "test_per_class = 4") + """
    [[grid]]
    method = "random-features"
    n_components = [64, 128]
    cut = "features.18"
    [[grid]]
    method = "small_cnn"
    epochs = 1
    width = 4
    [[grid]]
    method = "finetune"
    mode = "linear-probe"
    cut = "features.18"
    epochs = 1
    seed = 0
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory, cifar10_dir):
    return tiny_cifar10(cifar10_dir, tmp_path_factory.mktemp("verdict-data") / "cifar10-tiny")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data, mobilenet_weights):
    root = tmp_path_factory.mktemp("verdict")
    (root / "tiny.toml").write_text(textwrap.dedent(SUITE))
    code = main(["run", "--suite", str(root / "tiny.toml"), "--data-dir", str(data), "--out", str(root / "results"),
                 "--no-progress"])
    assert code == 0
    return root / "results"


def _finals(folder: Path):
    finals, epochs, _ = split_rows(load_results(folder))
    return finals, epochs


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "results"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("report", ".gradfree.lock"))
    return out


def _edit(folder: Path, accuracies: dict[tuple[str, str], tuple[float, float]]) -> None:
    """Set val_acc and test_acc of the final rows whose (method, label part) match, and make their kept
    predictions say the same: the first round(test_acc * n) test images right, the others wrong."""
    path = folder / "results.csv"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    for row in rows:
        for (method, part), (val, test) in accuracies.items():
            if row["method"] == method and part in row["method_config"] and row["row_type"] == "final":
                row["val_acc"], row["test_acc"] = repr(val), repr(test)
                p = read_predictions(folder, row["cell_key"], row["run_id"])
                right = np.arange(len(p.pred)) < round(test * len(p.pred))
                p.pred = np.where(right, p.labels, (p.labels + 1) % 10).astype(np.int16)
                write_predictions(folder, row["cell_key"], p)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------
# Kept predictions
# ----------------------------------------------------------------------------


@pytest.mark.slow
def test_every_cell_keeps_its_test_predictions_with_the_images_ids(run, data):
    from benchmarks.core.data import open_dataset

    finals, _ = _finals(run)
    assert len(finals) == 7
    test_source = open_dataset("cifar10", data)[1]
    for row in finals.itertuples():
        p = read_predictions(run, row.cell_key, row.run_id)
        assert p is not None, row.method
        assert p.pred.dtype == np.int16 and p.labels.dtype == np.int16 and len(p.pred) == N_TEST
        # ids: indices into the test source (4 of its 5 images per class), whose labels they are
        assert len(set(p.ids.tolist())) == N_TEST and p.ids.max() < len(test_source.labels) == 50
        assert np.array_equal(test_source.labels[p.ids], p.labels)
        assert p.correct.mean() == pytest.approx(row.test_acc)
    assert not list((run / "predictions").glob(".*"))  # no temporary file left
    assert read_predictions(run, finals["cell_key"][0], "another-run") is None  # another run's file is not this row's


def test_predictions_are_replaced_atomically(tmp_path, monkeypatch):
    import benchmarks.core.atomic as atomic

    old = Predictions(np.arange(5, dtype=np.int16), np.arange(5, dtype=np.int16), np.arange(5), "r1")
    path = write_predictions(tmp_path, "cell", old)
    before = path.read_bytes()

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "write", full)
    with pytest.raises(OSError):
        write_predictions(tmp_path, "cell", Predictions(old.pred[:2], old.labels[:2], old.ids[:2], "r2"))
    monkeypatch.undo()
    assert path.read_bytes() == before and read_predictions(tmp_path, "cell", "r1") is not None
    assert sorted(p.name for p in path.parent.iterdir()) == ["cell.npz"]


@pytest.mark.slow
def test_a_ray_worker_sends_the_predictions_back_for_the_driver_to_write(data, mobilenet_weights, tmp_path):
    from benchmarks.harness.cells import make_cell
    from benchmarks.harness.executors import run_cell_in_worker
    from benchmarks.harness.predictions import KeepPredictions

    cell = make_cell({"method": "small_cnn", "dataset": "cifar10", "data_dir": str(data), "image_size": 32,
                      "train_per_class": 10, "test_per_class": 4, "epochs": 1, "width": 4, "device": "cpu",
                      "threads": 1, "seed": 0})
    rows = run_cell_in_worker(cell, "w1", None)
    final = rows[-1]
    assert isinstance(final[ROW_KEY], Predictions) and all(isinstance(v, str) for k, v in final.items() if k != ROW_KEY)
    written = []
    KeepPredictions(type("Sink", (), {"append": lambda self, r: written.extend(r)})(), tmp_path).append(rows)
    assert all(ROW_KEY not in r for r in written)
    assert read_predictions(tmp_path, final["cell_key"], "w1").correct.mean() == pytest.approx(float(final["test_acc"]))


# ----------------------------------------------------------------------------
# The answer
# ----------------------------------------------------------------------------


@pytest.mark.slow
def test_each_side_is_chosen_on_validation_even_where_test_prefers_another(run, tmp_path):
    folder = _copy(run, tmp_path)
    # k=64 best on validation, k=128 best on test; small_cnn best on validation, the linear probe on test.
    _edit(folder, {("random-features", '"n_components": 64'): (0.90, 0.50),
                   ("random-features", '"n_components": 128'): (0.60, 0.85),
                   ("small_cnn", ""): (0.50, 0.20), ("finetune", ""): (0.40, 0.70)})
    found = answer(_finals(folder)[0], folder)
    whole = found.entries[0]
    assert "k=64" in whole.gf["config"] and whole.bp["method"] == "small_cnn"
    assert whole.comparison.kind == PAIRED and whole.comparison.diff == pytest.approx(0.30)
    assert whole.verdict() == GF_AHEAD  # 50 % against 20 % of the same 40 images
    assert "k=128" in whole.oracle  # shown, labelled, never chosen
    per_cut = found.table(per_cut=True)
    assert list(per_cut["cut"]) == ["features.18"] and "linear-probe" in per_cut["backprop"][0]
    # time to accuracy: the target is the validation-chosen configuration's validation accuracy
    finals, epochs = _finals(folder)
    tta = time_to_accuracy_table(finals, epochs)
    assert set(tta["target (val)"]) == {0.9} and all("k=64" in t for t in tta["target set by"])
    assert "the same, tuning included" in tta

    md = build_report(folder, tmp_path / "rep").read_text()
    assert md.index("## The answer") < md.index("## Plots") < md.index("## Accuracy")
    answer_section = md[md.index("## The answer"):md.index("## Plots")]
    assert "k=64" in answer_section.split("|")[0] and "gradient-free ahead" in answer_section
    assert "oracle: best on test (not a selection)" in answer_section


@pytest.mark.slow
def test_the_report_of_a_tiny_run_opens_with_the_paired_answer(run, tmp_path):
    md = build_report(run, tmp_path / "rep").read_text()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert md.index("## The answer") < md.index("## Plots") < md.index("## Time to accuracy") < md.index("## Accuracy")
    assert html.index("The answer") < html.index("<h2>Plots") < html.index("<h2>Accuracy")
    assert "| paired |" in md and "unpaired" not in md.split("## Plots")[0].split("## How it was decided")[0]


@pytest.mark.slow
def test_a_test_split_too_small_to_separate_anything_names_no_winner_nor_speed_up(run, tmp_path, capsys):
    folder = _copy(run, tmp_path)
    # a user's small folder: every configuration scores 97.5-100 % on 40 test images
    _edit(folder, {("random-features", '"n_components": 64'): (1.0, 1.0),
                   ("random-features", '"n_components": 128'): (0.95, 0.975),
                   ("small_cnn", ""): (0.9, 0.975), ("finetune", ""): (0.95, 1.0)})
    found = answer(_finals(folder)[0], folder)
    assert found.unseparable() and all(e.verdict() == CANNOT_SEPARATE for e in found.entries)
    md = build_report(folder, tmp_path / "rep").read_text()
    top = md[:md.index("## Plots")]
    assert "cannot separate them" in top and "no winner and no speed-up" in top
    assert GF_AHEAD not in md and BP_AHEAD not in md
    finals, epochs = _finals(folder)
    speedups = time_to_accuracy_table(finals, epochs, found.unseparable())["speed-up at equal accuracy"]
    assert len(speedups) and all(s.startswith("none named") for s in speedups)
    assert "x ±" not in md and not any(f"{x}x" in md.split("## Time to accuracy")[1].split("## Summary")[0]
                                       for x in ("1.", "2.", "3.", "0."))
    assert main(["compare", str(folder), str(folder)]) == 0
    assert "cannot separate them" in capsys.readouterr().out


@pytest.mark.slow
def test_cells_whose_test_images_differ_are_not_paired(run, tmp_path):
    folder = _copy(run, tmp_path)
    _edit(folder, {("small_cnn", ""): (0.95, 0.30), ("finetune", ""): (0.40, 0.30)})  # small_cnn chosen
    finals, _ = _finals(folder)
    for row in finals[finals["method"] == "small_cnn"].itertuples():
        p = read_predictions(folder, row.cell_key, row.run_id)
        p.ids = p.ids + 1000
        write_predictions(folder, row.cell_key, p)
    found = answer(finals, folder)
    whole = found.entries[0]
    assert whole.bp["method"] == "small_cnn"
    assert whole.comparison is None and "different test images" in whole.verdict()
    md = build_report(folder, tmp_path / "rep").read_text()
    assert "not compared: the two sides' kept predictions are on different test images" in md


def test_committed_results_fall_back_to_unpaired_intervals(tmp_path):
    folder = tmp_path / "quick"
    shutil.copytree(REPO / "results" / "quick", folder, ignore=shutil.ignore_patterns("report"))
    found = answer(_finals(folder)[0], folder)
    assert found.entries and all(e.comparison.kind == UNPAIRED for e in found.entries if e.comparison)
    md = build_report(folder, tmp_path / "rep").read_text()
    assert "| unpaired |" in md and "unpaired (binomial standard errors" in md


# ----------------------------------------------------------------------------
# The statistics, on known answers
# ----------------------------------------------------------------------------


def test_mcnemar_on_a_known_table():
    # b = 10, c = 2: exact p = 2 P(X <= 2 | n = 12, 1/2) = 2 (1 + 12 + 66) / 4096; mid-p removes P(X = 2) once
    exact, mid = mcnemar(10, 2)
    assert exact == pytest.approx(158 / 4096) and mid == pytest.approx(92 / 4096)
    assert mcnemar(2, 10) == mcnemar(10, 2) and mcnemar(0, 0) == (1.0, 1.0) and mcnemar(5, 5)[0] == 1.0


def test_holm_on_known_p_values():
    adjusted = holm([0.01, 0.04, 0.03, 0.005, float("nan")])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and np.isnan(adjusted[4])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_a_difference_whose_interval_contains_zero_is_a_tie():
    assert Comparison(0.02, -0.01, 0.05, 0.001, PAIRED, 100).verdict() == TIE
    significant = Comparison(0.05, 0.01, 0.09, 0.004, PAIRED, 100, p_holm=0.02)
    assert significant.verdict() == GF_AHEAD
    assert Comparison(-0.05, -0.09, -0.01, 0.004, PAIRED, 100, p_holm=0.02).verdict() == BP_AHEAD
    # the interval excludes 0, but not after Holm's correction over the family: still a tie
    assert Comparison(0.05, 0.01, 0.09, 0.004, PAIRED, 100, p_holm=0.2).verdict() == TIE


def _simulate(rng, n_images: int, seeds: int = 3):
    """Two sides on the same images: a right with probability 0.80, b 0.70 (correlated through each
    image's difficulty); returns (correct_a, correct_b): (seeds, n_images)."""
    easy = rng.random(n_images)
    a = rng.random((seeds, n_images)) < np.clip(0.80 + 0.3 * (easy - 0.5), 0, 1)
    b = rng.random((seeds, n_images)) < np.clip(0.70 + 0.3 * (easy - 0.5), 0, 1)
    return a, b


def test_the_paired_bootstrap_interval_covers_the_true_difference_and_shrinks_with_more_images():
    rng = np.random.default_rng(0)
    covered, widths = 0, {}
    for n in (200, 2000):
        w = []
        for trial in range(30):
            lo, hi = paired_bootstrap(*_simulate(rng, n), n_boot=1000, seed=trial)[1:3]
            covered += lo <= 0.10 <= hi
            w.append(hi - lo)
        widths[n] = np.mean(w)
    assert covered >= 52  # of 60 (95 % nominal)
    assert widths[2000] < 0.45 * widths[200]  # ~ 1 / sqrt(10)


def test_the_p_value_is_the_intervals_and_calibrated_under_no_difference():
    rng = np.random.default_rng(1)
    ps = []
    for trial in range(40):  # the same accuracy on both sides
        easy = rng.random(1000)
        a, b = (rng.random((3, 1000)) < np.clip(0.75 + 0.3 * (easy - 0.5), 0, 1) for _ in range(2))
        diff, lo, hi, p = paired_bootstrap(a, b, n_boot=500, seed=trial)
        assert (p < 0.05) == (not lo <= 0 <= hi) or abs(p - 0.05) < 0.02  # one story, up to the tails
        ps.append(p)
    assert np.mean(np.array(ps) < 0.05) <= 0.15 and np.mean(ps) > 0.3  # ~5 % and ~0.5 for a calibrated p
    diff, lo, hi, p = paired_bootstrap(*_simulate(rng, 2000), n_boot=500)
    assert lo > 0 and p < 1e-6  # 10 points on 2,000 images


def test_seeds_that_disagree_make_no_difference_significant(tmp_path):
    # Seen on the EfficientNet curve at 500 images: backprop's two seeds disagreed on a quarter of the
    # images; McNemar on each side's majority vote dropped those and gave p = 1e-9 (Holm 1e-9) to a
    # difference of -0.75 points whose interval held 0. Here: the same accuracy on both sides, backprop's
    # two seeds independent of each other on every image.
    rng = np.random.default_rng(0)
    n = 10000
    labels, rows = np.zeros(n, dtype=np.int16), []
    sides = {"gf": (rng.random(n) < 0.70)[None].repeat(3, axis=0), "bp": rng.random((2, n)) < 0.70}
    for side, correct in sides.items():
        for seed, right in enumerate(correct):
            key = f"{side}{seed}"
            write_predictions(tmp_path, key, Predictions((~right).astype(np.int16), labels, np.arange(n), "r"))
            rows.append({"side": side, "cell_key": key, "run_id": "r"})
    rows = pd.DataFrame(rows)
    c = compare_configs(rows[rows["side"] == "gf"], rows[rows["side"] == "bp"], tmp_path)
    assert c.kind == PAIRED and c.low <= 0 <= c.high and c.p > 0.05 and c.verdict() == TIE
    decided = sides["bp"][0] == sides["bp"][1]  # what the majority vote kept: bp 0.84 right there, gf 0.70
    assert (sides["bp"][0][decided]).mean() > sides["gf"][0][decided].mean() + 0.1
    assert c.mcnemar > 0.05  # each pairing of seeds alone: no difference either
