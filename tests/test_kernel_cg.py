"""The exact kernel by preconditioned conjugate gradients (issue 22, items 1, 2 and 6).

At sizes where the direct path (a float64 kernel, a factorisation per alpha) runs, the iterative
path (one float32 kernel, PCG for every alpha and class) must choose the same alpha (or its
neighbour, within one validation image), agree on >= 99.9 % of the test predictions, and keep
every decision value within the bound its residual gives: ``(K + alpha I)`` has every eigenvalue
>= alpha, so with r the residual against the float32 kernel K32 and E = K32 - K (its rounding),
``(K + alpha I)(beta_cg - beta) = -r - E beta_cg`` and, for a test row with centred kernel row
``kc``, ``|f_cg - f| = |kc . (beta_cg - beta)| <= ||kc|| (||r|| + ||E||_F ||beta_cg||) / alpha``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from projector._linalg import gram
from projector.kernel import KernelRidgeClassifier, _centre_with_train, opu_kernel

N_CLASSES = 10


def _planted(n: int, m: int, seed: int, signal: float = 0.05):
    """Binary rows: signs of Gaussian features with a weak class signal planted (accuracy well
    below 1, so that the alpha grid matters), labels 0..9."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N_CLASSES, m, generator=torch.Generator().manual_seed(1234))
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    return ((torch.randn(n, m, generator=g) + signal * means[y]) > 0).to(torch.uint8), y


@pytest.fixture(scope="module")
def problem():
    X, y = _planted(1_500, 1_024, 0)
    Xv, yv = _planted(500, 1_024, 1)
    Xt, yt = _planted(2_000, 1_024, 2)
    return X, y, Xv, yv, Xt, yt


def _fits(problem, refit):
    X, y, Xv, yv, *_ = problem
    direct = KernelRidgeClassifier(grid_solver="cholesky", refit=refit).fit(X, y, Xv, yv)
    cg = KernelRidgeClassifier(grid_solver="cg", refit=refit).fit(X, y, Xv, yv)
    return direct, cg


@pytest.mark.parametrize("refit", [False, True], ids=["no-refit", "refit"])
def test_cg_chooses_the_direct_alpha_and_agrees_on_test_predictions(problem, refit):
    *_, Xt, yt = problem
    direct, cg = _fits(problem, refit)
    assert direct.solver_info_["solver"] == "direct" and cg.solver_info_["solver"] == "pcg"
    info = cg.solver_info_
    assert info["iterations"] > 0 and info["max_relative_residual"] <= info["tol"]
    assert set(info["alphas"]) == {f"{a:.6g}" for a in cg.alphas_}
    if refit:
        assert info["refit"]["max_relative_residual"] <= info["tol"]
    np.testing.assert_allclose(cg.alphas_, direct.alphas_, rtol=1e-6)
    i_d, i_c = (int(np.argmin(np.abs(direct.alphas_ - m.alpha_))) for m in (direct, cg))
    nv = len(problem[3])
    assert i_c == i_d or (abs(i_c - i_d) == 1 and
                          abs(cg.val_scores_[cg.alpha_] - direct.val_scores_[direct.alpha_]) <= 1 / nv + 1e-12)
    agree = float((cg.predict(Xt) == direct.predict(Xt)).float().mean())
    assert agree >= 0.999
    assert 0.15 < direct.score(Xt, yt) < 0.95  # above chance (0.1), short of trivial: alpha matters


@pytest.mark.parametrize("relative_alpha", [1e-6, 1e-2], ids=["smallest-alpha", "middle-alpha"])
def test_cg_decision_function_within_the_residual_bound(problem, relative_alpha):
    from projector.kernel import _kernel32_

    X, y, Xv, yv, Xt, _ = (t[:1_000] for t in problem)
    n, m = X.shape
    grid = KernelRidgeClassifier(grid_solver="cholesky", refit=False).fit(X, y, Xv, yv).alphas_
    alpha = float(grid[0] * relative_alpha / 1e-6)  # the default grid starts at 1e-6 x mean eigenvalue
    direct = KernelRidgeClassifier(alphas=alpha, grid_solver="cholesky", refit=False).fit(X, y, Xv, yv)
    cg = KernelRidgeClassifier(alphas=alpha, grid_solver="cg", refit=False).fit(X, y, Xv, yv)
    # the float64 kernel the direct path solves and the float32 one conjugate gradients solve
    K64, a = _centre_with_train(opu_kernel(torch.cat([X, Xv])), n)
    K32, _ = _kernel32_(gram([X, Xv], None, rows=True), n, m, True)
    E = float(torch.linalg.matrix_norm(K32[:n, :n].double() - K64[:n, :n]))
    # the residual against K32, per class, as conjugate gradients left it
    beta = torch.as_tensor(cg.dual_coef_).double()
    Y = -torch.ones(n, N_CLASSES, dtype=torch.float64)
    Y[torch.arange(n), y] = 1.0
    Yc = Y - Y.mean(0)
    R = Yc - K32[:n, :n].double() @ beta - alpha * beta
    rel = float((R.norm(dim=0) / Yc.norm(dim=0)).max())
    assert rel <= cg.solver_info_["alphas"][f"{alpha:.6g}"]["relative_residual"] * (1 + 1e-6) + 1e-12
    # centred kernel rows of the test points (train mean), their norms
    Kt = opu_kernel(Xt, X)
    at = Kt.mean(1, keepdim=True)
    kc = Kt - at - a[:n][None, :] + a[:n].mean()
    bound = kc.norm(dim=1, keepdim=True) * (R.norm(dim=0) + E * beta.norm(dim=0)) / alpha
    f_cg, f_d = (torch.as_tensor(mdl.decision_function(Xt)).double() for mdl in (cg, direct))
    slack = 4 * 2.0**-24 * f_d.abs().max()  # the float32 decision values' own rounding
    diff = (f_cg - f_d).abs()
    assert bool((diff <= bound + slack).all()), float((diff - bound).max())
    assert float(diff.max()) > 0  # two solvers, not the same one twice


def test_leave_one_out_is_refused_for_cg_and_still_works_directly(problem):
    X, y, *_ = problem
    with pytest.raises(ValueError, match="Leave-one-out .* pass validation rows"):
        KernelRidgeClassifier(grid_solver="cg").fit(X[:300], y[:300])
    loo = KernelRidgeClassifier().fit(X[:300], y[:300])  # small: the direct path, exact LOO
    assert loo.cv_ == "loo" and loo.solver_info_["solver"] == "direct"
    one = KernelRidgeClassifier(grid_solver="cg", alphas=1.0).fit(X[:300], y[:300])  # nothing to select
    assert one.solver_info_["solver"] == "pcg" and one.alpha_ == 1.0


def test_auto_takes_cg_where_the_direct_path_does_not_fit(problem, monkeypatch):
    import projector._random_matrix as rm

    import projector._pcg as pcg

    X, y, Xv, yv, *_ = problem
    # The direct path's matrices past what is free, the conjugate gradients' within it.
    free = pcg.iterative_bytes(800, 600) + (1 << 20)
    monkeypatch.setattr(rm, "available_memory_bytes", lambda device: free)
    monkeypatch.setattr(pcg, "direct_bytes", lambda n_fit, n_train: free + 1)
    clf = KernelRidgeClassifier().fit(X[:600], y[:600], Xv[:200], yv[:200])
    assert clf.solver_info_["solver"] == "pcg" and clf.grid_solver_ == "cg"
    monkeypatch.undo()
    assert KernelRidgeClassifier().fit(X[:600], y[:600], Xv[:200], yv[:200]).solver_info_["solver"] == "direct"


def test_ridge_grid_by_cg_matches_cholesky(problem):
    from projector.ridge import RidgeClassifier

    X, y, Xv, yv, Xt, _ = (t[:400] for t in problem)
    fits = [RidgeClassifier(grid_solver=g, refit=False).fit(X.float(), y, Xv.float(), yv) for g in ("cholesky", "cg")]
    assert fits[1].grid_solver_ == "cg" and fits[0].alpha_ == fits[1].alpha_
    assert float((fits[0].predict(Xt.float()) == fits[1].predict(Xt.float())).float().mean()) >= 0.999


def test_full_cifar10_kernel_is_planned_within_16_gb_and_a_refusal_names_the_size_and_flag():
    from benchmarks.harness.cells import CellError, make_cell, plan_memory
    from benchmarks.cli import build_parser
    from benchmarks.cli.run import _CELL_ARGS, _method_options

    args = build_parser().parse_args(["run", "--dataset", "cifar10", "--data-dir", "/nonexistent",
                                      "--train-per-class", "0", "--test-per-class", "0", "--val-fraction", "0.1",
                                      "--image-size", "96", "--projector", "kernel", "--device", "cpu"])
    cell = make_cell({**{k: getattr(args, k) for k in _CELL_ARGS}, **_method_options(args)})
    need = plan_memory(cell, torch.device("cpu"), free=10**13)
    assert need <= 16 * 10**9
    with pytest.raises(CellError, match=r"use --train-per-class \d+ or fewer") as err:
        plan_memory(cell, torch.device("cpu"), free=8 << 30)
    per_class = int(str(err.value).split("--train-per-class ")[1].split()[0])
    args.train_per_class = per_class
    smaller = make_cell({**{k: getattr(args, k) for k in _CELL_ARGS}, **_method_options(args)})
    assert plan_memory(smaller, torch.device("cpu"), free=8 << 30) <= 8 << 30  # the size it names fits


@pytest.mark.slow
def test_cg_matches_direct_at_9000_rows():
    X, y = _planted(7_200, 1_024, 10)
    Xv, yv = _planted(1_800, 1_024, 11)
    Xt, _ = _planted(2_000, 1_024, 12)
    direct = KernelRidgeClassifier(grid_solver="cholesky", refit=False).fit(X, y, Xv, yv)
    cg = KernelRidgeClassifier(grid_solver="cg", refit=False).fit(X, y, Xv, yv)
    i_d, i_c = (int(np.argmin(np.abs(direct.alphas_ - m.alpha_))) for m in (direct, cg))
    assert i_c == i_d or (abs(i_c - i_d) == 1 and
                          abs(cg.val_scores_[cg.alpha_] - direct.val_scores_[direct.alpha_]) <= 1 / 1_800 + 1e-12)
    assert float((cg.predict(Xt) == direct.predict(Xt)).float().mean()) >= 0.999


def test_an_alpha_below_what_float32_resolves_stops_early_and_says_so():
    # An ill-conditioned float32 system: at alpha 1e-12 the float32 products cannot reach the tolerance, so
    # the column stalls; it must give up within the stall window, not run to max_iter (on all of CIFAR-10 it
    # ran 1,161 iterations, most of the fit), and its alpha must read as not converged.
    from projector import _pcg

    g = torch.Generator().manual_seed(0)
    A = torch.randn(300, 40, generator=g, dtype=torch.float64)
    S = (A @ A.T + 1e-9 * torch.eye(300, dtype=torch.float64)).to(torch.float32)  # rank 40, then ~1e-9
    B = torch.randn(300, 2, generator=g, dtype=torch.float64)
    grid = _pcg.PCGGrid(S, rank=8, max_iter=2_000)
    grid.solve_all(B, [1e-12, 1.0])
    info = grid.info["alphas"]
    assert info["1"]["converged"] and info["1"]["relative_residual"] <= 1e-5
    assert not info["1e-12"]["converged"]
    assert info["1e-12"]["iterations"] < 4 * _pcg._STALL_ITERS  # gave up, did not run to max_iter


def test_an_unconverged_alpha_is_left_out_of_the_choice_and_named(problem):
    # alpha 1e-12 stalls (its relative residual ends not finite) yet its unsolved system scores
    # higher on validation than alpha 1e3 here: it must not be chosen, and the row must say why.
    X, y, Xv, yv, *_ = problem
    m = KernelRidgeClassifier(grid_solver="cg", alphas=(1e-12, 1e3), refit=False).fit(X, y, Xv, yv)
    assert m.val_scores_[1e-12] > m.val_scores_[1e3]  # the unsolved alpha would win on its score
    assert m.alpha_ == 1e3
    assert list(m.diverged_) == [1e-12] and "did not converge" in m.diverged_[1e-12]
    with pytest.raises(FloatingPointError, match="converged for no alpha.*use larger alphas"):
        KernelRidgeClassifier(grid_solver="cg", alphas=(1e-12,), refit=False).fit(X, y, Xv, yv)
    with pytest.raises(FloatingPointError, match="the fit at alpha 1e-12.*did not converge"):
        KernelRidgeClassifier(grid_solver="cg", alphas=(1e-12,), refit=False).fit(X, y)
