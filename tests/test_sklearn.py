"""Every public projector estimator is a scikit-learn estimator: scikit-learn's own checks, then
Pipeline, GridSearchCV, cross_val_score, clone and the numpy / pandas / torch boundary.

A check that cannot pass is listed in ``EXPECTED_FAILURES`` with its reason (scikit-learn marks
it xfail and reports it), never skipped silently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import RidgeClassifier as SkRidgeClassifier
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from projector import (
    GaussianProjection,
    IdentityEncoder,
    KernelRidgeClassifier,
    LinearProjection,
    NoProjection,
    OPUProjection,
    RidgeClassifier,
    SignEncoder,
    StreamingRidgeClassifier,
    StructuredProjection,
    ThresholdEncoder,
)

pytestmark = pytest.mark.usefixtures("one_thread")

_BINARY_ONLY = ("OPUProjection takes binary 0/1 input only (an optical device turns pixels on or off), as "
                "documented; the check fits it on real-valued data, which it refuses with a TypeError")
_EVEN_FEATURES = ("|XR|^2 features are even functions of x (f(x) = f(-x)): on the check's blobs, centred at 0, "
                  "classes opposite each other through the origin look alike (training accuracy ~0.74 < 0.83, as a "
                  "ridge on the materialised features); on non-negative inputs, the method's "
                  "(binary codes, post-ReLU features), the same data gives ~0.92")

EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "KernelRidgeClassifier": {"check_classifiers_train": _EVEN_FEATURES},
    "StreamingRidgeClassifier": {"check_classifiers_train": _EVEN_FEATURES},
    "OPUProjection": {name: _BINARY_ONLY for name in (
        "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
        "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
        "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_dtype_object",
        "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
"check_f_contiguous_array_estimator",
        "check_transformer_data_not_an_array", "check_transformer_general",
"check_methods_sample_order_invariance",
        "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature", "check_dict_unchanged",
        "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in", "check_fit2d_predict1d")},
}

ESTIMATORS = [
    SignEncoder(),
    ThresholdEncoder(),
    ThresholdEncoder(threshold="median"),
    IdentityEncoder(),
    GaussianProjection(n_components=64),
    StructuredProjection(n_components=64),
    LinearProjection(n_components=64),
    NoProjection(),
    OPUProjection(n_components=64, simulated=True),
    RidgeClassifier(),
    RidgeClassifier(solver="dual", alphas=[0.1, 1.0, 10.0]),
    KernelRidgeClassifier(),
    StreamingRidgeClassifier(GaussianProjection(n_components=64)),
    StreamingRidgeClassifier(GaussianProjection(n_components=512), solver="dual"),
]


@pytest.mark.numerics
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILURES.get(type(est).__name__, {}))
def test_sklearn_checks(estimator, check):
    if isinstance(estimator, OPUProjection):
        pytest.importorskip("lightonml")
    check(estimator)


# --- the listed failures are what they say ---

def _blobs():
    from sklearn.datasets import make_blobs
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils import shuffle

    X, y = make_blobs(n_samples=300, random_state=0)  # check_classifiers_train's data
    X, y = shuffle(X, y, random_state=7)
    return StandardScaler().fit_transform(X), y


@pytest.mark.parametrize("make", [KernelRidgeClassifier, lambda: StreamingRidgeClassifier(GaussianProjection(64))])
def test_even_features_need_non_negative_inputs(make):
    X, y = _blobs()
    Y = GaussianProjection(64).fit_transform(X)
    assert np.allclose(GaussianProjection(64).fit(X).transform(-X), Y, rtol=1e-5, atol=1e-6)  # f(-x) = f(x)
    assert make().fit(X, y).score(X, y) < 0.83
    Xp = X - X.min(0)  # the same blobs, non-negative
    assert make().fit(Xp, y).score(Xp, y) > 0.9


def test_opu_is_an_estimator_on_binary_input():
    pytest.importorskip("lightonml")
    X, y = _blobs()
    Xb = (X > 0).astype(np.uint8)
    with pytest.raises(TypeError, match="binary input"):
        OPUProjection(n_components=16, simulated=True).fit(X)
    model = make_pipeline(OPUProjection(n_components=32, simulated=True), RidgeClassifier())
    assert clone(model).get_params()["opuprojection__n_components"] == 32
    ref = make_pipeline(GaussianProjection(n_components=32), RidgeClassifier())  # same distribution of R
    assert abs(model.fit(Xb, y).score(Xb, y) - ref.fit(Xb, y).score(Xb, y)) < 0.15
    assert model.named_steps["opuprojection"].transform(Xb[:3]).dtype == np.float32


# --- scikit-learn tooling over projector estimators ---

def _binary_task(n=240, d=40, n_classes=3, seed=0):
    """Non-negative features with a class signal, as a CNN's post-ReLU activations."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = np.maximum(rng.normal(size=(n, d)) + 1.2 * (np.arange(d)[None, :] % n_classes == y[:, None]) - 0.5, 0)
    return X.astype(np.float32), y


def test_pipeline_grid_search_over_k_alpha_and_threshold():
    X, y = _binary_task()
    pipe = make_pipeline(ThresholdEncoder(), StructuredProjection(n_components=64), RidgeClassifier())
    grid = GridSearchCV(pipe, {
        "thresholdencoder__threshold": [0.0, "median"],
        "structuredprojection__n_components": [64, 256],
        "ridgeclassifier__alphas": [None, [1e-2, 1.0, 100.0]],
    }, cv=3)
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 8
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.best_score_ > 0.6
    best = grid.best_estimator_
    assert best.named_steps["ridgeclassifier"].cv_ == "loo"  # no validation rows in a pipeline: leave-one-out
    assert best.predict(X).dtype == y.dtype and best.score(X, y) >= grid.best_score_ - 0.1


@pytest.mark.parametrize("est", [RidgeClassifier(), KernelRidgeClassifier(), StreamingRidgeClassifier(
    GaussianProjection(n_components=128))], ids=lambda e: type(e).__name__)
def test_cross_val_score(est):
    X, y = _binary_task()
    scores = cross_val_score(make_pipeline(SignEncoder(), est), X, y, cv=4)
    assert scores.shape == (4,) and scores.mean() > 0.6


def test_grid_search_over_the_streamed_projection():
    X, y = _binary_task(n=150)
    model = StreamingRidgeClassifier(GaussianProjection(n_components=32), alphas=[0.1, 10.0])
    grid = GridSearchCV(model, {"projection__n_components": [32, 300]}, cv=3).fit((X > 0).astype(np.uint8), y)
    assert grid.best_params_["projection__n_components"] in (32, 300)
    assert grid.best_estimator_.projection_.n_components == grid.best_params_["projection__n_components"]
    assert model.projection.__dict__.keys() == GaussianProjection(n_components=32).__dict__.keys()  # unfitted


def test_matches_sklearn_on_numpy_and_pandas():
    """numpy in, numpy out; a frame in, a frame out (its index kept); the same model as
    scikit-learn's RidgeClassifier in float64."""
    X, y = _binary_task(n=120, d=15)
    ours = RidgeClassifier(alphas=2.0).fit(X, y)
    sk = SkRidgeClassifier(alpha=2.0).fit(X.astype(np.float64), y)
    assert isinstance(ours.coef_, np.ndarray) and isinstance(ours.predict(X), np.ndarray)
    np.testing.assert_allclose(ours.decision_function(X), sk.decision_function(X), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])], index=np.arange(100, 220))
    enc = SignEncoder().fit(df)
    out = enc.transform(df)
    assert isinstance(out, pd.DataFrame) and list(out.index) == list(df.index) and list(out.columns) == list(df.columns)
    Y = GaussianProjection(n_components=20).fit(out).transform(out)
    assert isinstance(Y, pd.DataFrame) and Y.shape == (120, 20) and list(Y.index) == list(df.index)
    np.testing.assert_allclose(Y.to_numpy(), GaussianProjection(n_components=20).fit_transform(
        torch.from_numpy((X > 0).astype(np.uint8))).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(RidgeClassifier(alphas=2.0).fit(df, y).predict(df), ours.predict(X))


def test_torch_in_torch_out_without_a_copy_to_numpy(monkeypatch):
    X, y = _binary_task(n=100, d=12)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    import sklearn.utils.validation as validation

    # a tensor never goes through scikit-learn's validation (which converts to numpy)
    monkeypatch.setattr(validation, "validate_data", lambda *a, **k: pytest.fail("a tensor was validated as numpy"))
    monkeypatch.setattr(validation, "check_array", lambda *a, **k: pytest.fail("a tensor was validated as numpy"))
    assert IdentityEncoder().fit(Xt).transform(Xt).data_ptr() == Xt.data_ptr()  # float32 passes through, no copy
    model = make_pipeline(SignEncoder(), GaussianProjection(n_components=50), RidgeClassifier(alphas=[0.1, 1.0]))
    model.fit(Xt, yt)
    out = model.predict(Xt)
    assert isinstance(out, torch.Tensor) and isinstance(model.decision_function(Xt), torch.Tensor)
    assert isinstance(model[-1].coef_, torch.Tensor)


def test_clone_and_params_round_trip():
    est = StreamingRidgeClassifier(StructuredProjection(n_components=100, seed=3), alphas=[1.0, 2.0])
    params = est.get_params()
    assert params["projection__seed"] == 3 and params["alphas"] == [1.0, 2.0]
    twin = clone(est).set_params(projection__n_components=200, alphas=5.0)
    assert twin.projection.n_components == 200 and est.projection.n_components == 100
    assert " ".join(repr(twin).split()) == \
        "StreamingRidgeClassifier(alphas=5.0, projection=StructuredProjection(n_components=200, seed=3))"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_the_device():
    X, y = _binary_task(n=200, d=30)
    Xc, yc = torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda()
    for clf in (RidgeClassifier(), KernelRidgeClassifier(), StreamingRidgeClassifier(GaussianProjection(300))):
        model = make_pipeline(SignEncoder(), clf) if not isinstance(clf, RidgeClassifier) else \
            make_pipeline(SignEncoder(), StructuredProjection(n_components=256), clf)
        model.fit(Xc, yc)
        pred = model.predict(Xc)
        assert isinstance(pred, torch.Tensor) and pred.device.type == "cuda"
        cpu = clone(model).fit(X, y).predict(X)
        assert (pred.cpu().numpy() == cpu).mean() > 0.9  # CPU and CUDA generators differ: the same method
