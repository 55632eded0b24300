"""The exact |XR|^2 kernel and its ridge, and the grid solvers under every dual fit."""

import numpy as np
import pytest
import torch

from projector import _linalg as L
from projector import _solvers as R
from projector.kernel import KernelRidgeClassifier, opu_kernel
from projector.projections import GaussianProjection
from projector.ridge import RidgeClassifier


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerics]


def _data(n, m, n_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (n,), generator=g)
    X = (torch.rand(n, m, generator=g) > 0.5).to(torch.uint8)
    X[:, :6] = (y[:, None] == torch.arange(6)[None, :] % n_classes).to(torch.uint8)  # a class signal
    return X, y


def _feature_map(X):
    """An explicit feature map of the kernel: psi(x) = 2/m [|x|^2, vec(x x^T)], so that
    psi(x) . psi(y) = 4/m^2 (|x|^2 |y|^2 + (x . y)^2)."""
    m = X.shape[1]
    Xf = X.double()
    return (2.0 / m) * torch.cat([(Xf * Xf).sum(1, keepdim=True), (Xf[:, :, None] * Xf[:, None, :]).flatten(1)], 1)


# --- the kernel ---

def test_kernel_is_the_closed_form_and_the_limit_of_gaussian_features():
    X, _ = _data(6, 30)
    K = opu_kernel(X)
    Xf = X.double()
    n2 = (Xf * Xf).sum(1)
    expected = 4 / 30**2 * (n2[:, None] * n2[None, :] + (Xf @ Xf.T) ** 2)
    torch.testing.assert_close(K, expected)
    torch.testing.assert_close(opu_kernel(X[:2], X), expected[:2])
    psi = _feature_map(X)
    torch.testing.assert_close(psi @ psi.T, expected)
    Y = GaussianProjection(40_000, seed=0).fit_transform(X).double()
    assert ((Y @ Y.T / 40_000 - K).norm() / K.norm()) < 0.02


# --- kernel ridge: the same estimator as ridge on the explicit feature map ---

@pytest.mark.parametrize("refit", [True, False])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_kernel_ridge_is_ridge_on_the_feature_map(fit_intercept, refit):
    m = 8
    X, y = _data(50, m)
    Xv, yv = _data(25, m, seed=1)
    Xt, _ = _data(30, m, seed=2)
    kr = KernelRidgeClassifier(fit_intercept=fit_intercept, refit=refit).fit(X, y, Xv, yv)
    rr = RidgeClassifier(fit_intercept=fit_intercept, refit=refit).fit(
        _feature_map(X).float(), y, _feature_map(Xv).float(), yv)
    np.testing.assert_allclose(kr.alphas_, rr.alphas_, rtol=1e-5)
    assert list(kr.val_scores_.values()) == list(rr.val_scores_.values())
    a, b = kr.decision_function(Xt), rr.decision_function(_feature_map(Xt).float())
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
    assert kr.score(Xt, y[:30]) == rr.score(_feature_map(Xt).float(), y[:30])
    n_used = 75 if refit else 50
    assert kr.X_fit_.shape == (n_used, m) and kr.dual_coef_.shape == (n_used, 3)
    assert kr.weight_bytes == n_used * m + kr.dual_coef_.nbytes + kr.intercept_.nbytes


def test_kernel_ridge_two_classes_and_labels():
    X, y = _data(40, 10, n_classes=2)
    Xv, yv = _data(20, 10, n_classes=2, seed=1)
    names = np.array(["cat", "dog"])
    kr = KernelRidgeClassifier().fit(X, names[y.numpy()], Xv, names[yv.numpy()])
    assert kr.decision_function(Xv).shape == (20,)
    assert kr.predict(Xv).dtype.kind == "U"


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_kernel_ridge_without_validation_is_exact_leave_one_out(fit_intercept):
    """No validation rows: alpha by leave-one-out from one eigendecomposition of the centred
    kernel, against brute force (n refits of the single-alpha kernel ridge on n - 1 rows)."""
    X, y = _data(24, 10)
    y[::3] = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(5))  # noisy: alphas differ
    alphas = [1e-4, 1e-2, 1.0, 30.0]
    kr = KernelRidgeClassifier(alphas=alphas, fit_intercept=fit_intercept).fit(X, y)
    assert kr.cv_ == "loo" and kr.grid_solver_ == "eigh"
    for a in alphas:
        hits = 0
        for i in range(len(X)):
            keep = torch.arange(len(X)) != i
            one = KernelRidgeClassifier(alphas=a, fit_intercept=fit_intercept).fit(X[keep], y[keep])
            hits += int(one.predict(X[i:i + 1])[0] == y[i])
        assert kr.val_scores_[a] == pytest.approx(hits / len(X), abs=1.01 / len(X)), a
    assert kr.alpha_ == max(alphas, key=lambda a: (kr.val_scores_[a], a))
    single = KernelRidgeClassifier(alphas=kr.alpha_, fit_intercept=fit_intercept).fit(X, y)
    torch.testing.assert_close(kr.decision_function(X), single.decision_function(X), rtol=1e-5, atol=1e-5)


def test_kernel_ridge_errors():
    X, y = _data(20, 10)
    KernelRidgeClassifier(alphas=1.0).fit(X, y)  # one alpha needs no validation
    with pytest.raises(ValueError, match="both X_val and y_val"):
        KernelRidgeClassifier().fit(X, y, X_val=X)
    with pytest.raises(ValueError, match="grid_solver"):
        KernelRidgeClassifier(grid_solver="svd").fit(X, y, X, y)


# --- the ridge's grid solvers, Gram and validation predictions ---

@pytest.mark.parametrize("shape", [(60, 15), (25, 70)])  # primal, dual
@pytest.mark.parametrize("refit", [True, False])
def test_grid_solvers_agree(shape, refit):
    n, d = shape
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g) + 2.0
    y = torch.randint(0, 3, (n,), generator=g)
    X[:, 0] += y
    Xv = torch.randn(30, d, generator=g) + 2.0
    yv = torch.randint(0, 3, (30,), generator=g)
    fits = [RidgeClassifier(grid_solver=s, refit=refit).fit(X, y, Xv, yv) for s in ("eigh", "cholesky")]
    assert [f.grid_solver_ for f in fits] == ["eigh", "cholesky"]
    assert fits[0].val_scores_ == fits[1].val_scores_
    for a, p in fits[1].val_predictions_.items():
        assert torch.equal(p, fits[0].val_predictions_[a])
        assert (p == yv).double().mean().item() == pytest.approx(fits[1].val_scores_[a])
    torch.testing.assert_close(fits[0].decision_function(Xv), fits[1].decision_function(Xv), rtol=1e-5, atol=1e-5)


def test_grid_solver_choice_by_size_and_device():
    assert R.grid_solver_for(4000, 13, "cpu") == "cholesky"  # eigh ~ 100 batched solves at n = 4,000 on CPU
    assert R.grid_solver_for(1000, 13, "cpu") == "cholesky"  # ~ 25 at n = 1,000
    assert R.grid_solver_for(400, 13, "cpu") == "eigh"  # ~ 10 at n = 400
    assert R.grid_solver_for(1000, 30, "cpu") == "eigh"
    assert R.grid_solver_for(4000, 13, "cuda") == "eigh"
    assert R.grid_solver_for(4000, 13, "cpu", "eigh") == "eigh"
    with pytest.raises(ValueError, match="grid_solver"):
        R.grid_solver_for(10, 3, "cpu", "qr")


def test_mixed_precision_cholesky_falls_back_to_float64_when_ill_conditioned():
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(80, 80, generator=g, dtype=torch.float64))
    S = (U * torch.logspace(0, -12, 80, dtype=torch.float64)) @ U.T  # condition 1e12
    B = torch.randn(80, 2, generator=g, dtype=torch.float64)
    solver = R._ShiftedSolver(S, "cholesky")
    for alpha in (1e-9, 1e-2):
        X = solver.solve(B, alpha)
        ref = torch.linalg.solve(S + alpha * torch.eye(80, dtype=torch.float64), B)
        torch.testing.assert_close(X, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert solver.n_float64 >= 1  # 1e-9: float32 cannot factor it (condition 1e9), float64 did


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shifted_solves_reach_the_grams_precision_and_use_cg_only_where_it_provably_converges(dtype):
    g = torch.Generator().manual_seed(1)
    A = torch.rand(300, 500, generator=g, dtype=torch.float64)
    A -= A.mean(0)
    S64 = A @ A.T  # rank 299: a centred Gram, singular
    S = S64.to(dtype)
    B = torch.randn(300, 3, generator=g, dtype=torch.float64)
    solver = R._ShiftedSolver(S, "cholesky")
    s_norm = float(torch.linalg.vector_norm(S64))
    alphas = s_norm * np.logspace(-8, 4, 13)
    for a in alphas:
        X = solver.solve(B, float(a))
        Sa = S.double() + a * torch.eye(300, dtype=torch.float64)  # the system as given, in float64
        backward = float((B - Sa @ X).norm()) / (float(torch.linalg.matrix_norm(Sa)) * float(X.norm()) + float(B.norm()))
        # float32's unit roundoff for a float32 Gram; near float64 accuracy for a float64 one
        assert backward <= (2.0**-24 if dtype == torch.float32 else 1e-13)
    # CG only where 1 + ||S||_F / alpha makes 6 iterations enough: alpha >= ~ 10 ||S||_F
    assert 1 <= solver.n_cg <= int((alphas >= s_norm).sum())
    assert solver.n_cg + solver.n_float64 < len(alphas)  # the small alphas were factored

@pytest.mark.parametrize("rows", [True, False])
def test_gram_by_syrk_is_the_plain_product(rows):
    g = torch.Generator().manual_seed(0)
    X = torch.rand(37, 23, generator=g)
    mu = X.double().mean(0)
    Xc = (X.double() - mu)
    expected = Xc @ Xc.T if rows else Xc.T @ Xc
    torch.testing.assert_close(L.gram([X[:20], X[20:]], mu, rows=rows).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("float64_copy", [True, False])
@pytest.mark.parametrize("arrays", ["numpy", "torch"])
def test_grid_solved_in_batches_reaches_the_same_precision_with_few_products(float64_copy, arrays):
    """solve_all: the CG alphas iterate together and the float32 Cholesky solutions are
    checked by one product with S for all; every solution still meets the backward error.
    ``arrays="torch"`` runs the device-generic (CUDA) loop on CPU tensors."""
    g = torch.Generator().manual_seed(2)
    A = torch.rand(300, 500, generator=g, dtype=torch.float64)
    A -= A.mean(0)
    S = (A @ A.T).to(torch.float32)
    B = torch.randn(300, 3, generator=g, dtype=torch.float64)
    s_norm = float(torch.linalg.vector_norm(S.double()))
    alphas = s_norm * np.logspace(-12, 4, 17)  # from float64-only to CG-only
    solver = R._ShiftedSolver(S, "cholesky", float64_copy=float64_copy)
    if arrays == "torch":  # what a CUDA Gram gets: the same loop on tensors
        solver._np = False
        solver._S64 = None if solver._S64 is None else torch.from_numpy(solver._S64)
    products = []
    matvec = solver._matvec
    solver._matvec = lambda X, a: (products.append(X.shape[1]), matvec(X, a))[1]
    Xs = solver.solve_all(B, alphas)
    for a, X in zip(alphas, Xs):
        Sa = S.double() + a * torch.eye(300, dtype=torch.float64)
        backward = float((B - Sa @ X).norm()) / (float(torch.linalg.matrix_norm(Sa)) * float(X.norm()) + float(B.norm()))
        assert backward <= 2.0**-24
    counts = solver.counts()
    assert counts["cg"] >= 2 and counts["cholesky32"] >= 2 and sum(counts.values()) == len(alphas)
    # CG: one product per iteration for all its alphas; the float32 Cholesky solutions: one check for all
    assert counts["cg"] * 3 in products and counts["cholesky32"] * 3 in products
    assert len(products) <= R._CG_MAX_ITERS + 3


def test_grid_solved_in_batches_falls_back_per_alpha():
    """An alpha that float32 cannot factor goes to float64 without holding up the others."""
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(80, 80, generator=g, dtype=torch.float64))
    S = (U * torch.logspace(0, -12, 80, dtype=torch.float64)) @ U.T  # condition 1e12
    B = torch.randn(80, 2, generator=g, dtype=torch.float64)
    alphas = [1e-9, 1e-2, 1e3]
    solver = R._ShiftedSolver(S, "cholesky")
    factored = []
    mixed = solver._mixed
    solver._mixed = lambda B, a: (factored.append(a), mixed(B, a))[1]
    solver._factor_solve = lambda B, a: pytest.fail("a float64 Gram needs refinement: no unrefined first try")
    for alpha, X in zip(alphas, solver.solve_all(B, alphas)):
        ref = torch.linalg.solve(S + alpha * torch.eye(80, dtype=torch.float64), B)
        torch.testing.assert_close(X, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert solver.counts() == {"cg": 1, "cholesky32": 1, "cholesky64": 1}  # 1e-9: condition 1e9, beyond float32
    assert factored == [1e-9, 1e-2]  # one factorisation attempt each, then float64 for 1e-9


def test_residual_products_read_a_contiguous_float64_gram():
    """The train block of a larger float64 Gram is a strided view: BLAS would copy it at every
    residual product, so the solver keeps one contiguous float64 copy (when small)."""
    g = torch.Generator().manual_seed(3)
    A = torch.rand(50, 80, generator=g, dtype=torch.float64)
    K = A @ A.T
    solver = R._ShiftedSolver(K[:40, :40], "cholesky")
    assert solver._S64.flags.c_contiguous and solver._S64.shape == (40, 40)
    assert np.array_equal(solver._S64, K[:40, :40].numpy())
    assert np.shares_memory(R._ShiftedSolver(K, "cholesky")._S64, K.numpy())  # contiguous: no copy
