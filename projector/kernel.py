"""The exact kernel of ``|X R|^2`` random features (k = infinity), and kernel ridge with it.

For R complex with ``Re R, Im R`` i.i.d. ``N(0, s2)``, s2 = 1/m, the features
``Y = |X R|^2`` of GaussianProjection (and, up to O(1/d), StructuredProjection) have, per
feature, the expected product (Isserlis; the constant is pinned by a Monte-Carlo test in
``tests/test_projections.py``)

    k(x, y) = E[Y_x . Y_y] / n_components = 4 s2**2 (|x|^2 |y|^2 + (x . y)**2)

For binary x: ``K = 4 s2**2 (r r^T + G o G)`` with ``G = X X^T`` and ``r = diag G``.
As k grows, ridge on k random features tends to kernel ridge with ``k * K`` -- the same
estimator, since the alpha grid is relative to the Gram's mean eigenvalue. Kernel ridge
with K is therefore the k = infinity end of the random-features method, at the cost of
one ``(N, N)`` Gram of the encoded features (``O(N^2 m)``, no projection at all) and of
keeping the training rows to predict (the "model" is the training set and the dual
coefficients).

``G`` of binary rows is formed in float32 with BLAS ``ssyrk``: its entries are integers
below 2**24, hence exact; ``K`` is then built, centred and solved in float64.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from projector.encoders import _check_2d, _check_fitted, _check_n_features
from projector.ridge import (
    _GRID_SOLVERS,
    _ClassifierBase,
    _binarize,
    _encode_labels,
    _label_indices,
    _rows_per_chunk,
    dual_fit,
    gram,
)

__all__ = ["opu_kernel", "KernelRidgeClassifier"]


def opu_kernel(A: torch.Tensor, B: torch.Tensor | None = None) -> torch.Tensor:
    """A: (n_a, m), B: (n_b, m) (default A) -> K: (n_a, n_b) float64,
    ``K_ij = 4 / m**2 * (|a_i|^2 |b_j|^2 + (a_i . b_j)**2)``: E[Y_a . Y_b] / k of |XR|^2
    features with s2 = 1/m."""
    m = A.shape[1]
    if B is None:
        G = gram([A], None, rows=True).to(torch.float64)
        ra = rb = G.diagonal().clone()
    else:
        G = _cross(A, B)
        ra, rb = _sq_norms(A), _sq_norms(B)
    return _from_gram(G, ra, rb, m)


def _from_gram(G: torch.Tensor, ra: torch.Tensor, rb: torch.Tensor, m: int) -> torch.Tensor:
    """4/m^2 (ra rb^T + G o G), in place in G (float64)."""
    G.square_().add_(torch.outer(ra, rb))
    return G.mul_(4.0 / m**2)


def _cross(A, B) -> torch.Tensor:
    """A B^T in float64, through float32 GEMMs over row chunks of A (exact for binary rows)."""
    Bf = B.to(torch.float32)
    step = _rows_per_chunk(A.shape[1], 4)
    return torch.cat([(A[r0:r0 + step].to(torch.float32) @ Bf.T).double() for r0 in range(0, A.shape[0], step)]) \
        if A.shape[0] else torch.zeros(0, B.shape[0], dtype=torch.float64, device=A.device)


def _sq_norms(A) -> torch.Tensor:
    step = _rows_per_chunk(A.shape[1], 8)
    return torch.cat([A[r0:r0 + step].to(torch.float64).square().sum(1) for r0 in range(0, A.shape[0], step)])


def _centre_with_train(K: torch.Tensor, n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre an (N, N) kernel in feature space with the mean of its first n_train rows, in
    place: ``K_ij - a_i - a_j + c`` with ``a_i = mean_{j < n_train} K_ij``, ``c = mean(a[:n_train])``.
    Returns (K, a)."""
    a = K[:, :n_train].mean(1)
    c = a[:n_train].mean()
    K.sub_(a[:, None]).sub_(a[None, :]).add_(c)
    return K, a


class KernelRidgeClassifier(_ClassifierBase):
    """One-vs-all kernel ridge with the exact ``|XR|^2`` kernel (random features with k = infinity).

    Same semantics as ``RidgeClassifier`` on the features ``Y = |X R|^2`` in the limit of
    infinitely many features: labels binarised to {-1, +1}, centring in feature space
    for the (unpenalised) intercept, alpha chosen on validation data from a grid
    relative to the mean eigenvalue of the centred train kernel, then a refit on train
    + validation. One Gram of the train and validation rows serves all of it.

    X: (n_samples, n_features), binary uint8 (the encoder's output) or float.

    Parameters
    ----------
    alphas : float, sequence, or None for ``auto_alphas`` (13 values relative to the mean
        eigenvalue of the centred train kernel).
    fit_intercept, refit, grid_solver : as for RidgeClassifier.

    Attributes
    ----------
    X_fit_ : the rows the final model uses (train, or train + validation), as given.
    dual_coef_ : (n_used, n_classes) float64, (n_used, 1) for two classes.
    intercept_ : (n_classes,) float64.
    classes_, alpha_, alphas_, val_scores_, cv_, grid_solver_, n_features_in_ : as for RidgeClassifier.
    """

    def __init__(
        self,
        alphas: float | Sequence[float] | None = None,
        fit_intercept: bool = True,
        refit: bool = True,
        grid_solver: str = "auto",
    ):
        self.alphas = alphas
        self.fit_intercept = fit_intercept
        self.refit = refit
        self.grid_solver = grid_solver

    def fit(self, X, y, X_val=None, y_val=None) -> "KernelRidgeClassifier":
        """X: (n_samples, n_features), y: (n_samples,); optional X_val, y_val for the alpha grid."""
        X = _check_2d(X, "KernelRidgeClassifier.fit")
        if self.grid_solver not in _GRID_SOLVERS:
            raise ValueError(f"grid_solver={self.grid_solver!r} is not one of {_GRID_SOLVERS}.")
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val, or neither.")
        n_alphas = None if self.alphas is None else np.size(self.alphas)
        if X_val is None and n_alphas != 1:
            raise ValueError(
                "KernelRidgeClassifier chooses alpha on validation data: pass X_val and y_val, "
                "or a single alpha (e.g. alphas=1e-3 * the kernel's mean eigenvalue)."
            )
        n, m = X.shape
        self.n_features_in_ = m
        self.classes_, y_idx = _encode_labels(y, n, X.device)
        if len(self.classes_) < 2:
            raise ValueError(f"KernelRidgeClassifier needs at least 2 classes in y, got {len(self.classes_)}.")
        Y = _binarize(y_idx, len(self.classes_))
        parts, yv_idx = [X], None
        if X_val is not None:
            X_val = _check_2d(X_val, "KernelRidgeClassifier.fit (X_val)")
            _check_n_features(self, X_val)
            yv_idx = _label_indices(self.classes_, y_val, X_val.shape[0], X.device)
            parts.append(X_val)
            Y = torch.cat([Y, _binarize(yv_idx, len(self.classes_))])

        G = gram(parts, None, rows=True).to(torch.float64)  # exact for binary rows
        r = G.diagonal().clone()
        K = _from_gram(G, r, r, m)
        del G
        if self.fit_intercept:
            K, a = _centre_with_train(K, n)
        else:
            a = torch.zeros(K.shape[0], dtype=torch.float64, device=K.device)
        self.alphas_ = alphas = self._resolve_alphas(float(K[:n, :n].diagonal().sum()) / n)
        fit = dual_fit(K, Y, n, yv_idx, alphas, self.grid_solver, self.refit, fit_intercept=self.fit_intercept,
                       overwrite_gram=True)
        n_used = fit["n_used"]
        beta = fit["beta"]
        # f(x) = kz(x) beta + offset, kz centred with the train mean; sum(beta) = 0 leaves
        # K(x, X_used) beta - a_used . beta + offset with the uncentred kernel.
        self.dual_coef_ = beta
        self.intercept_ = fit["offset"] - (a[:n_used] @ beta if self.fit_intercept else 0.0)
        self.X_fit_ = X if n_used == n else torch.cat(parts)
        self.alpha_ = fit["alpha"]
        self.grid_solver_ = fit["grid_solver"]
        self.val_scores_ = None if fit["scores"] is None else {
            float(al): float(s) for al, s in zip(alphas, fit["scores"])}
        self.cv_ = "validation" if fit["scores"] is not None else None
        return self

    def decision_function(self, X) -> torch.Tensor:
        """X: (n_samples, n_features) -> scores (n_samples, n_classes) float32, (n_samples,) for two classes."""
        X = _check_2d(X, "KernelRidgeClassifier.decision_function")
        _check_fitted(self, "dual_coef_")
        _check_n_features(self, X)
        Xf = self.X_fit_.to(torch.float32)  # once, not per chunk
        r_fit = _sq_norms(Xf)
        step = max(1, _rows_per_chunk(Xf.shape[0], 8))
        out = []
        for r0 in range(0, X.shape[0], step):
            xr = X[r0:r0 + step]
            K = _from_gram(_cross(xr, Xf), _sq_norms(xr), r_fit, self.n_features_in_)
            out.append(K @ self.dual_coef_ + self.intercept_)
        S = torch.cat(out).float() if out else torch.zeros(0, self.dual_coef_.shape[1], device=X.device)
        return S[:, 0] if S.shape[1] == 1 else S

    @property
    def weight_bytes(self) -> int:
        """Bytes of what predict needs: the kept rows, the dual coefficients and the intercept."""
        _check_fitted(self, "dual_coef_")
        return int(self.X_fit_.numel() * self.X_fit_.element_size() + self.dual_coef_.nbytes
                   + self.intercept_.nbytes)

    @property
    def param_count(self) -> int:
        """Fitted numbers: dual coefficients and intercept (the kept rows are data, counted in weight_bytes)."""
        _check_fitted(self, "dual_coef_")
        return int(self.dual_coef_.numel() + self.intercept_.numel())
