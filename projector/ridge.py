"""One-vs-all ridge classifier in torch, with the alpha grid solved from one eigendecomposition.

Semantics follow ``sklearn.linear_model.RidgeClassifier``: labels are binarised to
{-1, +1} (``LabelBinarizer(neg_label=-1, pos_label=1)``, a single column for two
classes), X and Y are centred for the intercept, and
``coef = argmin ||Yc - Xc W||^2 + alpha ||W||^2``.

How it is solved
----------------
The centred Gram is formed in float32 on X's device, in bounded chunks (never a
centred copy of X), then eigendecomposed in float64:

* ``"primal"`` (n_features <= n_samples): ``G = Xc^T Xc = V diag(lam) V^T``, (d, d);
* ``"dual"`` (n_samples < n_features): ``K = Xc Xc^T = U diag(lam) U^T``, (n, n);
  no (d, d) matrix is ever formed.

Every alpha is then a diagonal rescaling in that eigenbasis, so validation (or
leave-one-out) predictions for a whole grid cost one eigendecomposition. Products with
only ``n_classes`` columns are computed in float64; the Gram and the cross-products in
float32.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from projector.encoders import _check_2d, _check_fitted, _check_n_features

__all__ = ["RidgeClassifier", "auto_alphas"]

_CHUNK_BYTES = 128 << 20  # bound on a temporary centred slice of X
_SOLVERS = ("auto", "primal", "dual")


def auto_alphas(mean_eigenvalue: float) -> np.ndarray:
    """The default grid: ``np.logspace(-6, 6, 13) * mean_eigenvalue``.

    ``mean_eigenvalue = trace(Xc^T Xc) / n_samples``, the mean squared norm of a
    centred sample, i.e. the mean eigenvalue of the (n, n) kernel ``Xc Xc^T``. |XR|^2
    features have an arbitrary scale (n_features, OPU exposure, ...) and a grid relative
    to it is scale-free.
    """
    scale = float(mean_eigenvalue) if mean_eigenvalue > 0 else 1.0
    return np.logspace(-6, 6, 13) * scale


# --- chunked products with centred X, never materialising Xc ---
# ``parts`` is a list of row blocks (n_i, d) standing for their row concatenation.

def _rows_per_chunk(d: int, itemsize: int) -> int:
    return max(1, _CHUNK_BYTES // max(d * itemsize, 1))


def _iter_rows(parts, mu, dtype):
    """Yield (row_offset, Xc_chunk: (r, d) in dtype) over the stacked parts."""
    offset = 0
    for X in parts:
        step = _rows_per_chunk(X.shape[1], 8)
        for r0 in range(0, X.shape[0], step):
            chunk = X[r0:r0 + step].to(dtype, copy=True)  # a copy: centred in place
            if mu is not None:
                chunk.sub_(mu.to(dtype))
            yield offset + r0, chunk
        offset += X.shape[0]


def _iter_cols(parts, mu, dtype):
    """Yield Xc[:, cols] of the stacked parts, (N, c) in dtype, over column chunks."""
    n_total, d = sum(X.shape[0] for X in parts), parts[0].shape[1]
    step = _rows_per_chunk(n_total, 8)
    for c0 in range(0, d, step):
        chunk = torch.cat([X[:, c0:c0 + step].to(dtype) for X in parts])  # a copy
        if mu is not None:
            chunk.sub_(mu[c0:c0 + step].to(dtype))
        yield chunk


def _mean(parts) -> torch.Tensor:
    """Column means (d,) float64, in row chunks: X.sum(0, dtype=float64) would copy X to float64."""
    n = sum(X.shape[0] for X in parts)
    total = torch.zeros(parts[0].shape[1], dtype=torch.float64, device=parts[0].device)
    for _, chunk in _iter_rows(parts, None, torch.float64):
        total += chunk.sum(0)
    return total / n


def _gram_primal(parts, mu) -> torch.Tensor:
    """Xc^T Xc: (d, d) float32."""
    d = parts[0].shape[1]
    G = torch.zeros(d, d, dtype=torch.float32, device=parts[0].device)
    for _, Xc in _iter_rows(parts, mu, torch.float32):
        G.addmm_(Xc.T, Xc)
    return G


def _gram_dual(parts, mu) -> torch.Tensor:
    """Xc Xc^T over the stacked rows: (N, N) float32."""
    N = sum(X.shape[0] for X in parts)
    K = torch.zeros(N, N, dtype=torch.float32, device=parts[0].device)
    for Xc in _iter_cols(parts, mu, torch.float32):
        K.addmm_(Xc, Xc.T)
    return K


def _cross(A_parts, mu, B_parts) -> torch.Tensor:
    """A_c B_c^T: (n_a, n_b) float32, both centred with mu."""
    na = sum(X.shape[0] for X in A_parts)
    out = None
    for ab in _iter_cols(A_parts + B_parts, mu, torch.float32):
        prod = ab[:na] @ ab[na:].T
        out = prod if out is None else out.add_(prod)
    return out


def _xt_dot(parts, mu, M) -> torch.Tensor:
    """Xc^T M: (d, c) float64, M: (N, c)."""
    M = M.to(torch.float64)
    out = torch.zeros(parts[0].shape[1], M.shape[1], dtype=torch.float64, device=M.device)
    for r0, Xc in _iter_rows(parts, mu, torch.float64):
        out.addmm_(Xc.T, M[r0:r0 + Xc.shape[0]])
    return out


def _x_dot(X, mu, M, dtype=torch.float64) -> torch.Tensor:
    """Xc M: (n, c) in dtype, M: (d, c)."""
    M = M.to(dtype)
    out = torch.empty(X.shape[0], M.shape[1], dtype=dtype, device=M.device)
    for r0, Xc in _iter_rows([X], mu, dtype):
        out[r0:r0 + Xc.shape[0]] = Xc @ M
    return out


def _eigh64(S: torch.Tensor):
    lam, vecs = torch.linalg.eigh(S.to(torch.float64))
    return lam.clamp_(min=0.0), vecs  # float32 rounding leaves tiny negative eigenvalues


# --- the estimator ---

class RidgeClassifier:
    """Ridge one-vs-all classifier, sklearn semantics, with alpha chosen in one eigendecomposition.

    Parameters
    ----------
    alphas : float, sequence of floats (absolute penalties), or None for
        ``auto_alphas(trace(Xc^T Xc) / n_samples)`` (13 values, 1e-6 to 1e6 times the
        mean eigenvalue of the kernel).
    fit_intercept : centre X and Y as scikit-learn does, intercept unpenalised.
    solver : "auto" (primal if n_features <= n_samples else dual), "primal" or "dual".
    refit : with validation data, refit the final model on train + validation at
        ``alpha_`` (one Cholesky solve); False keeps the train-only fit.

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
    classes_ : sorted labels, a tensor if y was a tensor, else a numpy array.
    alpha_ : the alpha of coef_.
    alphas_ : the grid searched (numpy array).
    val_scores_ : {alpha: accuracy} on validation data or leave-one-out; None if not scored.
    cv_ : "validation", "loo" or None.
    solver_ : the solver of the final coef_, "primal" or "dual".
    n_features_in_ : number of features.
    """

    def __init__(
        self,
        alphas: float | Sequence[float] | None = None,
        fit_intercept: bool = True,
        solver: str = "auto",
        refit: bool = True,
    ):
        self.alphas = alphas
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.refit = refit

    # -- fit --

    def fit(self, X, y, X_val=None, y_val=None) -> "RidgeClassifier":
        """X: (n_samples, n_features), y: (n_samples,) labels;
        optional X_val: (n_val, n_features), y_val: (n_val,)."""
        X = _check_2d(X, "RidgeClassifier.fit")
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver={self.solver!r} is not one of {_SOLVERS}.")
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val, or neither.")
        n, d = X.shape
        self.classes_, y_idx = _encode_labels(y, n, X.device)
        if len(self.classes_) < 2:
            raise ValueError(
                f"RidgeClassifier needs at least 2 classes in y, got {len(self.classes_)}: {self.classes_!r}."
            )
        self.n_features_in_ = d
        Y = _binarize(y_idx, len(self.classes_))
        if X_val is not None:
            X_val = _check_2d(X_val, "RidgeClassifier.fit (X_val)")
            _check_n_features(self, X_val)
            yv_idx = _label_indices(self.classes_, y_val, X_val.shape[0], X.device)

        if X_val is None and self.alphas is not None and np.size(self.alphas) == 1:
            # one alpha, nothing to choose: a single Cholesky solve, no eigendecomposition
            self.alphas_ = self._resolve_alphas(1.0)
            self.alpha_, self.cv_, self.val_scores_ = float(self.alphas_[0]), None, None
            return self._set_coef(*self._solve_once([X], Y, self.alpha_), X.device)

        solver = self._solver_for(n, d)
        mu = _mean([X]) if self.fit_intercept else None
        y_mean = Y.mean(0) if self.fit_intercept else torch.zeros(Y.shape[1], dtype=torch.float64, device=X.device)
        Yc = Y - y_mean
        if solver == "primal":
            G = _gram_primal([X], mu)
            trace = float(G.diagonal().sum(dtype=torch.float64))
            lam, V = _eigh64(G)
            del G
            W0 = V.T @ _xt_dot([X], mu, Yc)  # (d, c): V^T Xc^T Yc
        else:
            K = _gram_dual([X], mu)
            trace = float(K.diagonal().sum(dtype=torch.float64))
            lam, U = _eigh64(K)
            del K
            W0 = U.T @ Yc  # (n, c)
        alphas = self._resolve_alphas(trace / n)
        self.alphas_ = alphas

        self.cv_, self.val_scores_ = None, None
        if X_val is not None:
            if solver == "primal":
                Z = _x_dot(X_val, mu, V, torch.float32).double()  # Xv_c V
            else:
                Z = _cross([X_val], mu, [X]).double() @ U  # Xv_c Xc^T U
            accs = [_accuracy(Z @ (W0 / (lam + a)[:, None]) + y_mean, yv_idx) for a in alphas]
            self.cv_ = "validation"
        elif len(alphas) > 1:
            accs = self._loo_accuracies(X, mu, solver, lam, V if solver == "primal" else U, W0, Yc, y_mean, y_idx, alphas)
            self.cv_ = "loo"
        if self.cv_ is not None:
            self.val_scores_ = {float(a): float(s) for a, s in zip(alphas, accs)}
            best = max(range(len(alphas)), key=lambda i: (accs[i], alphas[i]))
            alpha = float(alphas[best])
        else:
            alpha = float(alphas[0])
        self.alpha_ = alpha

        if X_val is not None and self.refit:
            Y_all = torch.cat([Y, _binarize(yv_idx, len(self.classes_))])
            W, b = self._solve_once([X, X_val], Y_all, alpha)
        else:
            if solver == "primal":
                W = V @ (W0 / (lam + alpha)[:, None])
            else:
                W = _xt_dot([X], mu, U @ (W0 / (lam + alpha)[:, None]))
            b = y_mean - (mu @ W if mu is not None else 0.0)
            self.solver_ = solver
        return self._set_coef(W, b, X.device)

    def _set_coef(self, W, b, device) -> "RidgeClassifier":
        """W: (d, c) float64, b: (c,) -> coef_ (c, d), intercept_ (c,), float32."""
        self.coef_ = W.T.to(torch.float32).contiguous()
        self.intercept_ = torch.as_tensor(b, dtype=torch.float32, device=device).reshape(-1).clone()
        return self

    def _solver_for(self, n: int, d: int) -> str:
        if self.solver != "auto":
            return self.solver
        return "primal" if d <= n else "dual"

    def _resolve_alphas(self, mean_eigenvalue: float) -> np.ndarray:
        if self.alphas is None:
            return auto_alphas(mean_eigenvalue)
        alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
        if alphas.ndim != 1 or len(alphas) == 0 or not np.all(alphas > 0):
            raise ValueError(
                f"alphas must be positive numbers (absolute penalties), got {self.alphas!r}; "
                "or None for the automatic grid."
            )
        return alphas

    def _loo_accuracies(self, X, mu, solver, lam, vecs, W0, Yc, y_mean, y_idx, alphas):
        """Exact leave-one-out accuracy for every alpha.

        Ridge with an unpenalised intercept is a linear smoother with hat matrix
        ``H = 11^T/n + Kc (Kc + alpha I)^-1``; the left-out prediction of sample i is
        ``y_i - (y_i - yhat_i) / (1 - H_ii)``. With coordinates ``Q`` of the samples in
        the eigenbasis (primal: ``Xc V``; dual: ``U diag(lam)``),
        ``yhat = Q (W0 / (lam + alpha)) + ymean`` and ``H_ii = 1/n + sum_j Q_ij^2 / (lam_j + alpha)``
        (primal) or ``1/n + sum_j U_ij^2 lam_j / (lam_j + alpha)`` (dual); the 1/n term
        only with an intercept.
        """
        n = X.shape[0]
        inv = [1.0 / (lam + a) for a in alphas]
        correct = torch.zeros(len(alphas), dtype=torch.float64, device=lam.device)
        if solver == "primal":
            V32 = vecs.to(torch.float32)
            chunks = ((r0, Xc.matmul(V32).double()) for r0, Xc in _iter_rows([X], mu, torch.float32))
            hnum = lambda Q: Q * Q  # noqa: E731  h_i = sum_j Q_ij^2 / (lam_j + a)
        else:
            step = _rows_per_chunk(vecs.shape[1], 8)
            chunks = ((r0, vecs[r0:r0 + step] * lam) for r0 in range(0, n, step))
            safe = torch.where(lam > 0, lam, torch.ones_like(lam))
            hnum = lambda Q: torch.where(lam > 0, Q * Q / safe, torch.zeros_like(Q))  # noqa: E731  U^2 lam
        for r0, Q in chunks:
            rows = slice(r0, r0 + Q.shape[0])
            Hn, Yr = hnum(Q), Yc[rows]
            for i, w in enumerate(inv):
                yhat = Q @ (W0 * w[:, None])  # centred fit
                h = Hn @ w + (1.0 / n if self.fit_intercept else 0.0)
                loo = Yr - (Yr - yhat) / (1.0 - h)[:, None] + y_mean
                correct[i] += _accuracy(loo, y_idx[rows]) * Q.shape[0]
        return (correct / n).tolist()

    def _solve_once(self, parts, Y, alpha):
        """Fit on the stacked parts at one alpha: (W: (d, c) float64, b: (c,))."""
        N, d = sum(X.shape[0] for X in parts), parts[0].shape[1]
        solver = self._solver_for(N, d)
        mu = _mean(parts) if self.fit_intercept else None
        y_mean = Y.mean(0) if self.fit_intercept else torch.zeros(Y.shape[1], dtype=torch.float64, device=Y.device)
        Yc = Y - y_mean
        if solver == "primal":
            W = _solve_psd(_gram_primal(parts, mu), _xt_dot(parts, mu, Yc), alpha)
        else:
            W = _xt_dot(parts, mu, _solve_psd(_gram_dual(parts, mu), Yc, alpha))
        self.solver_ = solver
        return W, y_mean - (mu @ W if mu is not None else 0.0)

    # -- predict --

    def decision_function(self, X) -> torch.Tensor:
        """X: (n_samples, n_features) -> scores (n_samples, n_classes) float32, (n_samples,) for two classes."""
        X = _check_2d(X, "RidgeClassifier.decision_function")
        _check_fitted(self, "coef_")
        _check_n_features(self, X)
        coef, b = self.coef_.to(X.device), self.intercept_.to(X.device)
        step = _rows_per_chunk(X.shape[1], 4)
        S = torch.cat([X[r0:r0 + step].to(torch.float32) @ coef.T + b for r0 in range(0, X.shape[0], step)]) \
            if len(X) else torch.zeros(0, coef.shape[0], device=X.device)
        return S[:, 0] if S.shape[1] == 1 else S

    def predict(self, X):
        """X: (n_samples, n_features) -> labels (n_samples,), of the type of classes_."""
        S = self.decision_function(X)
        idx = (S > 0).long() if S.ndim == 1 else S.argmax(dim=1)
        if isinstance(self.classes_, torch.Tensor):
            return self.classes_.to(idx.device)[idx]
        return self.classes_[idx.cpu().numpy()]

    def score(self, X, y) -> float:
        """Mean accuracy of predict(X) against y."""
        S = self.decision_function(X)
        y_idx = _label_indices(self.classes_, y, X.shape[0], X.device, unknown_ok=True)
        return _accuracy(S.double() if S.ndim == 2 else S.double()[:, None], y_idx)

    @property
    def weight_bytes(self) -> int:
        """Bytes of what predict needs: coef_ plus intercept_ (when fitted)."""
        _check_fitted(self, "coef_")
        return self.coef_.nbytes + (self.intercept_.nbytes if self.fit_intercept else 0)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"RidgeClassifier({params})"


# --- labels and solves ---

def _encode_labels(y, n, device):
    """Sorted classes (tensor if y is one, else numpy) and indices (n,) long on device."""
    if isinstance(y, torch.Tensor):
        y_t = y.reshape(-1)
        if len(y_t) != n:
            raise ValueError(f"y has {len(y_t)} labels but X has {n} samples.")
        classes, idx = torch.unique(y_t, sorted=True, return_inverse=True)
        return classes, idx.to(device)
    y_np = np.asarray(y).reshape(-1)
    if len(y_np) != n:
        raise ValueError(f"y has {len(y_np)} labels but X has {n} samples.")
    classes, idx = np.unique(y_np, return_inverse=True)
    return classes, torch.as_tensor(idx, dtype=torch.long, device=device)


def _label_indices(classes, y, n, device, unknown_ok=False):
    """Index of each label of y in classes: (n,) long; -1 for unknown labels when allowed."""
    y_np = y.detach().cpu().numpy().reshape(-1) if isinstance(y, torch.Tensor) else np.asarray(y).reshape(-1)
    cls = classes.detach().cpu().numpy() if isinstance(classes, torch.Tensor) else classes
    if len(y_np) != n:
        raise ValueError(f"y has {len(y_np)} labels but X has {n} samples.")
    pos = np.clip(np.searchsorted(cls, y_np), 0, len(cls) - 1)
    known = cls[pos] == y_np
    if not known.all() and not unknown_ok:
        raise ValueError(
            f"Validation labels {np.unique(y_np[~known])[:10].tolist()} are not among the "
            f"training classes {cls.tolist()[:20]}: every class must appear in the training set."
        )
    return torch.as_tensor(np.where(known, pos, -1), dtype=torch.long, device=device)


def _binarize(idx, n_classes) -> torch.Tensor:
    """LabelBinarizer(neg_label=-1, pos_label=1): (n, n_classes), or (n, 1) for two classes."""
    if n_classes == 2:
        return (2.0 * (idx == 1).double() - 1.0)[:, None]
    Y = torch.full((len(idx), n_classes), -1.0, dtype=torch.float64, device=idx.device)
    Y[torch.arange(len(idx), device=idx.device), idx] = 1.0
    return Y


def _accuracy(S, y_idx) -> float:
    """S: (n, c) scores; c == 1 means a binary sign decision."""
    pred = (S[:, 0] > 0).long() if S.shape[1] == 1 else S.argmax(dim=1)
    return float((pred == y_idx).double().mean()) if len(y_idx) else float("nan")


def _solve_psd(S, rhs, alpha):
    """(S + alpha I)^-1 rhs in float64 by Cholesky; eigh when float32 rounding breaks it."""
    S = S.to(torch.float64, copy=True)
    S.diagonal().add_(alpha)
    L, info = torch.linalg.cholesky_ex(S)
    if int(info) == 0:
        return torch.cholesky_solve(rhs.to(torch.float64), L)
    S.diagonal().sub_(alpha)
    lam, vecs = _eigh64(S)
    return vecs @ ((vecs.T @ rhs.to(torch.float64)) / (lam + alpha)[:, None])
