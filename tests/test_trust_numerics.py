"""Issue 21, items 1, 11 and 18: projector's results do not depend on the BLAS code path or the
batch a row comes in; it refuses garbage (NaN, inf, overflow) and unusable parameters with errors
a user can act on, before any work.

The tolerance tests themselves (derived bounds and negative controls) are in
tests/test_ridge_corners.py; tests/float32_bounds.py derives the bound.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import blas_paths
from projector import (
    GaussianProjection,
    KernelRidgeClassifier,
    LinearProjection,
    RidgeClassifier,
    StreamingRidgeClassifier,
    StructuredProjection,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def two_threads():
    """The failing batches of item 1 came with 2 threads too (torch splits a GEMM by its shape)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _data(n, m=50, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = (3 * rng.uniform(size=(n, m))).astype(np.float32)
    return torch.from_numpy(X), torch.from_numpy(rng.integers(0, n_classes, n))


# --- item 1: a row's result does not depend on the batch it came in ---

_TRANSFORMS = [lambda: GaussianProjection(n_components=64), lambda: GaussianProjection(n_components=512),
               lambda: LinearProjection(n_components=64)]
_CLASSIFIERS = [lambda: RidgeClassifier(alphas=1.0),
                lambda: StreamingRidgeClassifier(GaussianProjection(n_components=64), alphas=1.0),
                lambda: StreamingRidgeClassifier(GaussianProjection(n_components=512), alphas=1.0, solver="dual")]


@pytest.mark.numerics
@pytest.mark.parametrize("n", [20, 300, 600])
@pytest.mark.parametrize("make", _TRANSFORMS + _CLASSIFIERS)
def test_a_rows_result_does_not_depend_on_its_batch(make, n, two_threads):
    """scikit-learn's sample-order check failed under MKL's AVX2 path (2e-7 relative): the
    GEMM's kernel followed the batch's shape. Now every product multiplies fixed-size row
    blocks: permuted rows and a subset give the same bits, whatever the BLAS path."""
    X, y = _data(n)
    est = make()
    if hasattr(est, "transform"):
        run = est.fit(X).transform
    else:
        run = est.fit(X, y).decision_function
    full = run(X)
    perm = torch.from_numpy(np.random.default_rng(1).permutation(n))
    assert torch.equal(run(X[perm]), full[perm])
    assert torch.equal(run(X[:7]), full[:7])
    assert torch.equal(run(X[n - 5:]), full[n - 5:])


def test_forcing_another_blas_path_changes_every_library():
    """The forcing ``make test`` uses for its second run of the numerical tests reaches MKL
    (torch) and both OpenBLAS copies (scipy, numpy) on this CPU: each computes other bits."""
    default_env = blas_paths.default_env()
    forced = blas_paths.probe({**default_env, **blas_paths.FORCED})
    default = blas_paths.probe(default_env)
    assert blas_paths.unchanged(forced, default) == [], (forced, default)
    assert forced["mkl"] == ["CNR:COMPATIBLE"]


def test_make_test_runs_the_numerical_tests_again_on_the_forced_paths():
    text = (REPO / "Makefile").read_text()
    target = re.search(r"^test: .*?(?=^\S)", text, re.M | re.S).group(0)
    forced = re.search(r"^NUMERICS_BLAS \?= (.*)$", text, re.M).group(1).split()
    assert dict(v.split("=") for v in forced) == blas_paths.FORCED
    assert "env $(NUMERICS_BLAS) $(PY) tests/blas_paths.py" in target
    assert "env $(NUMERICS_BLAS) $(PY) -m pytest -q -rfE -m numerics" in target
    assert target.index("blas_paths.py") < target.index("-m numerics") < target.index("regression")


# --- item 11: no garbage fitted silently ---

_ESTIMATORS = {
    "RidgeClassifier": lambda: RidgeClassifier(),
    "StreamingRidgeClassifier": lambda: StreamingRidgeClassifier(GaussianProjection(n_components=64)),
    "StreamingRidgeClassifier-dual": lambda: StreamingRidgeClassifier(GaussianProjection(n_components=512),
                                                                      solver="dual", alphas=1.0),
    "KernelRidgeClassifier": lambda: KernelRidgeClassifier(),
}
_PROJECTIONS = {"GaussianProjection": lambda: GaussianProjection(n_components=64),
                "StructuredProjection": lambda: StructuredProjection(n_components=64)}


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", list(_ESTIMATORS) + list(_PROJECTIONS) + ["LinearProjection"])
def test_a_torch_tensor_with_nan_or_inf_is_refused_as_numpy_is(name, bad):
    X, y = _data(60, m=8)
    X_bad = X.clone()
    X_bad[3, 2] = float(bad)
    make = {**_ESTIMATORS, **_PROJECTIONS, "LinearProjection": lambda: LinearProjection(n_components=64)}[name]
    word = "NaN" if bad == "nan" else "infinity"
    fit = (lambda est, A: est.fit(A)) if name.endswith("Projection") else (lambda est, A: est.fit(A, y))
    with pytest.raises(ValueError, match=f"Input X contains {word}"):
        fit(make(), X_bad)
    with pytest.raises(ValueError, match=f"Input X contains {word}"):  # numpy: scikit-learn's own check
        fit(make(), X_bad.numpy())
    fitted = fit(make(), X)  # and at predict / transform
    use = fitted.transform if name.endswith("Projection") else fitted.predict
    with pytest.raises(ValueError, match=f"Input X contains {word}"):
        use(X_bad)


@pytest.mark.parametrize("name", list(_ESTIMATORS))
def test_finite_inputs_whose_float32_gram_overflows_are_refused(name):
    """X * 1e20 is finite, but its float32 Gram is not (x^2 ~ 1e40): it gave NaN coefficients and
    class 0 for every prediction, with no error."""
    X, y = _data(60, m=8)
    with pytest.raises(ValueError, match=r"Gram matrix of (X|X's projected features) overflowed \(float32 holds "
                                         r"values up to 3.4e38; X's largest magnitude is [0-9.]+e\+20\)\. Scale X"):
        _ESTIMATORS[name]().fit(X * 1e20, y)
    assert _ESTIMATORS[name]().fit(X * 1e4, y).score(X * 1e4, y) > 0.3  # large but representable: fits


@pytest.mark.parametrize("name", list(_PROJECTIONS))
def test_projected_features_past_float32_are_refused(name):
    X, _ = _data(20, m=8)
    with pytest.raises(ValueError, match=r"features overflowed float32 .*Scale X"):
        _PROJECTIONS[name]().fit_transform(X * 1e20)


# --- item 18: errors a user can act on, before any work ---

def test_a_huge_n_components_is_refused_with_the_largest_that_fits():
    """It was accepted, then failed in the allocator asking for 480,000,000,000,000 bytes."""
    X, y = _data(60, m=8)
    proj = GaussianProjection(n_components=10**11).fit(X)  # fit only records shapes
    with pytest.raises(ValueError, match=r"n_components=100,000,000,000 would need about [0-9.]+ TiB .*"
                                         r"largest n_components that fits is about [0-9,]+"):
        proj.transform(X)
    with pytest.raises(ValueError, match=r"StreamingRidgeClassifier\.fit on 60 rows with n_components="
                                         r"100,000,000,000 .*largest n_components that fits is about [0-9,]+"):
        StreamingRidgeClassifier(GaussianProjection(n_components=10**11)).fit(X, y)


def test_largest_n_components_named_does_fit():
    from projector._validation import largest_fitting

    need = lambda k: 4 * 60 * k + 1000  # noqa: E731
    k = largest_fitting(need, 10**9)
    assert need(k) <= 10**9 < need(int(k * 1.01))
    # A need that drops where a caller switches path (random features stream past a share of free memory):
    # the held path fits up to k = 500 only, the streamed one from k = 1,001 to 3,000.
    switched = lambda k: 10 * k if k <= 1000 else k + 2000  # noqa: E731
    assert largest_fitting(switched, 5000) == 3000
    assert largest_fitting(switched, 2900) == 290 and largest_fitting(lambda k: 10**20, 5) == 0


def test_a_kernel_that_cannot_fit_is_refused_before_the_gram():
    X = torch.zeros(800_000, 2)
    y = torch.arange(800_000) % 2
    with pytest.raises(ValueError, match=r"800,100 rows .*TiB .*Fit on at most about [0-9,]+ rows"):
        KernelRidgeClassifier().fit(X, y, X[:100], y[:100])
    with pytest.raises(ValueError, match=r"Leave-one-out selection needs .* pass validation rows"):
        KernelRidgeClassifier().fit(X, y)  # (leave-one-out needs the direct path's eigendecomposition)


@pytest.mark.parametrize("cls", [GaussianProjection, LinearProjection, StructuredProjection])
@pytest.mark.parametrize("param,value,error,message", [
    ("n_components", 2.5, TypeError, "n_components must be an instance of int, not float"),
    ("n_components", "100", TypeError, "n_components must be an instance of int, not str"),
    ("n_components", None, TypeError, "n_components must be an instance of int, not NoneType"),
    ("n_components", True, TypeError, "n_components must be an instance of int, not bool"),
    ("n_components", 0, ValueError, "n_components == 0, must be >= 1"),
    ("seed", None, TypeError, "seed must be an instance of int, not NoneType"),
    ("seed", 1.5, TypeError, "seed must be an instance of int, not float"),
    ("seed", -1, ValueError, "seed == -1, must be >= 0"),
    ("seed", 2**64, ValueError, "seed == 18446744073709551616, must be <="),
])
def test_bad_hyperparameters_are_refused_scikit_learn_style(cls, param, value, error, message):
    X, y = _data(20, m=8)
    params = {"n_components": 16, "seed": 0, param: value}
    with pytest.raises(error, match=re.escape(message)):
        cls(**params).fit(X)
    with pytest.raises(error, match=re.escape(message)):  # also when a classifier fits it
        StreamingRidgeClassifier(cls(**params)).fit(X, y)


@pytest.mark.parametrize("shape,what", [((0, 8), "0 sample"), ((20, 0), "0 feature")])
@pytest.mark.parametrize("name", list(_ESTIMATORS) + list(_PROJECTIONS))
def test_an_empty_or_featureless_tensor_is_refused(name, shape, what):
    X = torch.zeros(shape)
    y = torch.arange(shape[0]) % 2
    make = {**_ESTIMATORS, **_PROJECTIONS}[name]
    with pytest.raises(ValueError, match=rf"Found array with {what}\(s\) \(shape={re.escape(str(shape))}\) "
                                         rf"while a minimum of 1 is required by {name.split('-')[0]}"):
        make().fit(X) if name.endswith("Projection") else make().fit(X, y)
