"""One-vs-all ridge classifier in torch, with the alpha grid solved once per shape.

Semantics follow ``sklearn.linear_model.RidgeClassifier``: labels are binarised to
{-1, +1} (``LabelBinarizer(neg_label=-1, pos_label=1)``, a single column for two
classes), X and Y are centred for the intercept, and
``coef = argmin ||Yc - Xc W||^2 + alpha ||W||^2``.

How it is solved
----------------
The Gram is formed in float32 on X's device, in bounded chunks (never a centred copy
of X) -- on CPU by BLAS ``ssyrk``, a symmetric rank-k update at half the flops of a
general matmul, in tiles past 2**31 elements (scipy's BLAS has 32-bit indices) -- and
solved in float64:

* ``"primal"`` (n_features <= n_samples): ``G = Xc^T Xc``, (d, d);
* ``"dual"`` (n_samples < n_features): ``K = Z Z^T`` over the train and validation rows
  stacked, centred with the training mean, (N, N); its train block is the centred train
  kernel, its off-diagonal block the validation cross-kernel, and double-centring it
  gives the kernel of the refit on train + validation: one Gram serves selection and
  refit. No (d, d) matrix is ever formed.

The alpha grid on validation data is solved by one of two *grid solvers*, chosen from
the grid's size and the device (``grid_solver="auto"``):

* ``"eigh"``: one float64 eigendecomposition, then every alpha is a diagonal rescaling;
* ``"cholesky"``: one Cholesky factorisation per alpha, in float32 with iterative
  refinement on float64 residuals, in float64 when that does not converge; alphas so
  large that conjugate gradients provably converge in a few products with the Gram
  (alpha above ~10 ||K||_F) skip the factorisation.

Each solution is accepted on its true float64 residual when its normwise backward error
is within the precision the Gram was formed in (float32's unit roundoff for the Gram of
float32 features, 1e-13 for a float64 kernel): solving further would only resolve the
Gram's own rounding. The grid is solved in batches: the conjugate-gradient alphas iterate
together, one product with the Gram per iteration for all of them, and the float32
Cholesky solutions of all other alphas are checked by one float64 product; only an alpha
that fails its check is refined or solved again in float64. On CPU this loop runs on
numpy arrays with scipy's BLAS and LAPACK for every product and factorisation: no torch
(OpenMP) operation and no numpy matmul (numpy ships a second OpenBLAS) in between. Thread
pools of different libraries contending for 2 cores made the loop 20 % to 2x slower.

On 2 CPU cores a float64 ``eigh`` costs as much as ~25 batched per-alpha solves at
n = 1,000 and ~54 at n = 2,000 (LAPACK's tridiagonalisation is memory bound), so a
13-value grid is solved by ``eigh`` up to n ~ 500 and by Cholesky above; on CUDA
``eigh`` is cheap and wins from ~6 alphas on.
Leave-one-out selection (no validation data) needs the eigenvectors and uses ``eigh``.

Layout: the estimator below is thin; the fits are pure functions in ``projector._fits``
(``FITS``, by how alpha is chosen and by solver), the grid solvers in ``projector._solvers``
(``GRID_SOLVERS``), the factorisations in ``projector._factor`` and the chunked products in
``projector._linalg``; ``dual_fit`` and ``gram`` are shared with the exact-kernel ridge
(``projector.kernel``) and the streaming fit (``projector.streaming``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from projector._base import _SOLVERS, _ClassifierBase, auto_alphas
from projector._fits import FITS, dual_fit
from projector._linalg import _mean, _rows_mm, gram
from projector._solvers import _GRID_SOLVER_CHOICES as _GRID_SOLVERS, grid_solver_for
from projector._validation import _check_fitted, check_finite_fit, fitted

__all__ = ["RidgeClassifier", "auto_alphas", "dual_fit", "gram", "grid_solver_for"]


class RidgeClassifier(_ClassifierBase):
    """Ridge one-vs-all classifier, sklearn semantics, with the alpha grid solved once per shape.

    Parameters
    ----------
    alphas : float, sequence of floats (absolute penalties), or None for
        ``auto_alphas(trace(Xc^T Xc) / n_samples)`` (13 values, 1e-6 to 1e6 times the
        mean eigenvalue of the kernel).
    fit_intercept : centre X and Y as scikit-learn does, intercept unpenalised.
    solver : "auto" (primal if n_features <= n_samples else dual), "primal" or "dual".
    refit : with validation data, refit the final model on train + validation at
        ``alpha_`` (one Cholesky solve); False keeps the train-only fit.
    grid_solver : how a grid is solved on validation data: "auto" (by grid size and
        device, see the module docstring), "eigh", "cholesky" or "cg" (preconditioned conjugate
        gradients, ``projector._pcg``: no factorisation, for Grams too large for one per alpha).

    X: a torch tensor (CPU or CUDA: the fit runs there, the fitted attributes are tensors on
    it), a numpy array or a pandas frame (the fitted attributes are numpy arrays); predict
    and decision_function answer in the type of their input.

    ``fit(X, y, X_val=None, y_val=None)`` chooses alpha by

    * validation accuracy on (X_val, y_val) when given;
    * else, with several alphas, exact leave-one-out accuracy computed from the
      eigenbasis (the hat matrix of ridge with an unpenalised intercept);
    * ties go to the larger alpha;
    * a single alpha without validation data is one Cholesky solve.

    Attributes
    ----------
    coef_ : (n_classes, n_features) float32, (1, n_features) for two classes.
    intercept_ : (n_classes,) or (1,) float32 (zeros without intercept).
    classes_ : sorted labels, a tensor if y and X were tensors, else a numpy array.
    alpha_ : the alpha of coef_.
    alphas_ : the grid searched (numpy array).
    val_scores_ : {alpha: accuracy} on validation data or leave-one-out; None if not scored.
    val_predictions_ : {alpha: predicted class indices (n_val,)} of the train-only fit at
        each alpha, with validation data (else None).
    cv_ : "validation", "loo" or None.
    solver_ : the solver of the final coef_, "primal" or "dual".
    grid_solver_ : "eigh", "cholesky" or "cg" (None when no grid was solved).
    solve_counts_ : how the validation grid's alphas were solved, e.g. ``{"cg": 3,
        "cholesky32": 10, "cholesky64": 0}`` or ``{"eigh": 1}`` (None without validation).
    n_features_in_ : number of features.
    """

    def __init__(
        self,
        alphas: float | Sequence[float] | None = None,
        fit_intercept: bool = True,
        solver: str = "auto",
        refit: bool = True,
        grid_solver: str = "auto",
    ):
        self.alphas = alphas
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.refit = refit
        self.grid_solver = grid_solver

    def fit(self, X, y, X_val=None, y_val=None) -> "RidgeClassifier":
        """X: (n_samples, n_features), y: (n_samples,) labels;
        optional X_val: (n_val, n_features), y_val: (n_val,)."""
        data = self._prepare_fit(X, y, X_val, y_val)
        X, Y = data.X, data.Y
        n, d = X.shape
        solver = self.solver if self.solver != "auto" else ("primal" if d <= n else "dual")
        if data.X_val is None and self.alphas is not None and np.size(self.alphas) == 1:
            # one alpha, nothing to choose: a single Cholesky solve, no eigendecomposition
            fit = FITS["single"][solver]([X], Y, float(self._resolve_alphas(1.0)[0]), solver, self.fit_intercept)
            self.cv_ = None
        elif data.X_val is not None:
            fit = FITS["validation"][solver](X, Y, data.X_val, data.Yv, data.yv_idx, self._resolve_alphas,
                                             self.grid_solver, self.refit, self.fit_intercept)
            self.cv_ = "validation"
        else:
            fit = FITS["loo"][solver](X, Y, data.y_idx, self._resolve_alphas, solver, self.fit_intercept)
            self.cv_ = "loo" if fit["scores"] is not None else None
        self._record(fit, data.kind)
        self.solve_counts_ = fit["solve_counts"]
        preds = fit["predictions"]
        self.val_predictions_ = None if preds is None else {
            float(a): fitted(p, data.kind) for a, p in zip(self.alphas_, preds)}
        self.solver_ = fit["solver"]
        # W: (d, c) float64, b: (c,) -> coef_ (c, d), intercept_ (c,), float32; predict centres
        # its rows with the training mean (any centre is exact; one near the data is accurate)
        check_finite_fit(type(self).__name__, X, fit["W"], fit["b"])
        self._set_linear(fit["W"], fit["b"], _mean([X]), data.kind)
        return self

    def _decision(self, X) -> torch.Tensor:
        """X: (n, d) tensor -> (n, c) float32 scores, in fixed-size row blocks (``_rows_mm``)."""
        coef = torch.as_tensor(self.coef_, device=X.device)
        return _rows_mm(X, coef.T, self._centred).add_(self._offset(X.device))

    @property
    def weight_bytes(self) -> int:
        """Bytes of what predict needs: coef_ plus intercept_ (when fitted)."""
        _check_fitted(self, "coef_")
        return int(self.coef_.nbytes + (self.intercept_.nbytes if self.fit_intercept else 0))
