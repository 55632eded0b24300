"""Factorisations of a symmetric PSD matrix S (a Gram or a kernel) in float64 or float32: ``eigh``
(of S, or of a centred kernel on the complement of the constant vector), Cholesky of
``S + alpha I`` in place, its solves, and the robust single solve ``_solve_psd``.

On CPU they call LAPACK through scipy on numpy views (in place, no column-major copies);
past 2**31 elements (scipy's 32-bit indices, ``_linalg._BLAS_MAX_ELEMENTS``) they go to torch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from projector import _linalg

__all__ = []

_EIGH_FALLBACK_MAX_N = 2000  # an indefinite (rounded) Gram: eigh up to this n, a jittered Cholesky above

def _eigh64(S: torch.Tensor):
    if S.device.type == "cpu" and S.numel() > _linalg._BLAS_MAX_ELEMENTS:
        # LAPACK's syevd workspace (2 n^2 + 6 n + 1) overflows its 32-bit size from here on
        raise ValueError(
            f"An eigendecomposition of a {S.shape[0]} x {S.shape[1]} matrix is past LAPACK's 32-bit "
            "limits on CPU (and would take hours): pass validation data and grid_solver='cholesky' "
            "(or 'auto'), or use fewer samples / features for leave-one-out selection."
        )
    lam, vecs = torch.linalg.eigh(S.to(torch.float64))
    return lam.clamp_(min=0.0), vecs  # float32 rounding leaves tiny negative eigenvalues


def _eigh64_centred(K: torch.Tensor):
    """Eigenpairs of the centred kernel K: (n, n) on the complement of the constant vector,
    where the ridge with an intercept lives: ``(lam (n - 1,), U (n, n - 1))`` float64 with
    ``U^T 1 = 0`` to float64 rounding and ``C K C = U diag(lam) U^T`` (C = I - 11^T / n).

    ``eigh`` of K itself would return the constant direction with the rounding of a float32
    Gram as its "zero" eigenvalue (``K 1`` is 0 only to float32 rounding), which then enters
    ``lam / (lam + alpha)`` at small alpha. Here a Householder reflection H (H 1 = -sqrt(n)
    e_1) splits the constant direction off exactly: eigh of ``(H K H)[1:, 1:]``, mapped back
    by ``H[:, 1:]``."""
    n = K.shape[0]
    S = K.to(torch.float64, copy=True)
    v = torch.ones(n, dtype=torch.float64, device=K.device)
    v[0] += math.sqrt(n)
    tau = 2.0 / float(v @ v)
    # H S H = S - v w^T - w v^T with w = tau S v - tau^2 / 2 (v^T S v) v (H = I - tau v v^T)
    Sv = S @ v
    w = tau * Sv - (0.5 * tau * tau * float(v @ Sv)) * v
    S.addr_(v, w, alpha=-1.0).addr_(w, v, alpha=-1.0)
    lam, V = _eigh64(S[1:, 1:])
    del S
    U = torch.cat([torch.zeros(1, n - 1, dtype=torch.float64, device=K.device), V])
    U.addr_(v, v[1:] @ V, alpha=-tau)  # H[:, 1:] V
    return lam, U


def _cholesky_shifted(S, alpha, work):
    """Cholesky factor of S + alpha I computed in place in ``work`` (its dtype): ``(F, upper)``
    with ``S + alpha I = F^T F`` (upper) or ``F F^T`` (lower), or None when the factorisation
    breaks down (not positive definite in that precision). On CPU LAPACK potrf runs truly in
    place (torch's cholesky would take a column-major copy: one more (n, n) matrix) and leaves
    the other triangle uncleaned: F is for ``_cholesky_solve`` only."""
    if work.device.type == "cpu" and work.dtype in (torch.float32, torch.float64):
        from scipy.linalg import lapack

        w = work.numpy()  # numpy's copy: no torch thread pool woken between two LAPACK calls
        np.copyto(w, S.numpy(), casting="unsafe" if S.dtype != work.dtype else "same_kind")
        w.reshape(-1)[::w.shape[0] + 1] += alpha
        if w.size > _linalg._BLAS_MAX_ELEMENTS:
            # past scipy's 32-bit indexing: torch's (MKL) potrf, in place on the column-major
            # view (the same symmetric matrix); its lower factor read row-major is our upper one
            L = work.mT
            info = torch.empty((), dtype=torch.int32)
            torch.linalg.cholesky_ex(L, out=(L, info))
            return (work, True) if int(info) == 0 else None
        potrf = lapack.spotrf if work.dtype == torch.float32 else lapack.dpotrf
        # The row-major buffer seen column-major is its transpose, the same symmetric matrix:
        # its column-major lower factor L is our row-major upper factor L^T. clean=0: the other
        # triangle keeps S's values (potrs reads only the factor's), saving a pass over (n, n).
        with _linalg._blas_threads():
            c, info = potrf(work.numpy().T, lower=1, overwrite_a=1, clean=0)
        if info != 0:
            return None
        if not np.shares_memory(c, work.numpy()):  # pragma: no cover - scipy copied after all
            work.copy_(torch.from_numpy(np.ascontiguousarray(c.T)))
        return work, True
    work.copy_(S)
    work.diagonal().add_(alpha)
    info = torch.empty((), dtype=torch.int32, device=work.device)
    L, info = torch.linalg.cholesky_ex(work, out=(work, info))
    return (L, False) if int(info) == 0 else None


def _cholesky_solve(B, factor):
    """Solve with a factor from ``_cholesky_shifted``, in the factor's dtype. B: a tensor, or
    on CPU a numpy array (the result is then a numpy array). On CPU by LAPACK potrs on the
    factor in place: torch's cholesky_solve would copy it column-major."""
    F, upper = factor
    if F.device.type == "cpu" and upper and F.numel() > _linalg._BLAS_MAX_ELEMENTS:
        # past scipy's 32-bit indexing: two triangular solves by torch (MKL), which reads the
        # row-major factor through its transpose without copying it; S = F^T F
        Bt = torch.from_numpy(B) if isinstance(B, np.ndarray) else B
        Bt = Bt.to(F.dtype)
        x = torch.linalg.solve_triangular(F, torch.linalg.solve_triangular(F.mT, Bt, upper=False), upper=True)
        return x.numpy() if isinstance(B, np.ndarray) else x
    if F.device.type == "cpu" and upper and F.dtype in (torch.float32, torch.float64):
        from scipy.linalg import lapack

        potrs = lapack.spotrs if F.dtype == torch.float32 else lapack.dpotrs
        dtype = np.float32 if F.dtype == torch.float32 else np.float64
        Bn = B.astype(dtype, copy=False) if isinstance(B, np.ndarray) else B.to(F.dtype).numpy()
        with _linalg._blas_threads():
            x, info = potrs(F.numpy().T, Bn, lower=1)
        if info != 0:  # pragma: no cover - only for invalid arguments
            raise RuntimeError(f"LAPACK potrs failed (info={info}).")
        return x if isinstance(B, np.ndarray) else torch.from_numpy(np.ascontiguousarray(x))
    return torch.cholesky_solve(B.to(F.dtype), F, upper=upper)


def _solve_psd(S, rhs, alpha, work=None):
    """(S + alpha I)^-1 rhs in float64 by Cholesky.

    The factorisation runs in ``work`` (float64, S's shape) or a new float64 copy of S
    (S is not modified). When float32 rounding of a Gram leaves S + alpha I indefinite: eigh
    (negative eigenvalues clamped to 0) for n <= 2,000; above, eigh would take minutes
    to hours on a CPU, so the Cholesky is retried at alpha + delta, delta from 1e-7 of
    the mean diagonal up (a perturbation of the size of the Gram's own rounding)."""
    rhs = rhs.to(torch.float64)
    if work is None:
        work = torch.empty(S.shape, dtype=torch.float64, device=S.device)
    factor = _cholesky_shifted(S, alpha, work)
    if factor is not None:
        return _cholesky_solve(rhs, factor)
    if S.shape[0] <= _EIGH_FALLBACK_MAX_N:
        del work
        lam, vecs = _eigh64(S)
        return vecs @ ((vecs.T @ rhs) / (lam + alpha)[:, None])
    scale = float(S.diagonal().double().mean())
    for power in range(-7, 0):
        factor = _cholesky_shifted(S, alpha + scale * 10.0**power, work)
        if factor is not None:
            return _cholesky_solve(rhs, factor)
    raise np.linalg.LinAlgError(f"the Gram plus alpha={alpha:g} is far from positive definite; check the input.")
