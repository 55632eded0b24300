"""One record per registered thing (issue 24, item 2): every dataset and projection declares what the
harness needs in its own file, and the harness reads it from there -- checked over the registries, so
that a new one is held to it by one registry line."""

from __future__ import annotations

import importlib

import pytest

from benchmarks.core.datasets import DATASETS, dataset_names, get_dataset
from benchmarks.core.datasets.sources import Dataset, DatasetError
from benchmarks.harness.cells import cell_shape, make_cell
from benchmarks.methods.projections import KERNEL, projection_class, projection_names, takes_n_components
from benchmarks.methods.random_features import RandomFeatures
from projector.projections import PROJECTIONS, RECORD, make_projection


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_each_dataset_declares_its_record_in_its_own_file(name):
    record = DATASETS[name]
    assert isinstance(record, Dataset) and record.name == name and callable(record.read)
    module = importlib.import_module(record.read.__module__)
    assert module.DATASET is record  # declared where it is read
    n_classes, n_train, n_test = record.sizes()
    assert n_classes >= 2 and n_train > 0 and n_test > 0 and record.about
    assert get_dataset(name) is record and name in dataset_names()
    # the plan of a cell of it comes from the record alone: nothing is read
    cell = make_cell({"method": "random-features", "dataset": name, "weights": "none", "train_per_class": 0,
                      "test_per_class": 0, "val_fraction": 0.1, "device": "cpu"})
    shape = cell_shape(cell)
    assert (shape.n_classes, shape.n_train + shape.n_val, shape.n_test) == (n_classes, n_train, n_test)


def test_an_unknown_dataset_names_the_registered_ones():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar11'; choose one of: " + ", ".join(DATASETS)):
        get_dataset("cifar11")


@pytest.mark.parametrize("name", sorted(PROJECTIONS))
def test_each_projection_declares_its_record_and_the_estimate_reads_it(name):
    cls = projection_class(name)
    assert all(hasattr(cls, field) for field in RECORD) and cls.name == name
    assert name in projection_names() and takes_n_components(name) == cls.takes_n_components
    config = RandomFeatures.Config(projection=name, n_components=1000)
    shape = cell_shape(make_cell({"method": "random-features", "dataset": "cifar10", "weights": "none",
                                  "image_size": 32, "train_per_class": 10, "test_per_class": 5, "device": "cpu",
                                  **({"projection": name} if name != "gaussian" else {})}))
    flops, info = RandomFeatures.flops(config, shape)
    k = info["k"]
    assert flops["project"] == cls.flops_per_mac * (shape.n_train + shape.n_val) * info["feature_dim"] * k
    if cls.takes_n_components and name != "opu":  # (opu needs the device's library to be built)
        built = make_projection(name, n_components=16, seed=0, **({"block_size": 8} if cls.takes_block_size else {}))
        assert built.n_components == 16


def test_the_kernel_is_no_projection_but_a_choice_of_the_method():
    assert KERNEL not in PROJECTIONS and KERNEL in projection_names() and not takes_n_components(KERNEL)
    with pytest.raises(ValueError, match="unknown projection 'gausian'; choose one of: gaussian"):
        projection_class("gausian")


def test_a_dataset_or_projection_named_by_file_that_is_not_one_is_refused_with_what_it_lacks(tmp_path, capsys):
    from benchmarks.cli import main

    plugin = tmp_path / "parts.py"
    plugin.write_text("NOT_A_DATASET = 3\nclass HalfProjection:\n    name = 'half'\n    def fit(self, X):\n"
                      "        return self\n    def transform(self, X):\n        return X\n")
    assert main(["run", "--dataset", f"{plugin}:NOT_A_DATASET", "--weights", "none", "--out", str(tmp_path / "o"),
                 "--dry-run"]) == 2
    said = capsys.readouterr()
    assert "is not a gradfree dataset: give a benchmarks.core.datasets.Dataset record" in said.out + said.err
    assert main(["run", "--projector", f"{plugin}:HalfProjection", "--weights", "none", "--out",
                 str(tmp_path / "o"), "--dry-run"]) == 2
    said = capsys.readouterr()
    assert "is not a projection gradfree can plan: it lacks streamable, takes_block_size" in said.out + said.err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_a_plan_takes_the_rate_measured_for_its_own_configuration(tmp_path):
    # One median over a frozen linear probe and a whole network in one cycle planned the second 6x too fast
    # (EfficientNet-Lite0, 1,500 images: ~70 s planned, 425 s measured): rates are kept per configuration.
    import json

    from benchmarks.harness import results as res
    from benchmarks.harness.estimate import estimate, measured_rates

    base = {"method": "finetune", "dataset": "cifar10", "weights": "none", "cut": "features.18", "image_size": 32,
            "train_per_class": 10, "test_per_class": 5, "device": "cpu"}
    probe, whole = (make_cell({**base, **options}) for options in
                    ({"mode": "linear-probe"}, {"mode": "unfreeze", "unfreeze_blocks": 100}))
    shape = cell_shape(probe)
    rows = []
    for cell, train_s, tune_s in ((probe, 1.0, 0.0), (whole, 6.0, 4.0)):
        rows.append({"run_id": "r", "cell_key": cell.key(), "row_type": "final", "status": "ok", "method": "finetune",
                     "dataset": "cifar10", "backbone": "mobilenet_v2", "cut": "features.18", "image_size": 32,
                     "n_classes": 10, "n_train": shape.n_train, "n_val": shape.n_val, "n_test": shape.n_test,
                     "device": "cpu", "train_s": train_s, "method_config": json.dumps(cell.option_dict()),
                     "extra": {"tune_s": tune_s}})
    res.append_rows(tmp_path / "results.csv", rows)
    rates = measured_rates(tmp_path / "results.csv")
    assert rates[("cpu", "train", "finetune", "unfreeze")] < rates[("cpu", "train", "finetune", "linear-probe")]
    assert estimate(whole, rates)["time_s"] == pytest.approx(10.0)  # its own train_s + tune_s, not a median
    assert estimate(probe, rates)["time_s"] == pytest.approx(1.0)


def test_a_plan_takes_the_rate_measured_at_the_size_nearest_its_own(tmp_path):
    # Small cells' times are mostly fixed costs: their rate, scaled to a whole dataset, planned the exact
    # kernel on 45,000 images at 103 minutes, which took 12. A cell is planned at the rate of its nearest size.
    import json

    from benchmarks.harness import results as res
    from benchmarks.harness.estimate import DEFAULT_GFLOPS, Rates, estimate, measured_rates

    base = {"method": "random-features", "projection": "none", "encoder": "none", "dataset": "cifar10",
            "weights": "none", "cut": "features.18", "image_size": 32, "test_per_class": 5, "device": "cpu"}
    small, large = (make_cell({**base, "train_per_class": n}) for n in (10, 2000))
    rows = []
    for cell, fit_s in ((small, 1.0), (large, 4.0)):  # 200x the FLOPs in 4x the time
        shape = cell_shape(cell)
        rows.append({"run_id": "r", "cell_key": cell.key(), "row_type": "final", "status": "ok",
                     "method": "random-features", "dataset": "cifar10", "backbone": "mobilenet_v2",
                     "cut": "features.18", "image_size": 32, "n_classes": 10, "n_train": shape.n_train,
                     "n_val": shape.n_val, "n_test": shape.n_test, "device": "cpu", "fit_s": fit_s,
                     "method_config": json.dumps(cell.option_dict()), "extra": {}})
    res.append_rows(tmp_path / "results.csv", rows)
    rates = measured_rates(tmp_path / "results.csv")
    key = ("cpu", "fit", "random-features", "ridge on raw features")
    (f_small, r_small), (f_large, r_large) = sorted(rates.samples[key])
    assert r_large > 10 * r_small
    assert rates.at(key, f_large * 3) == r_large and rates.at(key, f_small / 3) == r_small
    # Each cell is planned at its own fit_s in place of the default rate's seconds.
    default = DEFAULT_GFLOPS["cpu"]["fit"]
    for cell, f, fit_s in ((small, f_small, 1.0), (large, f_large, 4.0)):
        assert estimate(cell, rates)["time_s"] - estimate(cell, Rates())["time_s"] == pytest.approx(
            fit_s - f / 1e9 / default, rel=1e-6)
    # Pooled with another folder's samples: the nearest size still decides.
    pooled = Rates({key: [(f_small, 1.0)]}).merged(rates)
    assert pooled.at(key, f_large) == r_large and len(pooled.samples[key]) == 3


def test_a_row_whose_features_came_from_the_cache_still_gives_its_fit_rate(tmp_path):
    # The study's rows mostly reused cached features: leaving the whole row out left the planner no fit rate
    # of the logistic control, which then planned the full-size cell at the ridge's GEMM rate, 5x too fast.
    import json

    from benchmarks.harness import results as res
    from benchmarks.harness.estimate import measured_rates

    cell = make_cell({"method": "random-features", "projection": "none", "encoder": "none", "classifier": "logistic",
                      "dataset": "cifar10", "weights": "none", "image_size": 32, "train_per_class": 10,
                      "test_per_class": 5, "device": "cpu"})
    shape = cell_shape(cell)
    res.append_rows(tmp_path / "results.csv", [{
        "run_id": "r", "cell_key": cell.key(), "row_type": "final", "status": "ok", "method": "random-features",
        "dataset": "cifar10", "backbone": "mobilenet_v2", "cut": "features.18", "image_size": 32, "n_classes": 10,
        "n_train": shape.n_train, "n_val": shape.n_val, "n_test": shape.n_test, "device": "cpu", "fit_s": 2.0,
        "extract_s": 3.0, "method_config": json.dumps(cell.option_dict()),
        "extra": {"cached_phases": ["extract_s", "predict_s"]}}])
    rates = measured_rates(tmp_path / "results.csv")
    assert ("cpu", "fit", "random-features", "logistic on raw features") in rates.samples
    assert not any(key[1] == "extract" for key in rates.samples)


def test_the_logistic_controls_planned_flops_follow_its_grid_and_rows_not_the_ridges():
    from benchmarks.methods.costs import logistic_flops as _logistic_flops, ridge_flops as _ridge_flops

    base = {"method": "random-features", "projection": "none", "encoder": "none", "dataset": "cifar10",
            "weights": "none", "image_size": 32, "test_per_class": 5, "device": "cpu", "refit": False}

    def fit(**options):
        cell = make_cell({**base, **options})
        return RandomFeatures.flops(cell.config, cell_shape(cell))[0]["fit"]

    # L-BFGS iterations ~ sqrt(n) (measured 46, 60, 177 a C at 500, 1,500, 15,000 images), each ~ n: n^1.5
    assert fit(classifier="logistic", train_per_class=200) == pytest.approx(2**1.5 * fit(classifier="logistic",
                                                                                         train_per_class=100))
    five = fit(classifier="logistic", train_per_class=100, alphas=[1e-3, 1e-2, 0.1, 1.0, 10.0])
    assert five == pytest.approx(5 / 2 * fit(classifier="logistic", train_per_class=100, alphas=[0.1, 1.0]))
    assert fit(classifier="ridge", train_per_class=100) != fit(classifier="logistic", train_per_class=100)
    # The ridge's solves as the ridge picks them: a Cholesky per alpha past ~n = 500 on CPU, eigh below.
    assert _ridge_flops(5000, 10000, 13) == pytest.approx(2 * 5000 * 10000 * 5000 + 13 * 5000**3 / 3)
    assert _ridge_flops(100, 10000, 13) == pytest.approx(2 * 100 * 10000 * 100 + 9 * 100**3)
    assert _logistic_flops(10, 0, 3, 2, 4) * 2**1.5 == pytest.approx(_logistic_flops(20, 0, 3, 2, 4))
    assert _logistic_flops(10**8, 0, 3, 2, 1) == pytest.approx(4 * 3 * 2 * 10**8 * 1000)  # LogisticControl's cap
    # Its memory: scikit-learn's float64 features and their standardised copy (13.9 GB measured at full
    # size, where the ridge's plan of 6.3 GiB had been taken for it).
    logistic, ridge = (make_cell({**base, "classifier": c, "train_per_class": 100}) for c in ("logistic", "ridge"))
    shape = cell_shape(logistic)
    n_fit, m = shape.n_train + shape.n_val, min(shape.n_train, 1280)  # 1,280 features at 32 px
    assert (RandomFeatures.memory_bytes(logistic.config, shape) - RandomFeatures.memory_bytes(ridge.config, shape)
            == 2 * n_fit * 1280 * 8 - 2 * m**2 * 8)


def test_a_dataset_whose_reader_gives_something_else_is_refused_naming_it(tmp_path):
    from benchmarks.core.data import load_dataset

    plugin = tmp_path / "bad_data.py"
    plugin.write_text("from benchmarks.core.datasets import Dataset\n"
                      "BAD = Dataset('bad', lambda data_dir: [1, 2], n_classes=2, full_sizes=(10, 10))\n")
    with pytest.raises(DatasetError, match="its reader returned list, not a \\(train, test\\) pair"):
        load_dataset(f"{plugin}:BAD", image_size=32)


def test_the_progress_eta_weighs_cells_by_their_estimates(monkeypatch, capsys):
    # A suite of one-minute ridges and hour-long trainings: after a ridge, the ETA is the trainings' time,
    # not one ridge per cell left.
    from benchmarks.harness import executors
    from benchmarks.harness.estimate import estimate

    base = {"dataset": "cifar10", "weights": "none", "image_size": 32, "train_per_class": 500, "device": "cpu"}
    ridge = make_cell({**base, "method": "random-features", "projection": "none", "encoder": "none"})
    train = make_cell({**base, "method": "finetune", "mode": "unfreeze", "epochs": 30})
    clock = iter([0.0, 60.0])
    monkeypatch.setattr(executors.time, "perf_counter", lambda: next(clock))
    progress = executors._Progress([ridge, train])
    progress.finished(1, "ridge: ok", ridge)
    line = capsys.readouterr().out
    ratio = estimate(train)["time_s"] / estimate(ridge)["time_s"]
    assert ratio > 10
    expected = executors._fmt_s(60.0 * ratio)
    assert line.rstrip().endswith(f"ETA {expected})"), line


def test_a_resumed_cell_does_not_scale_the_eta(monkeypatch, capsys):
    # The first cell of a resumed suite ran only its last epochs: its few minutes against its whole plan
    # would make the ETA a fraction of the plan (seen: 41 min for 8 h of cells).
    from benchmarks.harness import executors
    from benchmarks.harness.estimate import estimate

    base = {"dataset": "cifar10", "weights": "none", "image_size": 32, "train_per_class": 500, "device": "cpu"}
    ridge = make_cell({**base, "method": "random-features", "projection": "none", "encoder": "none"})
    resumed, train = (make_cell({**base, "method": "finetune", "mode": "unfreeze", "epochs": e}) for e in (30, 20))
    clock = iter([0.0, 30.0, 90.0])
    monkeypatch.setattr(executors.time, "perf_counter", lambda: next(clock))
    progress = executors._Progress([resumed, ridge, train])
    progress.finished(1, "resumed: ok", resumed, {"extra": {"resumed_from": ["main@27"]}})
    planned = estimate(ridge)["time_s"] + estimate(train)["time_s"]
    assert capsys.readouterr().out.rstrip().endswith(f"ETA {executors._fmt_s(planned)} (planned))")
    progress.finished(2, "ridge: ok", ridge, {"extra": "{}"})  # 60 s for the ridge, alone
    expected = executors._fmt_s(60.0 / estimate(ridge)["time_s"] * estimate(train)["time_s"])
    assert capsys.readouterr().out.rstrip().endswith(f"ETA {expected})")
