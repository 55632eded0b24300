"""The learning-curve protocol (issue 23, item 2): one fixed validation split held out once from the
training pool, training subsets drawn from the rest with the seed, and no refit on train + validation,
so that both sides fit the same images and validation only selects."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.harness.cells import make_cell, validate
from benchmarks.cli import main
from benchmarks.core.data import load_dataset
from benchmarks.methods.logistic import LogisticControl
from benchmarks.harness.results import RESULTS_FILE, read_rows
from tiny_data import tiny_cifar10


@pytest.fixture(scope="module")
def pool(cifar10_dir, tmp_path_factory):
    return tiny_cifar10(cifar10_dir, tmp_path_factory.mktemp("pool"), train_per_class=12, test_per_class=4)


def _load(pool, train_per_class, seed):
    return load_dataset("cifar10", pool, image_size=32, train_per_class=train_per_class, test_per_class=4,
                        val_per_class=3, subset_seed=seed, progress=False)


def test_the_validation_split_is_the_same_at_every_size_and_seed_and_never_trained_on(pool):
    bundles = [_load(pool, n, seed) for n in (2, 5, None) for seed in (0, 1)]
    val = bundles[0].val.images
    assert all(b.val.images.equal(val) and b.test.images.equal(bundles[0].test.images) for b in bundles)
    assert len({b.fingerprint() for b in bundles}) == 1  # one data group: sizes and seeds share it
    assert len({b.info["split_hash"] for b in bundles}) == 5  # ...but each draw is named (None: one draw)
    flat = val.reshape(len(val), -1)
    for b in bundles:
        train = b.train.images.reshape(len(b.train), -1)
        assert not (train[:, None, :] == flat[None, :, :]).all(-1).any()  # no validation image is trained on
    assert [len(b.train) for b in bundles] == [20, 20, 50, 50, 90, 90]


def test_seeds_resample_the_training_subset_below_the_whole_pool(pool):
    a, b = _load(pool, 5, 0), _load(pool, 5, 1)
    assert not a.train.images.equal(b.train.images)
    assert _load(pool, 5, 0).train.images.equal(a.train.images)  # reproducible
    assert _load(pool, None, 0).train.images.equal(_load(pool, None, 1).train.images)  # the whole pool: one draw


def test_a_fixed_validation_split_that_leaves_nothing_is_refused(pool):
    from benchmarks.core.datasets import DatasetError

    with pytest.raises(DatasetError, match="leaves no training image"):
        load_dataset("cifar10", pool, image_size=32, test_per_class=4, val_per_class=12, progress=False)
    with pytest.raises(DatasetError, match="lower --train-per-class to at most 9"):
        load_dataset("cifar10", pool, image_size=32, train_per_class=10, test_per_class=4, val_per_class=3,
                     progress=False)
    with pytest.raises(ValueError, match="exceeds the 5,000 training images per class"):
        validate(make_cell({"dataset": "cifar10", "train_per_class": 4900, "val_per_class": 500}))


def test_the_key_of_a_cell_without_the_new_protocol_is_unchanged_and_with_it_differs():
    plain = make_cell({"dataset": "cifar10"})
    assert make_cell({"dataset": "cifar10", "val_per_class": 0}).key() == plain.key()  # 0: not used
    assert make_cell({"dataset": "cifar10", "val_per_class": 500}).key() != plain.key()


def test_logistic_control_without_refit_keeps_the_model_fitted_on_the_training_rows():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(60, 5)), rng.normal(size=(20, 5))
    y, yv = (X[:, 0] > 0).astype(int), (Xv[:, 0] > 0).astype(int)
    kept = LogisticControl(Cs=(0.01, 1.0), refit=False).fit(X, y, Xv, yv)
    reference = LogisticRegression(C=kept.alpha_, solver="lbfgs", max_iter=1000).fit(StandardScaler().fit_transform(X), y)
    np.testing.assert_allclose(kept.model_.coef_, reference.coef_, rtol=1e-6)
    refitted = LogisticControl(Cs=(0.01, 1.0)).fit(X, y, Xv, yv)
    assert not np.allclose(refitted.model_.coef_, reference.coef_, rtol=1e-3)
    # Without the refit the grid's own fit at that C is kept (not fitted twice); each fit's iterations are recorded.
    assert set(kept.n_iter_) == {0.01, 1.0} and set(refitted.n_iter_) == {0.01, 1.0, "final"}
    assert kept.n_iter_[kept.alpha_] == reference.n_iter_.max() and all(n >= 1 for n in refitted.n_iter_.values())


def test_two_seeds_of_the_protocol_run_in_one_folder_on_their_own_subsets(pool, tmp_path):
    suite = tmp_path / "curve.toml"
    suite.write_text("""
description = "two seeds of one size, fixed validation split, no refit"
[settings]
dataset = "cifar10"
image_size = 32
train_per_class = 5
val_per_class = 3
test_per_class = 4
device = "cpu"
threads = 1
seed = [0, 1]
[[grid]]
method = "random-features"
n_components = 64
refit = false
""")
    out = tmp_path / "r"
    assert main(["run", "--suite", str(suite), "--data-dir", str(pool), "--out", str(out), "--no-progress",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    rows = [r for r in read_rows(out / RESULTS_FILE) if r["row_type"] == "final"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["data_fingerprint"] == rows[1]["data_fingerprint"]  # one data group...
    extras = [json.loads(r["extra"]) for r in rows]
    assert extras[0]["split_hash"] != extras[1]["split_hash"]  # ...two draws of its training images
    assert "cached_phases" not in extras[0] and "cached_phases" in extras[1]  # seed 1 reused what it could...
    assert [json.loads(r["method_config"])["refit"] for r in rows] == [False, False]
    assert [r["n_train"] for r in rows] == ["50", "50"] and [r["n_val"] for r in rows] == ["30", "30"]


def test_the_feature_cache_shares_validation_and_test_features_across_draws_not_training_ones(pool):
    from types import SimpleNamespace

    from benchmarks.core.features import FeatureCache

    ext = SimpleNamespace(name="mobilenet_v2", cut="features.18", weights="IMAGENET1K_V1", dtype_name="torch.float32")
    cache, a, b = FeatureCache(), _load(pool, 5, 0), _load(pool, 5, 1)
    assert cache.key(a, ext, "train", 0) != cache.key(b, ext, "train", 0)  # ...but not seed 0's training features
    assert cache.key(a, ext, "val", 0) == cache.key(b, ext, "val", 0)
    assert cache.key(a, ext, "test", 0) == cache.key(b, ext, "test", 0)


def test_a_dry_run_plans_from_the_rates_another_folder_measured(tmp_path, capsys, cifar10_dir):
    repo = __import__("pathlib").Path(__file__).resolve().parent.parent
    flags = ["run", "--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--out", str(tmp_path / "new"), "--dry-run"]
    assert main(flags) == 0
    default = capsys.readouterr().out
    assert main([*flags, "--rates-from", str(repo / "results" / "study-cifar10")]) == 0
    measured = capsys.readouterr().out
    assert "default rates (benchmarks.harness.estimate.DEFAULT_GFLOPS)" in default
    assert "rates measured in" in measured and "study-cifar10" in measured
    assert default.splitlines()[1] != measured.splitlines()[1]  # the estimate moved with the rates
