"""The report's table of what validation chose, the per-data-group tables and figures, on results
files written for the purpose."""

from __future__ import annotations

import json

import pytest

from benchmarks.report.build import build_report
from benchmarks.harness.results import append_rows
from benchmarks.report.tables import accuracy_table, load_results, split_rows
from benchmarks.report.tuning import tuning_table

DATA = {"dataset": "cifar10", "image_size": 96, "n_val": 200, "n_test": 2000, "backbone": "mobilenet_v2",
        "cut": "features.18", "precision": "fp32", "run_id": "r1", "status": "ok"}


def _ft(seed, n_train, lr, grid, test):
    common = {**DATA, "n_train": n_train, "cell_key": f"ft-{n_train}-{seed}", "method": "finetune", "seed": seed,
              "method_config": json.dumps({"mode": "linear-probe", "lr_grid": sorted(map(float, grid))})}
    epochs = [{**common, "row_type": "epoch", "epoch": i + 1, "train_time_s": 10.0 * (i + 1), "val_acc": v}
              for i, v in enumerate((0.5, 0.6, 0.65))]
    final = {**common, "row_type": "final", "val_acc": 0.65, "test_acc": test, "train_total_s": 30.0,
             "model_bytes": 9e6, "extra": {"tuned_value": lr, "tune_s": 12.0, "grid_val_acc": grid}}
    return [*epochs, final]


def _rf(seed, n_train, alpha, scores, test):
    return {**DATA, "n_train": n_train, "cell_key": f"rf-{n_train}-{seed}", "row_type": "final",
            "method": "random-features", "seed": seed, "val_acc": max(scores.values()), "test_acc": test,
            "train_total_s": 5.0, "model_bytes": 9e6, "alpha": alpha,
            "method_config": json.dumps({"encoder": "sign", "projection": "gaussian", "n_components": 1000}),
            "extra": {"grid_val_acc": scores}}


@pytest.fixture
def results(tmp_path):
    rows = []
    for seed in (0, 1):
        # seed 0 keeps the top of its grid (edge), seed 1 the middle
        lr = 1.0 if seed == 0 else 0.3
        rows += _ft(seed, 800, lr, {"0.1": 0.40, "0.3": 0.55, "1": 0.60 if seed == 0 else 0.50}, 0.60)
        rows += _ft(seed, 2400, 0.3, {"0.1": 0.60, "0.3": 0.70, "1": 0.65}, 0.70 + seed / 100)
        rows.append(_rf(seed, 800, 100.0, {"1": 0.60, "100": 0.66, "10000": 0.62}, 0.65))
        rows.append(_rf(seed, 2400, 100.0, {"1": 0.70, "100": 0.74, "10000": 0.73}, 0.75))
    append_rows(tmp_path / "results.csv", rows)
    return tmp_path


def test_tuning_table_reports_choices_edges_spread_and_cost(results):
    finals, _, _ = split_rows(load_results(results))
    table = tuning_table(finals)
    ft = table[(table["method"] == "finetune") & (table["n_train"] == 800)].iloc[0]
    assert ft["hyperparameter"] == "lr" and ft["grid"] == "0.1, 0.3, 1"
    assert ft["chosen (per seed)"] == "1, 0.3" and ft["at an end of the grid"] == "1 of 2"
    assert ft["val acc over the grid (min-max)"] == "0.400-0.575 (spread 0.175)"  # means over seeds
    assert ft["tune_s"] == "12.0"
    rf = table[(table["method"] == "random-features") & (table["n_train"] == 2400)].iloc[0]
    assert rf["hyperparameter"] == "alpha" and rf["chosen (per seed)"] == "100, 100"
    assert rf["at an end of the grid"] == "0 of 2" and rf["tune_s"] == ""


def test_per_seed_grids_are_described_by_one_seeds_size_and_the_range(tmp_path):
    # Ridge scales its alpha grid to each seed's features: the table must not list their union as one grid.
    rows = [_rf(seed, 800, 10.0 ** (seed + 1), {str(10.0 ** (seed + i)): 0.5 + i / 10 for i in range(3)}, 0.6)
            for seed in (0, 1)]
    append_rows(tmp_path / "results.csv", rows)
    finals, _, _ = split_rows(load_results(tmp_path))
    rf = tuning_table(finals).iloc[0]
    assert rf["grid"] == "3 values a seed (scaled per seed), 1 to 1e+03"
    assert rf["chosen (per seed)"] == "10, 100" and rf["at an end of the grid"] == "0 of 2"


def test_two_training_set_sizes_are_two_rows_not_seeds(results):
    finals, _, _ = split_rows(load_results(results))
    acc = accuracy_table(finals)
    ft = acc[acc["method"] == "finetune"]
    assert sorted(ft["n_train"]) == [800, 2400] and list(ft["seeds"]) == [2, 2]
    assert set(ft["test_acc"]) == {"0.6000 ± 0.0000", "0.7050 ± 0.0071"}


def test_report_draws_one_set_of_figures_per_training_set_size(results):
    md = build_report(results).read_text()
    assert "## Hyperparameters chosen on validation" in md
    for n in (800, 2400):
        for name in ("pareto_acc_vs_time", "time_to_accuracy", "acc_vs_size"):
            png, = (results / "report").glob(f"{name}__cifar10_n{n}.*.png")  # named by its content
            assert png.stat().st_size > 5000, png
            assert f"]({png.name})" in md
        assert f"(cifar10, {n} training images)" in md
    assert not list((results / "report").glob("pareto_acc_vs_time.*.png"))


def test_time_to_accuracy_rows_name_the_cut_of_each_configuration(results):
    from benchmarks.report.comparison import time_to_accuracy_table

    finals, epochs, _ = split_rows(load_results(results))
    table = time_to_accuracy_table(finals, epochs)
    assert sorted(table["n_train"]) == [800, 2400] and set(table["cut"]) == {"features.18"}


def test_a_preset_is_labelled_by_what_it_runs_not_by_the_options_it_overrode():
    from benchmarks.harness.registry import REGISTRY

    finetune = REGISTRY["finetune"]
    assert finetune.label(finetune.Config(preset="seed-paper", mode="linear-probe")) == "unfreeze (seed-paper)"
    assert finetune.label(finetune.Config(mode="linear-probe")) == "linear-probe"


@pytest.mark.parametrize("weights", ["none", "IMAGENET1K_V1"])
def test_a_sweep_over_cuts_gets_the_seeds_figure_6(tmp_path, weights):
    # Time and size by cut layer (rows out of depth order); accuracy only when the weights were real.
    cuts = ["denseblock4.denselayer8", "denseblock3.denselayer4", "norm5"]
    rows = []
    for i, cut in enumerate(cuts):
        base = {**DATA, "backbone": "densenet169", "cut": cut, "weights": weights, "n_train": 800}
        rows.append({**_rf(0, 800, 1.0, {"1": 0.5, "10": 0.4}, 0.5), **base, "cell_key": f"rf-{cut}",
                     "train_total_s": 5.0 + i, "model_bytes": 1e6 * (i + 1)})
        rows += [{**r, **base, "cell_key": f"ft-{cut}"} for r in _ft(0, 800, 0.3, {"0.3": 0.5, "1": 0.4}, 0.4)]
    append_rows(tmp_path / "results.csv", rows)
    md = build_report(tmp_path).read_text()
    png, = (tmp_path / "report").glob("by_cut.*.png")
    assert png.stat().st_size > 5000 and f"]({png.name})" in md
    random_caption = "every cell ran on random weights, so no accuracy is shown"
    assert (random_caption in md) == (weights == "none")
    finals, _, _ = split_rows(load_results(tmp_path))
    from benchmarks.report.plots import versus_cut
    assert versus_cut(finals[finals["cut"] != "norm5"]).note.startswith("fewer than 3 cut layers")
