import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import RidgeClassifier as SkRidgeClassifier

from projector.ridge import RidgeClassifier, auto_alphas

SHAPES = {"primal": (60, 15), "dual": (25, 70)}  # (n_samples, n_features)


def _data(n, d, n_classes, seed=0, n_test=40):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=1.5, size=(n_classes, d))
    y = rng.integers(0, n_classes, n + n_test)
    X = (centers[y] + rng.normal(size=(n + n_test, d)) + 3.0).astype(np.float32)  # off-centre
    return X[:n], y[:n], X[n:], y[n:]


def _t(X):
    return torch.from_numpy(X)


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_matches_sklearn_at_fixed_alpha(shape, n_classes, fit_intercept):
    n, d = SHAPES[shape]
    X, y, Xte, _ = _data(n, d, n_classes, seed=n_classes)
    alpha = 3.0
    ours = RidgeClassifier(alphas=alpha, fit_intercept=fit_intercept).fit(_t(X), torch.from_numpy(y))
    sk = SkRidgeClassifier(alpha=alpha, fit_intercept=fit_intercept).fit(X.astype(np.float64), y)
    assert ours.solver_ == shape and ours.alpha_ == alpha and ours.val_scores_ is None
    c = 1 if n_classes == 2 else n_classes
    assert ours.coef_.shape == (c, d) and ours.intercept_.shape == (c,)
    np.testing.assert_allclose(ours.coef_.numpy(), sk.coef_.reshape(c, d), atol=1e-4 * np.abs(sk.coef_).max())
    scores = ours.decision_function(_t(Xte)).numpy()
    sk_scores = sk.decision_function(Xte.astype(np.float64))
    assert scores.shape == sk_scores.shape
    np.testing.assert_allclose(scores, sk_scores, atol=1e-4 * np.abs(sk_scores).max())
    np.testing.assert_array_equal(ours.predict(_t(Xte)).numpy(), sk.predict(Xte.astype(np.float64)))
    np.testing.assert_allclose(ours.intercept_.numpy(), np.broadcast_to(sk.intercept_, (c,)), atol=1e-4)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_primal_and_dual_agree(shape):
    n, d = SHAPES[shape]
    X, y, Xte, _ = _data(n, d, 3)
    a = RidgeClassifier(alphas=1.0, solver="primal").fit(_t(X), y).decision_function(_t(Xte))
    b = RidgeClassifier(alphas=1.0, solver="dual").fit(_t(X), y).decision_function(_t(Xte))
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * a.abs().max().item())


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_alpha_on_validation_matches_brute_force_sklearn(shape, n_classes):
    n, d = SHAPES[shape]
    X, y, Xv, yv = _data(n, d, n_classes, seed=7, n_test=30)
    # noisy labels so that alphas differ in accuracy
    rng = np.random.default_rng(1)
    flip = rng.random(len(yv)) < 0.2
    yv = np.where(flip, rng.integers(0, n_classes, len(yv)), yv)
    alphas = [1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4]
    ours = RidgeClassifier(alphas=alphas).fit(_t(X), y, _t(Xv), yv)

    X64, Xv64 = X.astype(np.float64), Xv.astype(np.float64)
    brute = {a: SkRidgeClassifier(alpha=a).fit(X64, y).score(Xv64, yv) for a in alphas}
    assert ours.cv_ == "validation"
    assert list(ours.val_scores_) == alphas
    np.testing.assert_allclose(list(ours.val_scores_.values()), list(brute.values()))
    best = max(brute.values())
    assert ours.alpha_ == max(a for a in alphas if brute[a] == best)  # ties -> larger alpha
    # final model: refit on train + validation at alpha_
    sk = SkRidgeClassifier(alpha=ours.alpha_).fit(np.vstack([X64, Xv64]), np.concatenate([y, yv]))
    Xte = _data(n, d, n_classes, seed=8)[2]
    np.testing.assert_allclose(
        ours.decision_function(_t(Xte)).numpy(), sk.decision_function(Xte.astype(np.float64)), atol=1e-3
    )


def test_no_refit_keeps_train_fit():
    X, y, Xv, yv = _data(*SHAPES["primal"], 3)
    ours = RidgeClassifier(alphas=[0.1, 10.0], refit=False).fit(_t(X), y, _t(Xv), yv)
    sk = SkRidgeClassifier(alpha=ours.alpha_).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(ours.coef_.numpy(), sk.coef_, atol=1e-4)


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_leave_one_out_matches_brute_force(shape, fit_intercept):
    n, d = SHAPES[shape]
    rng = np.random.default_rng(3)
    X = (rng.normal(size=(n, d)) + 1.0).astype(np.float32)
    y = rng.integers(0, 3, n)
    X[:, 0] += y  # weak signal: accuracy varies with alpha
    alphas = [1e-2, 1.0, 30.0, 1e3]
    ours = RidgeClassifier(alphas=alphas, fit_intercept=fit_intercept).fit(_t(X), y)
    assert ours.cv_ == "loo"
    X64 = X.astype(np.float64)
    for a in alphas:
        keep = np.ones(n, bool)
        correct = 0
        for i in range(n):
            keep[:] = True
            keep[i] = False
            sk = SkRidgeClassifier(alpha=a, fit_intercept=fit_intercept).fit(X64[keep], y[keep])
            correct += sk.predict(X64[i:i + 1])[0] == y[i]
        assert ours.val_scores_[a] == pytest.approx(correct / n)


def test_auto_alphas_relative_to_mean_eigenvalue():
    X, y, Xv, yv = _data(*SHAPES["dual"], 3)
    ours = RidgeClassifier().fit(_t(X), y, _t(Xv), yv)
    Xc = X.astype(np.float64) - X.mean(0)
    np.testing.assert_allclose(ours.alphas_, np.logspace(-6, 6, 13) * (Xc**2).sum() / len(X), rtol=1e-5)
    np.testing.assert_allclose(auto_alphas(2.0), np.logspace(-6, 6, 13) * 2.0)
    assert len(ours.val_scores_) == 13 and ours.alpha_ in ours.val_scores_
    # scale-free: scaling the features scales the grid, the chosen index does not move
    scaled = RidgeClassifier().fit(_t(X * 1000), y, _t(Xv * 1000), yv)
    assert np.argmax(scaled.alphas_ == scaled.alpha_) == np.argmax(ours.alphas_ == ours.alpha_)


def test_labels_keep_their_type():
    X, y, Xte, yte = _data(*SHAPES["primal"], 3)
    names = np.array(["cat", "dog", "eel"])
    clf = RidgeClassifier(alphas=1.0).fit(_t(X), names[y])
    assert clf.predict(_t(Xte)).dtype.kind == "U"
    assert clf.score(_t(Xte), names[yte]) == pytest.approx(np.mean(clf.predict(_t(Xte)) == names[yte]))
    labels = torch.tensor([10, 20, 30])[torch.from_numpy(y)]
    clf_t = RidgeClassifier(alphas=1.0).fit(_t(X), labels)
    pred = clf_t.predict(_t(Xte))
    assert isinstance(pred, torch.Tensor) and set(pred.tolist()) <= {10, 20, 30}


def test_wide_dual_never_forms_d_by_d():
    # d x d float32 would be 40 GB: only the (n, n) kernel may be formed
    n, d = 12, 100_000
    g = torch.Generator().manual_seed(0)
    X = (torch.rand(n, d, generator=g) > 0.5).to(torch.uint8)
    y = torch.arange(n) % 2
    clf = RidgeClassifier(alphas=1.0).fit(X, y)
    assert clf.solver_ == "dual" and clf.coef_.shape == (1, d)
    assert clf.weight_bytes == d * 4 + 4
    assert clf.score(X, y) == 1.0  # n << d: the training set is interpolated


def test_errors_speak_to_the_user():
    X, y, _, _ = _data(*SHAPES["primal"], 3)
    clf = RidgeClassifier()
    with pytest.raises(NotFittedError, match="fit"):
        clf.predict(_t(X))
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.fit(_t(X), np.zeros(len(X)))
    with pytest.raises(ValueError, match="both X_val and y_val"):
        clf.fit(_t(X), y, X_val=_t(X))
    with pytest.raises(ValueError, match="positive"):
        RidgeClassifier(alphas=[1.0, -1.0]).fit(_t(X), y)
    with pytest.raises(ValueError, match="solver"):
        RidgeClassifier(solver="svd").fit(_t(X), y)
    with pytest.raises(ValueError, match="not among the training classes"):
        RidgeClassifier(alphas=[1.0, 2.0]).fit(_t(X), y, _t(X[:5]), np.full(5, 9))
    clf = RidgeClassifier(alphas=1.0).fit(_t(X), y)
    with pytest.raises(ValueError, match="fitted on 15 features"):
        clf.predict(_t(X[:, :3]))
