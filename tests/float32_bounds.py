"""The float32 error bound of a ridge fit's scores, computed from the data: the tolerance of the
tests that compare projector's ridge fits with scikit-learn in float64.

What is rounded. A fit forms the Gram of ``A`` (the training rows centred with their mean in
float64 and rounded once to float32, or as they are without an intercept) in float32 --
``G = A^T A`` (primal, sums of p = n terms) or ``K = A A^T`` (dual, sums of p = d terms) -- and
solves in float64; the coefficients are stored in float32, and a prediction is a float32 product
of the test rows ``T`` (centred on the training mean) with them.

The bound, first order in u = 2**-24:

* each Gram entry is off by at most ``u (sqrt(p) (|A|^T |A|)_ij + 2 sqrt(sum_k a_ki^2 a_kj^2))``
  (a sum of p rounded products, Higham & Mary's probabilistic bound ``sqrt(p) u``, and the
  rounding of the entries of A). These errors, independent, move the scores by
  ``T H dG W`` (primal, H = (G + alpha I)^-1) or ``T A^T (K + alpha I)^-1 dK beta`` (dual): the
  column norms of the left operator and the row norms of the right one weigh each entry's
  error -- the conditioning *of the scores*, from the data, not the matrix's whole condition
  number (a direction the test rows do not see does not count).
* the stored float32 coefficients and the prediction's float32 product of d terms:
  ``sqrt(d) u || |T| |W| ||_F``.

Each term is multiplied by ``LAM = 6``: Higham & Mary's bound holds with probability at least
``1 - 2 exp(-LAM**2 / 2)`` (~3e-8) per sum. The result is relative to ``||S||_F``, the
reference scores. A computation that loses more than this -- an uncentred Gram or prediction at
a large mean, features rounded to float16 -- is rejected by it (the negative controls).
"""

from __future__ import annotations

import numpy as np

U32 = 2.0**-24
LAM = 6.0


def score_error_bound(X, y, X_test, alpha: float, fit_intercept: bool, centre=None) -> float:
    """Relative (Frobenius) error bound of float32-Gram ridge scores on ``X_test`` against the
    exact ones. X: (n, d), X_test: (n_test, d), y: (n,) labels (one-vs-all {-1, +1} targets).
    ``centre``: the point the prediction's rows are centred on (default: the training mean)."""
    X = np.asarray(X, np.float64)
    Xt = np.asarray(X_test, np.float64)
    n, d = X.shape
    classes = np.unique(y)
    Y = np.where(np.asarray(y)[:, None] == classes[None, :], 1.0, -1.0)
    if len(classes) == 2:
        Y = Y[:, 1:]
    mu = X.mean(0) if fit_intercept else np.zeros(d)
    A, y_mean = X - mu, (Y.mean(0) if fit_intercept else 0.0)
    Tm = Xt - mu  # what the scores depend on through the solution
    T = Xt - (X.mean(0) if centre is None else np.asarray(centre, np.float64))  # what predict multiplies
    primal = n >= d
    M = A.T if primal else A  # G = M M^T, sums of p terms
    p = M.shape[1]
    absM, sqM = np.abs(M), M * M
    sigma = U32 * (np.sqrt(p) * (absM @ absM.T) + 2 * np.sqrt(sqM @ sqM.T))  # per-entry Gram error
    Ginv = np.linalg.inv(M @ M.T + alpha * np.eye(M.shape[0]))
    if primal:
        W = Ginv @ (A.T @ (Y - y_mean))
        left, right = Tm @ Ginv, W
    else:
        beta = Ginv @ (Y - y_mean)
        W = A.T @ beta
        left, right = Tm @ A.T @ Ginv, beta
    t2, w2 = (left**2).sum(0), (right**2).sum(1)
    gram = np.sqrt(2 * t2 @ (sigma**2) @ w2)
    predict = np.sqrt(d) * U32 * np.linalg.norm(np.abs(T) @ np.abs(W))
    S = Tm @ W + y_mean
    return float(LAM * (gram + predict) / np.linalg.norm(S) + 4 * U32)


def rel_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
