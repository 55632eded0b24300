"""The ridge fits as pure functions: from data (or a Gram) and an alpha grid to coefficients.

Semantics of ``sklearn.linear_model.RidgeClassifier`` (one-vs-all on labels binarised to
{-1, +1}, X and Y centred for an unpenalised intercept). The estimators of ``ridge``,
``kernel`` and ``streaming`` choose a fit from ``FITS`` and only shape its result.

* ``"validation"``: the grid scored on validation rows, then (refit) train + validation;
  ``primal`` on ``G = Xc^T Xc`` (d, d), ``dual`` on ``K = Z Z^T`` over the train and validation
  rows stacked (``dual_fit``: one Gram serves selection and refit, no (d, d) matrix);
* ``"loo"``: no validation data, exact leave-one-out over the grid from one eigenbasis;
* ``"single"``: one alpha, nothing to choose: one Cholesky solve.

Each takes ``alphas_for(mean_eigenvalue) -> grid`` (the grid may be relative to the Gram's
trace / n) and returns a dict with ``W`` (d, c) float64, ``b`` (c,) float64, ``alpha``,
``alphas``, ``scores`` (accuracy per alpha, or None), ``predictions``, ``grid_solver``,
``solve_counts`` and ``solver``.
"""

from __future__ import annotations

import numpy as np
import torch

from projector._factor import _eigh64, _eigh64_centred, _solve_psd
from projector._linalg import (
    _centre_rows_cols_,
    _col_means64,
    _iter_rows,
    _matmul64,
    _mean,
    _rows_per_chunk,
    _x_dot,
    _xt_dot,
    gram,
)
from projector._labels import _accuracy, _predicted_index
from projector._solvers import _ShiftedSolver, grid_solver_for

__all__ = ["FITS", "dual_fit", "dual_loo", "loo_scores"]


def _best(scores, alphas) -> int:
    """Index of the best score; ties go to the larger alpha."""
    return max(range(len(alphas)), key=lambda i: (scores[i], alphas[i]))


def _centring(parts, Y, fit_intercept):
    """(mu (d,) float64 or None, y_mean (c,) float64) of the stacked parts and labels."""
    if not fit_intercept:
        return None, torch.zeros(Y.shape[1], dtype=torch.float64, device=Y.device)
    return _mean(parts), Y.mean(0)


def _intercept(y_mean, mu, W):
    return y_mean - (mu @ W if mu is not None else 0.0)


# --- one alpha ---

def single_fit(parts, Y, alpha, solver, fit_intercept=True) -> dict:
    """Fit on the stacked parts at one alpha (a Cholesky solve, no eigendecomposition)."""
    mu, y_mean = _centring(parts, Y, fit_intercept)
    Yc = Y - y_mean
    if solver == "primal":
        W = _solve_psd(gram(parts, mu, rows=False), _xt_dot(parts, mu, Yc), alpha)
    else:
        W = _xt_dot(parts, mu, _solve_psd(gram(parts, mu, rows=True), Yc, alpha))
    return {"W": W, "b": _intercept(y_mean, mu, W), "alpha": float(alpha), "alphas": np.array([float(alpha)]),
            "scores": None, "predictions": None, "grid_solver": None, "solve_counts": None, "solver": solver}


# --- validation rows ---

def primal_validation_fit(X, Y, X_val, Yv, yv_idx, alphas_for, grid_solver="auto", refit=True,
                          fit_intercept=True) -> dict:
    """The grid on ``G = Xc^T Xc`` scored on (X_val, yv_idx), then (refit) train + validation."""
    n, d = X.shape
    mu, y_mean = _centring([X], Y, fit_intercept)
    G = gram([X], mu, rows=False)
    alphas = alphas_for(float(G.diagonal().sum(dtype=torch.float64)) / n)
    B = _xt_dot([X], mu, Y - y_mean)  # (d, c): Xc^T Yc
    method = grid_solver_for(d, len(alphas), X.device, grid_solver)
    shifted = _ShiftedSolver(G, method)
    weights = {}
    if method == "eigh":  # validation rows in the eigenbasis, once
        Zv = _x_dot(X_val, mu, shifted.U.to(torch.float32), torch.float32).double()
        W0 = shifted.U.T @ B
        S_all = [Zv @ (W0 / (shifted.lam + a)[:, None]) for a in alphas]
    else:
        weights = dict(zip(map(float, alphas), shifted.solve_all(B, alphas)))
        # every alpha's validation scores in one pass over X_val
        c = B.shape[1]
        S_cat = _x_dot(X_val, mu, torch.cat(list(weights.values()), 1))
        S_all = [S_cat[:, i * c:(i + 1) * c] for i in range(len(alphas))]
    scores = [_accuracy(S + y_mean, yv_idx) for S in S_all]
    preds = [_predicted_index(S + y_mean) for S in S_all]
    alpha = float(alphas[_best(scores, alphas)])
    if refit:
        W, b = _refit_primal(X_val, Y, Yv, G, B, mu, alpha, fit_intercept)
    else:
        W = weights.get(alpha)
        if W is None:
            W = shifted.solve(B, alpha)
        b = _intercept(y_mean, mu, W)
    return {"W": W, "b": b, "alpha": alpha, "alphas": alphas, "scores": scores, "predictions": preds,
            "grid_solver": method, "solve_counts": shifted.counts(), "solver": "primal"}


def _refit_primal(X_val, Y, Yv, G_tr, B_tr, mu, alpha, fit_intercept):
    """Train + validation at alpha from the training statistics and one pass over the
    validation rows. With z = x - mu (train mean) and delta = mu_all - mu:
    sum_all (x - mu_all)(x - mu_all)^T = G_tr + Zv^T Zv - N delta delta^T and, since
    the train z sum to zero and the centred labels of all rows too,
    sum_all (x - mu_all)(y - y_all)^T = B_tr + Zv^T (Yv - y_all)."""
    n, nv = Y.shape[0], X_val.shape[0]
    N = n + nv
    G = G_tr.to(torch.float64) + gram([X_val], mu, rows=False).to(torch.float64)
    if fit_intercept:
        mu_all = (n * mu + nv * _mean([X_val])) / N
        delta = mu_all - mu
        G.sub_(N * torch.outer(delta, delta))
        y_all = torch.cat([Y, Yv]).mean(0)
    else:
        mu_all, y_all = None, torch.zeros(Y.shape[1], dtype=torch.float64, device=X_val.device)
    W = _solve_psd(G, B_tr + _xt_dot([X_val], mu, Yv - y_all), alpha)
    return W, _intercept(y_all, mu_all, W)


def dual_validation_fit(X, Y, X_val, Yv, yv_idx, alphas_for, grid_solver="auto", refit=True,
                        fit_intercept=True) -> dict:
    """The grid on the (N, N) Gram of train + validation rows centred with the training mean:
    it serves the train kernel, the validation cross-kernel and the refit (``dual_fit``)."""
    n = X.shape[0]
    mu, _ = _centring([X], Y, fit_intercept)
    Kz = gram([X, X_val], mu, rows=True)
    alphas = alphas_for(float(Kz[:n, :n].diagonal().sum(dtype=torch.float64)) / n)
    fit = dual_fit(Kz, torch.cat([Y, Yv]), n, yv_idx, alphas, grid_solver, refit,
                   fit_intercept=fit_intercept, overwrite_gram=True)
    del Kz
    parts = [X, X_val] if fit["n_used"] > n else [X]
    W = _xt_dot(parts, mu, fit["beta"])  # beta sums to 0: any centring gives W
    return {"W": W, "b": _intercept(fit["offset"], mu, W), "alpha": fit["alpha"], "alphas": alphas,
            "scores": fit["scores"], "predictions": fit["predictions"], "grid_solver": fit["grid_solver"],
            "solve_counts": fit["solve_counts"], "solver": "dual"}


def dual_fit(Kz: torch.Tensor, Y: torch.Tensor, n_train: int, yv_idx: torch.Tensor | None,
             alphas: np.ndarray, grid_solver: str = "auto", refit: bool = True,
             fit_intercept: bool = True, overwrite_gram: bool = False) -> dict:
    """Kernel ridge (one-vs-all, unpenalised intercept), alpha chosen on validation rows.

    Kz: (N, N) Gram of the features of the train rows then the validation rows, all
    centred with the *training* mean (uncentred without intercept), float32 or float64;
    Y: (N, c) binarised labels; yv_idx: (N - n_train,) class indices of the validation
    rows, None without validation (then the first alpha is used). With
    ``overwrite_gram=True`` the refit centres and factors a copy of Kz made in Kz's own
    memory: no second (N, N) matrix (Kz is lost).

    Returns a dict: ``alpha``; ``scores`` (validation accuracy per alpha, or None);
    ``beta`` (n_used, c) float64 and ``offset`` (c,) such that the decision function of
    a sample whose Gram row against the n_used fitted rows is ``kz`` (same centring) is
    ``kz @ beta + offset``; with an intercept ``beta`` sums to zero over rows, so
    ``W = Z_used^T beta`` for any centring of the features ``Z``; ``n_used`` (n_train,
    or N after the refit on train + validation); ``grid_solver`` ("cg": Kz may be a float32
    Gram too large for any factorisation, solved by ``projector._pcg``; the refit too);
    ``solver_info`` (conjugate gradients: iterations and final relative residuals, of the grid
    and of the refit; None otherwise); ``n_float64`` (alphas
    whose mixed-precision Cholesky fell back to float64); ``predictions`` (per alpha,
    the validation rows' predicted class indices, or None).
    """
    N = Kz.shape[0]
    Y = Y.to(torch.float64)
    Ytr = Y[:n_train]
    zero = torch.zeros(Y.shape[1], dtype=torch.float64, device=Y.device)
    y_mean = Ytr.mean(0) if fit_intercept else zero
    K_tt = Kz[:n_train, :n_train]
    has_val = yv_idx is not None and N > n_train
    method = grid_solver_for(n_train, len(alphas) if has_val else 1, Kz.device, grid_solver)
    solver = _ShiftedSolver(K_tt, method)
    scores, betas, preds, unconverged = None, {}, None, {}
    if has_val:
        alpha, scores, betas, preds, unconverged = _dual_grid(solver, Kz, Ytr - y_mean, y_mean, yv_idx, alphas,
                                                              n_train)
    else:
        alpha = float(alphas[0])
    counts = solver.counts()
    n_float64 = solver.n_float64
    solver_info = getattr(solver, "info", None)  # conjugate gradients: iterations and residuals
    if has_val and refit:
        del solver, betas  # their buffers, before the (N, N) refit
        beta, offset, refit_info = _dual_refit(Kz, Y, alpha, method, fit_intercept, overwrite_gram, zero)
        if method == "cg":
            solver_info = {**solver_info, "refit": refit_info}
        n_used = N
    else:
        beta = betas.get(alpha)
        if beta is None:
            beta = solver.solve(Ytr - y_mean, alpha)
            _require_converged(solver, alpha, "the fit")
        offset = y_mean - _matmul64(K_tt, beta).mean(0) if fit_intercept else zero  # ~y_mean
        n_used = n_train
    return {"alpha": alpha, "scores": scores, "beta": beta, "offset": offset, "n_used": n_used,
            "grid_solver": method, "n_float64": n_float64, "solve_counts": counts,
            "predictions": preds, "solver_info": solver_info, "unconverged": unconverged}


def _dual_refit(Kz, Y, alpha: float, method: str, fit_intercept: bool, overwrite_gram: bool, zero):
    """The refit on train + validation at the chosen alpha: (beta, offset, the solver's info)."""
    y_all = Y.mean(0) if fit_intercept else zero
    # offset = y_all - mean_j (Kz beta)_j = y_all - colmeans(Kz) . beta, read before Kz is centred
    a = _col_means64(Kz) if fit_intercept else None
    K_all = Kz if overwrite_gram else Kz.clone()
    if fit_intercept:
        _centre_rows_cols_(K_all, a)  # train + validation centred with their own mean
    refit_solver = _ShiftedSolver(K_all, "cg" if method == "cg" else "cholesky", float64_copy=False)
    beta = refit_solver.solve(Y - y_all, alpha)
    _require_converged(refit_solver, alpha, "the refit on train + validation")
    info = getattr(refit_solver, "info", None)
    del K_all, refit_solver
    return beta, (y_all - a @ beta if fit_intercept else zero), info


def _dual_grid(solver, Kz, Yc, y_mean, yv_idx, alphas, n_train: int):
    """Every alpha solved on the training rows and scored on the validation rows (one pass over the
    cross-kernel); the best validation accuracy chosen among the alphas whose solve converged.
    Returns (alpha, scores, betas, predictions, unconverged)."""
    betas = dict(zip(map(float, alphas), solver.solve_all(Yc, alphas)))
    c = Yc.shape[1]
    S_all = _matmul64(Kz[n_train:, :n_train], torch.cat(list(betas.values()), 1)) + y_mean.repeat(len(alphas))
    scores = [_accuracy(S_all[:, i * c:(i + 1) * c], yv_idx) for i in range(len(alphas))]
    preds = [_predicted_index(S_all[:, i * c:(i + 1) * c]) for i in range(len(alphas))]
    del S_all
    unconverged = _unconverged(solver, alphas)
    if len(unconverged) == len(alphas):
        raise FloatingPointError(
            "kernel ridge: conjugate gradients converged for no alpha of the grid ("
            + "; ".join(f"{a:g}: {why}" for a, why in unconverged.items())
            + "); use larger alphas, or fewer training rows for the direct solver.")
    best = max((i for i in range(len(alphas)) if float(alphas[i]) not in unconverged),
               key=lambda i: (scores[i], alphas[i]))
    return float(alphas[best]), scores, betas, preds, unconverged


def _unconverged(solver, alphas) -> dict:
    """alpha -> why, for the alphas whose conjugate-gradient solution did not reach its
    tolerance (an alpha below what the float32 Gram resolves stalls): left out of the choice,
    their validation score is that of an unsolved system. Empty for the direct solvers."""
    info = getattr(solver, "info", None)
    if not info:
        return {}
    out = {}
    for a in alphas:
        rec = info["alphas"].get(f"{float(a):.6g}")
        if rec is not None and not rec["converged"]:
            out[float(a)] = (f"conjugate gradients did not converge (relative residual "
                             f"{rec['relative_residual']:.3g} after {rec['iterations']} iterations)")
    return out


def _require_converged(solver, alpha: float, what: str) -> None:
    why = _unconverged(solver, [alpha]).get(float(alpha))
    if why:
        raise FloatingPointError(f"kernel ridge, {what} at alpha {alpha:g}: {why}; use a larger alpha.")


# --- leave-one-out ---

def loo_scores(lam, chunks, W0, Yc, y_mean, y_idx, alphas, fit_intercept, dual) -> list:
    """Exact leave-one-out accuracy for every alpha.

    Ridge with an unpenalised intercept is a linear smoother with hat matrix
    ``H = 11^T/n + Kc (Kc + alpha I)^-1``; the left-out prediction of sample i is
    ``y_i - (y_i - yhat_i) / (1 - H_ii)``. ``chunks`` yields ``(r0, Q)``, the coordinates of
    rows r0.. in the eigenbasis (primal: ``Xc V``; dual: ``U diag(lam)``), so that
    ``yhat = Q (W0 / (lam + alpha)) + ymean`` and ``H_ii = 1/n + sum_j Q_ij^2 / (lam_j + alpha)``
    (primal) or ``1/n + sum_j U_ij^2 lam_j / (lam_j + alpha)`` (dual); the 1/n term only with
    an intercept. With an intercept the dual eigenbasis spans the complement of the constant
    vector exactly (``_eigh64_centred``): 11^T/n is the constant direction's whole share of H.
    """
    n = Yc.shape[0]
    inv = [1.0 / (lam + a) for a in alphas]
    correct = torch.zeros(len(alphas), dtype=torch.float64, device=lam.device)
    if dual:
        safe = torch.where(lam > 0, lam, torch.ones_like(lam))
        hnum = lambda Q: torch.where(lam > 0, Q * Q / safe, torch.zeros_like(Q))  # noqa: E731  U^2 lam
    else:
        hnum = lambda Q: Q * Q  # noqa: E731  h_i = sum_j Q_ij^2 / (lam_j + a)
    for r0, Q in chunks:
        rows = slice(r0, r0 + Q.shape[0])
        Hn, Yr = hnum(Q), Yc[rows]
        for i, w in enumerate(inv):
            yhat = Q @ (W0 * w[:, None])  # centred fit
            h = Hn @ w + (1.0 / n if fit_intercept else 0.0)
            loo = Yr - (Yr - yhat) / (1.0 - h)[:, None] + y_mean
            correct[i] += _accuracy(loo, y_idx[rows]) * Q.shape[0]
    return (correct / n).tolist()


def primal_loo(G, B, row_chunks, Yc, y_mean, y_idx, alphas_for, n, fit_intercept=True) -> dict:
    """Leave-one-out on ``G = Zc^T Zc`` (d, d) and ``B = Zc^T Yc``; ``row_chunks()`` yields
    ``(r0, Zc_chunk)`` float32 (the centred rows, in order). Returns W, alpha, alphas, scores."""
    alphas = alphas_for(float(G.diagonal().sum(dtype=torch.float64)) / n)
    lam, V = _eigh64(G)
    W0 = V.T @ B.to(torch.float64)  # (d, c)
    scores = None
    alpha = float(alphas[0])
    if len(alphas) > 1:
        V32 = V.to(torch.float32)
        chunks = ((r0, Zc.matmul(V32).double()) for r0, Zc in row_chunks())
        scores = loo_scores(lam, chunks, W0, Yc, y_mean, y_idx, alphas, fit_intercept, dual=False)
        alpha = float(alphas[_best(scores, alphas)])
    return {"W": V @ (W0 / (lam + alpha)[:, None]), "alpha": alpha, "alphas": alphas, "scores": scores}


def dual_loo(K, Yc, y_mean, y_idx, alphas_for, fit_intercept=True) -> dict:
    """Leave-one-out on a kernel K (n, n) of the training rows, centred with their mean when
    ``fit_intercept`` (uncentred without). Returns ``beta`` (n, c) with the decision function
    ``kc(x) @ beta + y_mean`` (kc: the kernel row of x, centred likewise), alpha, alphas, scores."""
    n = K.shape[0]
    alphas = alphas_for(float(K.diagonal().sum(dtype=torch.float64)) / n)
    # with an intercept, the constant direction split off exactly (not eigh's rounded "zero")
    lam, U = _eigh64_centred(K) if fit_intercept else _eigh64(K)
    W0 = U.T @ Yc  # (n, c)
    scores = None
    alpha = float(alphas[0])
    if len(alphas) > 1:
        step = _rows_per_chunk(U.shape[1], 8)
        chunks = ((r0, U[r0:r0 + step] * lam) for r0 in range(0, n, step))
        scores = loo_scores(lam, chunks, W0, Yc, y_mean, y_idx, alphas, fit_intercept, dual=True)
        alpha = float(alphas[_best(scores, alphas)])
    return {"beta": U @ (W0 / (lam + alpha)[:, None]), "alpha": alpha, "alphas": alphas, "scores": scores}


def loo_fit(X, Y, y_idx, alphas_for, solver, fit_intercept=True) -> dict:
    """No validation data: one eigendecomposition, exact leave-one-out over the grid."""
    n = X.shape[0]
    mu, y_mean = _centring([X], Y, fit_intercept)
    Yc = Y - y_mean
    if solver == "primal":
        G = gram([X], mu, rows=False)
        fit = primal_loo(G, _xt_dot([X], mu, Yc), lambda: _iter_rows([X], mu, torch.float32),
                         Yc, y_mean, y_idx, alphas_for, n, fit_intercept)
        del G
        W = fit["W"]
    else:
        K = gram([X], mu, rows=True)
        fit = dual_loo(K, Yc, y_mean, y_idx, alphas_for, fit_intercept)
        del K
        W = _xt_dot([X], mu, fit["beta"])
    many = fit["scores"] is not None
    return {"W": W, "b": _intercept(y_mean, mu, W), "alpha": fit["alpha"], "alphas": fit["alphas"],
            "scores": fit["scores"], "predictions": None, "grid_solver": "eigh" if many else None,
            "solve_counts": None, "solver": solver}


# The fits of ``RidgeClassifier`` by how alpha is chosen, then by solver.
FITS = {
    "validation": {"primal": primal_validation_fit, "dual": dual_validation_fit},
    "loo": {"primal": loo_fit, "dual": loo_fit},
    "single": {"primal": single_fit, "dual": single_fit},
}
