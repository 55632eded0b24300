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

``G`` of binary rows is formed in float32 with BLAS ``ssyrk`` (its entries are integers
below 2**24, hence exact) or, for 0/1 integer rows where measured faster, in integer
arithmetic (``projector._binary_gram``: int8 GEMM with int32 accumulation, or popcounts of
bit-packed rows; also exact; the path in ``gram_path_``). ``K`` is then built, centred and
solved in float64 -- or, past ``projector._pcg.CG_FROM_ROWS`` rows or where that would not
fit in memory, built and centred in float64 row chunks into G's own float32 memory and solved
by preconditioned conjugate gradients (``projector._pcg``): one float32 (N, N) matrix in all.
Prediction forms the cross products ``X_new X_fit^T`` by the Gram's path (float32 ``sgemm``
over column chunks, or int8 GEMM over row tiles of the kept rows), never a float copy of the
kept rows (kept as given: the encoder's uint8, one byte per feature, read as int8 without a copy).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from projector._base import _ClassifierBase
from projector._binary_gram import binary_cross, gram_path, rows_gram
from projector._fits import dual_fit, dual_loo
from projector._linalg import _BLAS_MAX_ELEMENTS, _blas_threads, _rows_per_chunk
from projector._pcg import direct_bytes, iterative_bytes, use_iterative
from projector._validation import _check_fitted, check_finite_fit, fitted, format_bytes

__all__ = ["opu_kernel", "KernelRidgeClassifier"]


def opu_kernel(A: torch.Tensor, B: torch.Tensor | None = None) -> torch.Tensor:
    """A: (n_a, m), B: (n_b, m) (default A) -> K: (n_a, n_b) float64,
    ``K_ij = 4 / m**2 * (|a_i|^2 |b_j|^2 + (a_i . b_j)**2)``: E[Y_a . Y_b] / k of |XR|^2
    features with s2 = 1/m."""
    m = A.shape[1]
    if B is None:
        G = rows_gram([A]).to(torch.float64)
        ra = rb = G.diagonal().clone()
    else:
        G = _cross(A, B)
        ra, rb = _sq_norms(A), _sq_norms(B)
    return _from_gram(G, ra, rb, m)


def _from_gram(G: torch.Tensor, ra: torch.Tensor, rb: torch.Tensor, m: int) -> torch.Tensor:
    """4/m^2 (ra rb^T + G o G), in place in G (float64)."""
    G.square_().add_(torch.outer(ra, rb))
    return G.mul_(4.0 / m**2)


def _cross(A, B, a_norms: bool = False):
    """A B^T in float64 (and with ``a_norms``, also ``|a_i|^2`` (n_a,) float64: for integer
    rows from the float32 chunks the product converts anyway, not a second pass over A).
    0/1 integer rows: ``binary_cross`` where the measured (or forced) path is an integer
    one. Other integer rows, or the "float32" path: float32 GEMMs over column chunks of both A and
    B, accumulated in float32 -- their products are integer counts, exact in float32 below
    2**24 (m = 81,536 binary features: at most 81,536) -- so neither is converted to float
    whole (a float32 copy of 5,000 x 81,536 training rows is 1.6 GB); on CPU by scipy's BLAS
    (OpenBLAS sgemm ran ~10 % faster than torch's here, and is the library of ``gram``).
    Real-valued rows: in float64 over row chunks of A (float32 rounding would make a sample's
    scores depend on the rows it is batched with)."""
    if not A.shape[0] or A.is_floating_point() or B.is_floating_point():
        G = torch.zeros(0, B.shape[0], dtype=torch.float64, device=A.device)
        if A.shape[0]:
            Bf = B.to(torch.float64)
            step = _rows_per_chunk(A.shape[1], 8)
            G = torch.cat([A[r0:r0 + step].to(torch.float64) @ Bf.T for r0 in range(0, A.shape[0], step)])
        return (G, _sq_norms(A)) if a_norms else G
    out = binary_cross(A, B, a_norms)  # 0/1 rows: integer arithmetic where measured faster
    if out is not None:
        return out
    nA, nB, m = A.shape[0], B.shape[0], A.shape[1]
    G = torch.zeros(nA, nB, dtype=torch.float32, device=A.device)
    step = min(m, _rows_per_chunk(nA + nB, 8))  # columns per chunk: both chunks ~128 MB
    bufA = torch.empty(nA * step, dtype=torch.float32, device=A.device)
    bufB = torch.empty(nB * step, dtype=torch.float32, device=A.device)
    blas_ok = A.device.type == "cpu" and G.numel() <= _BLAS_MAX_ELEMENTS and nA * step <= _BLAS_MAX_ELEMENTS \
        and nB * step <= _BLAS_MAX_ELEMENTS
    ra = torch.zeros(nA, dtype=torch.float32, device=A.device) if a_norms else None
    for c0 in range(0, m, step):
        w = min(step, m - c0)
        Ac = bufA[:nA * w].view(nA, w)
        Bc = bufB[:nB * w].view(nB, w)
        Ac.copy_(A[:, c0:c0 + w])
        Bc.copy_(B[:, c0:c0 + w])
        if blas_ok:
            _sgemm_abt_(G, Ac, Bc)
        else:
            G.addmm_(Ac, Bc.T)
        if ra is not None:
            ra += torch.linalg.vecdot(Ac, Ac)
    return (G.double(), ra.double()) if a_norms else G.double()


def _sgemm_abt_(G: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> None:
    """G += A B^T by scipy's BLAS sgemm on CPU float32 C-ordered tensors, in place: row-major
    G is column-major G^T = B A^T, with B^T and A^T the column-major views of B and A."""
    from scipy.linalg import blas

    with _blas_threads():
        out = blas.sgemm(1.0, B.numpy().T, A.numpy().T, beta=1.0, c=G.numpy().T, trans_a=1, overwrite_c=1)
    if not np.shares_memory(out, G.numpy()):  # pragma: no cover - scipy copied: keep the result
        G.copy_(torch.from_numpy(out.T))


def _sq_norms(A) -> torch.Tensor:
    """|a_i|^2 (n,) float64. Integer rows through float32 (sums of integer squares, exact in
    float32 below 2**24 like ``_cross``'s products: half the memory traffic of float64)."""
    if A.is_floating_point():
        step = _rows_per_chunk(A.shape[1], 8)
        return torch.cat([A[r0:r0 + step].to(torch.float64).square().sum(1) for r0 in range(0, A.shape[0], step)])
    step = _rows_per_chunk(A.shape[1], 4)
    return torch.cat([torch.linalg.vecdot(c, c).double()
                      for c in (A[r0:r0 + step].to(torch.float32) for r0 in range(0, A.shape[0], step))]) \
        if A.shape[0] else torch.zeros(0, dtype=torch.float64, device=A.device)


def check_memory_rows(who: str, N: int, n_train: int, device, iterative: bool) -> None:
    """Refuse before the (N, N) Gram when it cannot fit: the direct path holds it in float32 and the
    kernel in float64 with its factorisations, conjugate gradients one float32 kernel and their
    blocks (``projector._pcg``: ``direct_bytes``, ``iterative_bytes``)."""
    from projector._random_matrix import available_memory_bytes

    bytes_at = (lambda k: (iterative_bytes if iterative else direct_bytes)(k, min(n_train, k)))
    need, free = bytes_at(N), available_memory_bytes(device)
    if need > free:
        n_max = next((k for k in range(N, 0, -max(1, N // 200)) if bytes_at(k) <= free), 0)
        raise ValueError(f"{who} on {N:,} rows (train + validation) would need about {format_bytes(need)} of "
                         f"memory for its (N, N) kernel, but {torch.device(device).type} has {format_bytes(free)} "
                         f"free. Fit on at most about {n_max:,} rows, or use random features "
                         "(StreamingRidgeClassifier) instead of the exact kernel.")


def _kernel32_(G: torch.Tensor, n_train: int, m: int, centre: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel of a float32 (N, N) Gram G of binary rows, in place in G: ``4/m^2 (r r^T + G o G)``
    computed in float64 row chunks and, with ``centre``, centred with the mean of its first
    n_train rows (``_centre_with_train``) before it is rounded to float32 -- rounded once, at
    the centred entries' scale, and no second (N, N) matrix. Returns (G, a) with ``a`` (N,)
    float64 the centring (zeros without)."""
    N, s = G.shape[0], 4.0 / m**2
    r = G.diagonal().to(torch.float64)
    step = _rows_per_chunk(N, 8)
    a = torch.zeros(N, dtype=torch.float64, device=G.device)
    c = 0.0
    if centre:
        r_mean = float(r[:n_train].mean())
        for r0 in range(0, N, step):
            rows = G[r0:r0 + step, :n_train].to(torch.float64)
            a[r0:r0 + step] = s * (r[r0:r0 + step] * r_mean + rows.square_().mean(1))
        c = float(a[:n_train].mean())
    for r0 in range(0, N, step):  # s G^2 + s r_i r_j - (a_i - c) - a_j, no (rows, N) temporary but k
        k = G[r0:r0 + step].to(torch.float64).square_().mul_(s)
        k.addr_(r[r0:r0 + step], r, alpha=s)
        k.sub_((a[r0:r0 + step] - c)[:, None]).sub_(a[None, :])
        G[r0:r0 + step] = k
    return G, a


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

    X: (n_samples, n_features), binary uint8 (the encoder's output) or float: a torch tensor
    (CPU or CUDA), a numpy array or a pandas frame. Without validation data, alpha is chosen
    by exact leave-one-out from one eigendecomposition of the centred kernel.

    Parameters
    ----------
    alphas : float, sequence, or None for ``auto_alphas`` (13 values relative to the mean
        eigenvalue of the centred train kernel).
    fit_intercept, refit : as for RidgeClassifier.
    grid_solver : "auto", "eigh", "cholesky" (the direct path: the kernel in float64) or "cg"
        (one float32 kernel, preconditioned conjugate gradients for every alpha and class;
        validation rows or a single alpha needed). "auto": "cg" from
        ``projector._pcg.CG_FROM_ROWS`` train + validation rows or where the direct path's
        matrices would not fit in free memory.

    Attributes
    ----------
    X_fit_ : the rows the final model uses (train, or train + validation), as given.
    dual_coef_ : (n_used, n_classes) float64, (n_used, 1) for two classes.
    intercept_ : (n_classes,) float64.
    classes_, alpha_, alphas_, val_scores_, cv_, grid_solver_, n_features_in_ : as for RidgeClassifier.
    gram_path_ : how ``X X^T`` and the cross products with new rows are formed: "float32"
        (BLAS), or for 0/1 integer rows "int8" (``torch._int_mm``) or "popcount"
        (``projector._binary_gram``: measured once per process, or forced).
    solver_info_ : dict: ``{"solver": "direct", "grid_solver": ...}``, or for conjugate
        gradients ``{"solver": "pcg", "rank": preconditioner rank, "tol", "iterations"
        (products with the Gram), "max_relative_residual", "alphas": {alpha: {"iterations",
        "relative_residual", "converged"}}}`` (float64 residuals), with ``"refit"`` the same for
        the refit.
    diverged_ : dict alpha -> why, the alphas of the grid whose conjugate-gradient solution did
        not converge: left out of the choice (if none converged, or the one alpha used did not,
        ``fit`` raises ``FloatingPointError``). Empty for the direct solver.
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
        """X: (n_samples, n_features), y: (n_samples,); optional X_val, y_val for the alpha grid
        (without them: exact leave-one-out over the grid, from one eigendecomposition)."""
        data = self._prepare_fit(X, y, X_val, y_val)
        X, Y, n, m = data.X, data.Y, data.X.shape[0], data.X.shape[1]
        parts = [X] if data.X_val is None else [X, data.X_val]
        self.gram_path_ = gram_path(parts)  # the path ``gram`` and ``_cross`` take (cached choice)
        if data.X_val is not None:
            Y = torch.cat([Y, data.Yv])
        n_fit = sum(p.shape[0] for p in parts)
        iterative = use_iterative(self.grid_solver, n_fit, n, X.device)
        loo = data.X_val is None and (self.alphas is None or np.size(self.alphas) > 1)
        if iterative and loo:
            raise ValueError(
                f"Leave-one-out selection needs a float64 eigendecomposition of the ({n:,}, {n:,}) kernel "
                f"(about {direct_bytes(n, n) / 2**30:.1f} GiB), which conjugate gradients "
                f"(grid_solver={self.grid_solver!r}) avoid: pass validation rows (X_val, y_val), a single "
                "alpha, or grid_solver='eigh' / 'cholesky' with fewer rows.")
        check_memory_rows(f"{type(self).__name__}.fit", n_fit, n, X.device, iterative)
        G = rows_gram(parts)  # float32, exact for binary rows
        if iterative:  # one float32 kernel, in G's memory, solved by conjugate gradients
            K, a = _kernel32_(G, n, m, self.fit_intercept)
        else:
            G = G.to(torch.float64)
            r = G.diagonal().clone()
            K = _from_gram(G, r, r, m)
            K, a = _centre_with_train(K, n) if self.fit_intercept else \
                (K, torch.zeros(K.shape[0], dtype=torch.float64, device=K.device))
        del G
        if loo:
            y_mean = Y.mean(0) if self.fit_intercept else torch.zeros(Y.shape[1], dtype=torch.float64, device=K.device)
            loo = dual_loo(K, Y - y_mean, y_mean, data.y_idx, self._resolve_alphas, self.fit_intercept)
            del K
            fit = {"alpha": loo["alpha"], "alphas": loo["alphas"], "scores": loo["scores"], "beta": loo["beta"],
                   "offset": y_mean, "n_used": n, "grid_solver": "eigh"}
            self.cv_ = "loo"
        else:
            alphas = self._resolve_alphas(float(K[:n, :n].diagonal().sum(dtype=torch.float64)) / n)
            fit = dual_fit(K, Y, n, data.yv_idx, alphas, "cg" if iterative else self.grid_solver, self.refit,
                           fit_intercept=self.fit_intercept, overwrite_gram=True)
            fit["alphas"] = alphas
            self.cv_ = "validation" if fit["scores"] is not None else None
        self._record(fit, data.kind)
        # alpha -> why, left out of the choice: conjugate gradients did not converge there
        self.diverged_ = dict(fit.get("unconverged") or {})
        self.solver_info_ = fit.get("solver_info") or {"solver": "direct", "grid_solver": fit["grid_solver"]}
        n_used = fit["n_used"]
        beta = fit["beta"]
        check_finite_fit(type(self).__name__, X, beta, fit["offset"])
        # f(x) = kz(x) beta + offset, kz centred with the train mean; sum(beta) = 0 leaves
        # K(x, X_used) beta - a_used . beta + offset with the uncentred kernel.
        self.dual_coef_ = fitted(beta, data.kind)
        self.intercept_ = fitted(fit["offset"] - (a[:n_used] @ beta if self.fit_intercept else 0.0), data.kind)
        self.X_fit_ = fitted(X if n_used == n else torch.cat(parts), data.kind)
        return self

    _fitted_attr = "dual_coef_"

    def _decision(self, X) -> torch.Tensor:
        """X: (n, m) tensor -> (n, c) float32 scores, in row chunks of the kernel."""
        Xf = torch.as_tensor(self.X_fit_, device=X.device)
        if Xf.is_floating_point():
            Xf = Xf.to(torch.float64)  # once, not per chunk; binary rows stay as they are (``_cross``)
        coef = torch.as_tensor(self.dual_coef_, device=X.device)
        b = torch.as_tensor(self.intercept_, device=X.device)
        r_fit = _sq_norms(Xf)
        step = max(1, _rows_per_chunk(Xf.shape[0], 8))
        out = []
        for r0 in range(0, X.shape[0], step):
            xr = X[r0:r0 + step]
            G, r = _cross(xr, Xf, a_norms=True)
            K = _from_gram(G, r, r_fit, self.n_features_in_)
            out.append(K @ coef + b)
        return torch.cat(out).float() if out else torch.zeros(0, coef.shape[1], device=X.device)

    @property
    def weight_bytes(self) -> int:
        """Bytes of what predict needs: the kept rows, the dual coefficients and the intercept."""
        _check_fitted(self, "dual_coef_")
        return int(self.X_fit_.nbytes + self.dual_coef_.nbytes + self.intercept_.nbytes)

    @property
    def param_count(self) -> int:
        """Fitted numbers: dual coefficients and intercept (the kept rows are data, counted in weight_bytes)."""
        _check_fitted(self, "dual_coef_")
        return int(np.prod(self.dual_coef_.shape) + np.prod(self.intercept_.shape))
