"""Corner cases of the ridge fits against scikit-learn float64 and brute force as the oracles:
leave-one-out with an intercept when n < d, streaming at a large feature mean."""

import functools

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeClassifier as SkRidgeClassifier

from projector import _factor as F
from projector import _linalg as L
from projector.projections import NoProjection
from projector.ridge import RidgeClassifier
from projector.streaming import StreamingRidgeClassifier


pytestmark = pytest.mark.usefixtures("one_thread")

LOO_ALPHAS = (1e-3, 1e-2, 1.0, 10.0)


def _offset_data(n, d, n_classes, offset, seed=0):
    """Weakly separable classes around a common mean ``offset`` (float32 features)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = rng.normal(scale=0.15, size=(n_classes, d))[y] + rng.normal(size=(n, d)) + offset
    return X.astype(np.float32), y


@functools.lru_cache(maxsize=None)
def _brute_force_loo(n, d, fit_intercept):
    """Leave-one-out accuracy per alpha by refitting scikit-learn (float64) n times."""
    X, y = _offset_data(n, d, 10, 3.0)
    X = X.astype(np.float64)
    scores = {}
    for a in LOO_ALPHAS:
        hits = 0
        for i in range(n):
            keep = np.arange(n) != i
            model = SkRidgeClassifier(alpha=a, fit_intercept=fit_intercept).fit(X[keep], y[keep])
            hits += int(model.predict(X[i:i + 1])[0] == y[i])
        scores[a] = hits / n
    return scores


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("n,d,solver", [(50, 500, "dual"), (120, 40, "primal")])
def test_leave_one_out_matches_brute_force_at_small_alpha(n, d, solver, fit_intercept, dtype):
    """n < d with an intercept: the centred kernel's constant direction (eigenvalue 0, known
    only to float32 rounding) must not enter the leverages -- it gave LOO accuracy 1.0 at
    alpha = 1e-3 where brute force gives 0.46."""
    X, y = _offset_data(n, d, 10, 3.0)
    model = RidgeClassifier(alphas=list(LOO_ALPHAS), fit_intercept=fit_intercept).fit(
        torch.from_numpy(X).to(dtype), y)
    assert model.solver_ == solver and model.cv_ == "loo"
    expected = _brute_force_loo(n, d, fit_intercept)
    for a in LOO_ALPHAS:
        assert model.val_scores_[a] == pytest.approx(expected[a], abs=1.01 / n), a  # at most one sample apart
    assert model.alpha_ == max(LOO_ALPHAS, key=lambda a: (model.val_scores_[a], a))


def test_centred_eigenbasis_excludes_the_constant_direction():
    X, _ = _offset_data(30, 200, 3, 50.0)
    Xt = torch.from_numpy(X)
    K = L.gram([Xt], L._mean([Xt]), rows=True)
    lam, U = F._eigh64_centred(K)
    n = K.shape[0]
    assert lam.shape == (n - 1,) and U.shape == (n, n - 1)
    torch.testing.assert_close(U.sum(0), torch.zeros(n - 1, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(U.T @ U, torch.eye(n - 1, dtype=torch.float64), rtol=0, atol=1e-12)
    C = torch.eye(n, dtype=torch.float64) - 1.0 / n
    CKC = C @ K.double() @ C
    torch.testing.assert_close(U @ torch.diag(lam) @ U.T, CKC, rtol=0, atol=1e-10 * float(CKC.abs().max()))


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("validation", [False, True])
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_streaming_dual_at_a_large_feature_mean_is_float32_accurate(offset, validation):
    """Pass 2 forms W from features centred like pass 1's: with uncentred features, the
    rounding of sum(beta) = 0 times the mean 100 gave a relative error of 1.5e-2 against
    scikit-learn float64; now the streamed fit is the RidgeClassifier fit on the same features
    and both are within float32 rounding of scikit-learn at that magnitude."""
    n, d, nv = 300, 1000, 100
    X, y = _offset_data(n + nv + 200, d, 3, offset, seed=1)
    X_tr, X_val, X_te = X[:n], X[n:n + nv], X[n + nv:]
    Xc = X_tr.astype(np.float64) - X_tr.astype(np.float64).mean(0)
    alpha = 1e-2 * float((Xc**2).sum()) / n
    n_fit = n + nv if validation else n  # with validation: the refit on train + validation
    sk = SkRidgeClassifier(alpha=alpha, solver="cholesky").fit(X[:n_fit].astype(np.float64), y[:n_fit])
    expected = sk.decision_function(X_te.astype(np.float64))
    fit_args = (torch.from_numpy(X_tr), y[:n]) + ((torch.from_numpy(X_val), y[n:n + nv]) if validation else ())
    alphas = [alpha, 1e8 * alpha] if validation else alpha  # the huge alpha scores worse: alpha is chosen
    st = StreamingRidgeClassifier(NoProjection(n_components=d), alphas=alphas, solver="dual").fit(*fit_args)
    rc = RidgeClassifier(alphas=alphas, solver="dual").fit(*fit_args)
    assert st.alpha_ == rc.alpha_ == alpha
    s_st, s_rc = st.decision_function(torch.from_numpy(X_te)), rc.decision_function(torch.from_numpy(X_te))
    # float32 Gram, coefficients and features of magnitude ~offset: ~1e-6 + 6e-8 * offset at best
    tol = 2e-6 + 1e-7 * offset
    assert _rel(s_rc, expected) <= tol
    assert _rel(s_st, expected) <= tol
    assert _rel(s_st, s_rc) <= tol


@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_streaming_fit_leaves_the_callers_features_untouched(solver):
    """NoProjection's features are X itself: the primal pass shifted them in place by the
    pilot mean, corrupting the caller's X and the validation rows it then scored."""
    X, y = _offset_data(120, 40 if solver == "primal" else 200, 3, 5.0, seed=2)
    Xt, Xv = torch.from_numpy(X[:80].copy()), torch.from_numpy(X[80:].copy())
    before = (Xt.clone(), Xv.clone())
    st = StreamingRidgeClassifier(NoProjection(n_components=X.shape[1]), alphas=[1.0, 1e3], solver=solver)
    st.fit(Xt, y[:80], Xv, y[80:])
    torch.testing.assert_close(Xt, before[0], rtol=0, atol=0)
    torch.testing.assert_close(Xv, before[1], rtol=0, atol=0)
    rc = RidgeClassifier(alphas=[1.0, 1e3], solver=solver).fit(Xt, y[:80], Xv, y[80:])
    assert st.val_scores_ == pytest.approx(rc.val_scores_, abs=1.01 / 40)
    torch.testing.assert_close(st.decision_function(Xv), rc.decision_function(Xv), rtol=1e-4, atol=1e-4)
