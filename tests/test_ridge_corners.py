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

from float32_bounds import rel_error, score_error_bound


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerics]

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


_rel = rel_error


def _streaming_offset_case(offset, validation):
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
    bound = score_error_bound(X[:n_fit], y[:n_fit], X_te, alpha, fit_intercept=True)
    return fit_args, alphas, alpha, X_te, expected, bound


@pytest.mark.parametrize("validation", [False, True])
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_streaming_dual_at_a_large_feature_mean_is_float32_accurate(offset, validation):
    """Pass 2 forms W from features centred like pass 1's: with uncentred features, the
    rounding of sum(beta) = 0 times the mean 100 gave a relative error of 1.5e-2 against
    scikit-learn float64; now the streamed fit is the RidgeClassifier fit on the same features
    and both are within the float32 error bound of the computation (tests/float32_bounds.py:
    float32 rounding times the conditioning of the scores, from the data) at that magnitude."""
    fit_args, alphas, alpha, X_te, expected, bound = _streaming_offset_case(offset, validation)
    st = StreamingRidgeClassifier(NoProjection(n_components=X_te.shape[1]), alphas=alphas, solver="dual")
    st.fit(*fit_args)
    rc = RidgeClassifier(alphas=alphas, solver="dual").fit(*fit_args)
    assert st.alpha_ == rc.alpha_ == alpha
    s_st, s_rc = st.decision_function(torch.from_numpy(X_te)), rc.decision_function(torch.from_numpy(X_te))
    assert _rel(s_rc, expected) <= bound
    assert _rel(s_st, expected) <= bound
    assert _rel(s_st, s_rc) <= 2 * bound


@pytest.mark.parametrize("offset,low", [(0.0, torch.bfloat16), (100.0, torch.float16)])
def test_streaming_offset_bound_rejects_a_less_accurate_computation(offset, low):
    """The negative control of the test above: the same bound rejects the same streamed fit on
    features rounded to bfloat16 (unit roundoff 2**-8 instead of 2**-24) or, at a mean of 100,
    to float16 (2**-11)."""
    fit_args, alphas, alpha, X_te, expected, bound = _streaming_offset_case(offset, False)
    X_tr, y_tr = fit_args
    st = StreamingRidgeClassifier(NoProjection(), alphas=alphas, solver="dual").fit(X_tr.to(low).float(), y_tr)
    scores = st.decision_function(torch.from_numpy(X_te).to(low).float())
    assert _rel(scores, expected) > bound


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


# --- the adversarial grid against scikit-learn float64 ---

def _grid_data(n, d, n_classes, offset, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n + 50)
    X = rng.normal(scale=0.5, size=(n_classes, d))[y] + rng.normal(size=(n + 50, d)) + offset
    return X[:n], y[:n], X[n:]


_GRID = [(offset, shape, alpha_rel, fit_intercept)
         for offset in (0.0, 1e2, 1e4)
         for shape in ((60, 200), (200, 60), (120, 110))  # n < d, n > d, near-square
         for alpha_rel in (1e-4, 1.0)
         for fit_intercept in (True, False)]


def _grid_param(offset, shape, alpha_rel, fit_intercept):
    return pytest.param(offset, shape, alpha_rel, fit_intercept,
                        id=f"offset{offset:g}-{shape[0]}x{shape[1]}-alpha{alpha_rel:g}-intercept{fit_intercept}")


def _grid_case(offset, shape, alpha_rel, fit_intercept, n_classes, dtype):
    n, d = shape
    X, y, Xt = _grid_data(n, d, n_classes, offset)
    X, Xt = X.astype(dtype), Xt.astype(dtype)

    def reference(X, Xt):
        X64 = X.astype(np.float64)
        Xc = X64 - X64.mean(0) if fit_intercept else X64
        alpha = alpha_rel * float((Xc**2).sum()) / n
        sk = SkRidgeClassifier(alpha=alpha, fit_intercept=fit_intercept, solver="cholesky").fit(X64, y)
        return alpha, sk.decision_function(Xt.astype(np.float64))

    return X, y, Xt, reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [2, 10])
@pytest.mark.parametrize("offset,shape,alpha_rel,fit_intercept", [_grid_param(*p) for p in _GRID])
def test_decision_function_matches_sklearn_float64_on_the_adversarial_grid(offset, shape, alpha_rel,
                                                                          fit_intercept, n_classes, dtype):
    """Feature offsets up to 1e4, n < d, n > d and near-square, alpha from 1e-4 to 1 x the mean
    eigenvalue, with and without intercept, 2 and 10 classes, float32 and float64 input: the
    ridge and the streamed ridge (NoProjection: its features are X as float32) against
    scikit-learn in float64, within the float32 error bound of the computation
    (tests/float32_bounds.py: float32 rounding times the conditioning of the scores, computed
    from the data; without an intercept at a large mean that conditioning is the problem's)."""
    X, y, Xt, reference = _grid_case(offset, shape, alpha_rel, fit_intercept, n_classes, dtype)
    alpha, expected = reference(X, Xt)
    # the float32 rows the fit sees (float64 input is centred in float64 first: no worse)
    X32, Xt32 = X.astype(np.float32), Xt.astype(np.float32)
    tol = score_error_bound(X32, y, Xt32, alpha, fit_intercept)
    rc = RidgeClassifier(alphas=alpha, fit_intercept=fit_intercept).fit(torch.from_numpy(X), torch.from_numpy(y))
    assert _rel(rc.decision_function(torch.from_numpy(Xt)), expected) <= tol
    # the streamed ridge's features are float32 by definition: scikit-learn on the same features
    alpha32, expected32 = reference(X32, Xt32)
    st = StreamingRidgeClassifier(NoProjection(), alphas=alpha32, fit_intercept=fit_intercept)
    st.fit(torch.from_numpy(X), torch.from_numpy(y))
    # the streamed primal fit without an intercept predicts uncentred (its centre is 0)
    centre = np.zeros(shape[1]) if not fit_intercept and st.solver_ == "primal" else None
    tol32 = score_error_bound(X32, y, Xt32, alpha32, fit_intercept, centre=centre)
    assert _rel(st.decision_function(torch.from_numpy(Xt)), expected32) <= tol32


@pytest.mark.parametrize("control,offset,shape,alpha_rel", [
    ("float16 features", 0.0, (60, 200), 1.0),
    ("float16 features", 0.0, (200, 60), 1e-4),
    ("float16 features", 1e2, (120, 110), 1.0),
    ("uncentred prediction", 1e4, (200, 60), 1.0),
    ("uncentred prediction", 1e4, (60, 200), 1e-4),
])
def test_adversarial_grid_bound_rejects_a_less_accurate_computation(control, offset, shape, alpha_rel):
    """The negative control of the grid test: its bound rejects the same fit on features rounded
    to float16, and the scores formed uncentred in float32 (``X @ coef_.T + intercept_``, what
    predict did before: at a mean of 1e4 it cancels ~1e4 |coef| against the intercept)."""
    X, y, Xt, reference = _grid_case(offset, shape, alpha_rel, True, 10, np.float32)
    alpha, expected = reference(X, Xt)
    tol = score_error_bound(X, y, Xt, alpha, True)
    if control == "float16 features":
        rc = RidgeClassifier(alphas=alpha).fit(torch.from_numpy(X).half().float(), torch.from_numpy(y))
        scores = rc.decision_function(torch.from_numpy(Xt).half().float())
    else:
        rc = RidgeClassifier(alphas=alpha).fit(torch.from_numpy(X), torch.from_numpy(y))
        scores = torch.from_numpy(Xt) @ torch.as_tensor(rc.coef_).T + torch.as_tensor(rc.intercept_)
    assert _rel(scores, expected) > tol
