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

The pure functions under the estimator (``dual_fit``, ``gram``) are shared with the
exact-kernel ridge (``projector.kernel``) and the streaming fit (``projector.streaming``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from projector.encoders import _check_2d, _check_fitted, _check_n_features

__all__ = ["RidgeClassifier", "auto_alphas", "dual_fit", "gram", "grid_solver_for"]

_CHUNK_BYTES = 128 << 20  # bound on a temporary centred slice of X
_SOLVERS = ("auto", "primal", "dual")
_GRID_SOLVERS = ("auto", "eigh", "cholesky")
# Cost of one float64 eigh in per-alpha solves of the same (n, n) matrix, i.e. the
# break-even grid size, ``c * (n / 1000) ** p``. Measured on 2 CPU cores with the batched
# grid solves (torch's float64 eigh against ``_ShiftedSolver.solve_all`` over the default
# 13-value grid, ~9 of whose alphas are factored): eigh/grid time 1.1 at n = 500, 1.7 at
# 750, 1.9 at 1,000, 4.2 at 2,000, i.e. eigh is worth ~14, 22, 25 and 54 alphas
# (LAPACK's tridiagonalisation is memory bound and falls out of cache as n grows). On an
# H100 eigh is ~6 float64 Choleskys whatever n.
_EIGH_IN_SOLVES = {"cpu": (25.0, 1.0), "cuda": (6.0, 0.0)}
_REFINE_STEPS = 4  # float32 Cholesky + float64 residual steps before falling back to float64
# Normwise backward error ||R|| / (||S + alpha I|| ||X|| + ||B||) accepted per dtype of the Gram:
# a float32 Gram is only known to float32's unit roundoff, solving it further is solving its
# rounding error; a float64 Gram (the exact kernel) is solved to near float64 accuracy.
_BACKWARD_TOL = {torch.float32: 2.0**-24, torch.float64: 1e-13}
_CG_MAX_ITERS = 6  # conjugate gradients instead of a factorisation when provably done in this many
_S64_COPY_BYTES = 256 << 20  # keep a float64 copy of the Gram for the residuals up to this size
_EIGH_FALLBACK_MAX_N = 2000  # an indefinite (rounded) Gram: eigh up to this n, a jittered Cholesky above
# scipy's BLAS and LAPACK (OpenBLAS, 32-bit integers) segfault on a matrix of 2**31 elements
# or more (an (n, n) Gram from n = 46,341 on): no matrix handed to one of their calls has more
# than this many elements. Larger products are tiled; larger factorisations and triangular
# solves go to torch (MKL, 64-bit offsets).
_BLAS_MAX_ELEMENTS = 2**31 - 1
_TILE_BYTES = 256 << 20  # one float32 tile buffer of a tiled ssyrk / sgemm


def auto_alphas(mean_eigenvalue: float) -> np.ndarray:
    """The default grid: ``np.logspace(-6, 6, 13) * mean_eigenvalue``.

    ``mean_eigenvalue = trace(Xc^T Xc) / n_samples``, the mean squared norm of a
    centred sample, i.e. the mean eigenvalue of the (n, n) kernel ``Xc Xc^T``. |XR|^2
    features have an arbitrary scale (n_features, OPU exposure, ...) and a grid relative
    to it is scale-free.
    """
    scale = float(mean_eigenvalue) if mean_eigenvalue > 0 else 1.0
    return np.logspace(-6, 6, 13) * scale


def grid_solver_for(n: int, n_alphas: int, device: torch.device | str, choice: str = "auto") -> str:
    """``"eigh"`` or ``"cholesky"`` for a grid of ``n_alphas`` on an (n, n) system on ``device``."""
    if choice not in _GRID_SOLVERS:
        raise ValueError(f"grid_solver={choice!r} is not one of {_GRID_SOLVERS}.")
    if choice != "auto":
        return choice
    c, p = _EIGH_IN_SOLVES.get(torch.device(device).type, _EIGH_IN_SOLVES["cpu"])
    return "eigh" if n_alphas >= c * (max(int(n), 1) / 1000.0) ** p else "cholesky"


# --- chunked products with centred X, never materialising Xc ---
# ``parts`` is a list of row blocks (n_i, d) standing for their row concatenation.

def _rows_per_chunk(d: int, itemsize: int) -> int:
    return max(1, _CHUNK_BYTES // max(d * itemsize, 1))


def _iter_rows(parts, mu, dtype):
    """Yield (row_offset, Xc_chunk: (r, d) in dtype) over the stacked parts. The chunks share
    one buffer, valid until the next one is yielded (no fresh allocation per chunk)."""
    d = parts[0].shape[1]
    step = _rows_per_chunk(d, 8)
    buf = torch.empty(min(step, max(X.shape[0] for X in parts)), d, dtype=dtype, device=parts[0].device)
    offset = 0
    for X in parts:
        for r0 in range(0, X.shape[0], step):
            chunk = buf[:min(step, X.shape[0] - r0)]
            chunk.copy_(X[r0:r0 + step])  # a copy: centred in place
            if mu is not None:
                chunk.sub_(mu.to(dtype))
            yield offset + r0, chunk
        offset += X.shape[0]


def _iter_cols(parts, mu, dtype):
    """Yield Xc[:, cols] of the stacked parts, (N, c) in dtype, over column chunks; the chunks
    share one buffer, valid until the next one is yielded."""
    n_total, d = sum(X.shape[0] for X in parts), parts[0].shape[1]
    step = min(_rows_per_chunk(n_total, 8), d)
    flat = torch.empty(n_total * step, dtype=dtype, device=parts[0].device)
    for c0 in range(0, d, step):
        w = min(step, d - c0)
        chunk = flat[:n_total * w].view(n_total, w)  # contiguous for BLAS
        r0 = 0
        for X in parts:
            chunk[r0:r0 + X.shape[0]].copy_(X[:, c0:c0 + w])
            r0 += X.shape[0]
        if mu is not None:
            chunk.sub_(mu[c0:c0 + w].to(dtype))
        yield chunk


def _mean(parts) -> torch.Tensor:
    """Column means (d,) float64, in row chunks: X.sum(0, dtype=float64) would copy X to float64."""
    n = sum(X.shape[0] for X in parts)
    total = torch.zeros(parts[0].shape[1], dtype=torch.float64, device=parts[0].device)
    for _, chunk in _iter_rows(parts, None, torch.float64):
        total += chunk.sum(0)
    return total / n


_CONTROLLER = None


def _blas_threads():
    """Context: scipy's BLAS (OpenBLAS) limited to torch's thread count, so that one setting
    (torch.set_num_threads) governs both libraries; two thread pools spinning against each
    other on shared cores made OpenBLAS's potrf 10x slower in measurements here."""
    global _CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=torch.get_num_threads(), user_api="blas")


def _syrk_(C: torch.Tensor, A: torch.Tensor, rows: bool) -> None:
    """C += A A^T (rows=True) or A^T A, float32. On CPU, BLAS ssyrk into C's lower
    triangle only (call ``_symmetrize_`` at the end); elsewhere a full addmm. An output or
    an input past ``_BLAS_MAX_ELEMENTS`` is formed in tiles (``_syrk_tiled_``)."""
    if C.device.type != "cpu" or C.dtype != torch.float32:
        C.addmm_(A, A.T) if rows else C.addmm_(A.T, A)
        return
    from scipy.linalg import blas

    A = A.contiguous()
    if C.numel() > _BLAS_MAX_ELEMENTS or A.numel() > _BLAS_MAX_ELEMENTS:
        _syrk_tiled_(C, A, rows)
        return
    # Row-major A is column-major A^T: ssyrk(trans=1) on it forms A A^T, trans=0 forms A^T A.
    # C's row-major lower triangle is its column-major upper one (lower=0).
    with _blas_threads():
        out = blas.ssyrk(1.0, A.numpy().T, beta=1.0, c=C.numpy().T, trans=1 if rows else 0, lower=0, overwrite_c=1)
    if not np.shares_memory(out, C.numpy()):  # pragma: no cover - scipy copied: keep the result
        C.copy_(torch.from_numpy(out.T))


def _tiles(n: int, most: int) -> list:
    """[0, n) cut into the fewest near-equal ranges of at most ``most``: [(start, stop)]."""
    count = -(-n // max(most, 1))
    bounds = [n * i // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _syrk_tiled_(C: torch.Tensor, A: torch.Tensor, rows: bool) -> None:
    """``_syrk_`` on CPU float32 in tiles, for an (n, n) C or an A past ``_BLAS_MAX_ELEMENTS``.

    With M = A (rows=True) or A^T, C's lower triangle gains M M^T tile by tile: a diagonal
    tile by ssyrk, a tile below it by sgemm, each into one contiguous buffer of at most
    ``_TILE_BYTES`` (beta = 0) then added to C in float32; the inner dimension is cut too,
    so every matrix one BLAS call sees has at most ``_BLAS_MAX_ELEMENTS`` elements (32-bit
    indices: past 2**31 elements scipy's OpenBLAS segfaults). Only numpy and scipy run in
    the loop (see ``_blas_threads``)."""
    from scipy.linalg import blas

    An, Cn = A.numpy(), C.numpy()
    n = Cn.shape[0]
    k = An.shape[1] if rows else An.shape[0]
    side = max(1, math.isqrt(max(1, min(_BLAS_MAX_ELEMENTS, _TILE_BYTES // 4))))
    tiles = _tiles(n, side)
    t_most = max(b - a for a, b in tiles)
    buf = np.empty(t_most * t_most, dtype=np.float32)

    def panel(i0, i1, k0, k1):
        """M[i0:i1, k0:k1] as a Fortran-ordered array P and a flag t: M's block is P^T if t."""
        if rows:
            if k0 == 0 and k1 == k:
                return An[i0:i1].T, 1  # the rows of A, no copy
            return np.ascontiguousarray(An[i0:i1, k0:k1]).T, 1
        return np.ascontiguousarray(An[k0:k1, i0:i1]).T, 0

    with _blas_threads():
        for k0, k1 in _tiles(k, max(1, _BLAS_MAX_ELEMENTS // t_most)):
            panels = [panel(i0, i1, k0, k1) for i0, i1 in tiles]
            for i, (i0, i1) in enumerate(tiles):
                Pi, ti = panels[i]
                w = i1 - i0
                out = buf[:w * w].reshape(w, w)
                out.fill(0.0)  # ssyrk leaves the other triangle as it was
                # the row-major tile is the column-major out.T; its lower triangle is out.T's upper
                res = blas.ssyrk(1.0, Pi, beta=0.0, c=out.T, trans=ti, lower=0, overwrite_c=1)
                np.add(Cn[i0:i1, i0:i1], res.T, out=Cn[i0:i1, i0:i1])
                for j in range(i):
                    j0, j1 = tiles[j]
                    Pj, tj = panels[j]
                    out = buf[:w * (j1 - j0)].reshape(w, j1 - j0)
                    # column-major out.T = M_j M_i^T: op(a) = M_j, op(b) = M_i^T
                    res = blas.sgemm(1.0, Pj, Pi, beta=0.0, c=out.T, trans_a=tj, trans_b=1 - ti, overwrite_c=1)
                    np.add(Cn[i0:i1, j0:j1], res.T, out=Cn[i0:i1, j0:j1])


def _symmetrize_(C: torch.Tensor) -> torch.Tensor:
    """Copy the lower triangle of C over its upper one (CPU float32, after ``_syrk_``)."""
    if C.device.type == "cpu" and C.dtype == torch.float32:
        N = C.shape[0]
        step = max(1, (32 << 20) // max(4 * N, 1))
        for r0 in range(0, N, step):
            r1 = min(r0 + step, N)
            blk = C[r0:r1, r0:r1]
            blk.copy_(torch.tril(blk) + torch.tril(blk, -1).T)
            if r1 < N:
                C[r0:r1, r1:] = C[r1:, r0:r1].T
    return C


def gram(parts, mu, rows: bool = True) -> torch.Tensor:
    """Gram of the stacked parts centred with mu (None: uncentred), float32:
    ``rows=True``: ``Xc Xc^T``, (N, N); ``rows=False``: ``Xc^T Xc``, (d, d)."""
    device = parts[0].device
    if rows:
        N = sum(X.shape[0] for X in parts)
        K = torch.zeros(N, N, dtype=torch.float32, device=device)
        for Xc in _iter_cols(parts, mu, torch.float32):
            _syrk_(K, Xc, rows=True)
    else:
        d = parts[0].shape[1]
        K = torch.zeros(d, d, dtype=torch.float32, device=device)
        for _, Xc in _iter_rows(parts, mu, torch.float32):
            _syrk_(K, Xc, rows=False)
    return _symmetrize_(K)


def _gram_primal(parts, mu) -> torch.Tensor:
    """Xc^T Xc: (d, d) float32."""
    return gram(parts, mu, rows=False)


def _gram_dual(parts, mu) -> torch.Tensor:
    """Xc Xc^T over the stacked rows: (N, N) float32."""
    return gram(parts, mu, rows=True)


def _xt_dot(parts, mu, M) -> torch.Tensor:
    """Xc^T M: (d, c) float64, M: (N, c)."""
    M = M.to(torch.float64)
    # (c, d) += M_rows^T Xc_rows: row-major friendly, ~3x faster than Xc^T M_rows for small c
    out = torch.zeros(M.shape[1], parts[0].shape[1], dtype=torch.float64, device=M.device)
    for r0, Xc in _iter_rows(parts, mu, torch.float64):
        out.addmm_(M[r0:r0 + Xc.shape[0]].T, Xc)
    return out.T


def _x_dot(X, mu, M, dtype=torch.float64) -> torch.Tensor:
    """Xc M: (n, c) in dtype, M: (d, c)."""
    M = M.to(dtype)
    out = torch.empty(X.shape[0], M.shape[1], dtype=dtype, device=M.device)
    for r0, Xc in _iter_rows([X], mu, dtype):
        out[r0:r0 + Xc.shape[0]] = Xc @ M
    return out


def _eigh64(S: torch.Tensor):
    if S.device.type == "cpu" and S.numel() > _BLAS_MAX_ELEMENTS:
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


# --- solving (S + alpha I) X = B for a grid of alphas, S symmetric PSD ---

class _ShiftedSolver:
    """Solves ``(S + alpha I) X = B`` for alpha after alpha, S: (n, n) PSD, not modified.

    ``"eigh"``: one float64 eigendecomposition, each alpha a diagonal rescaling.
    ``"cholesky"``: per alpha a float32 Cholesky with float64 iterative refinement
    (residuals against S's exact values in float64), else a float64 Cholesky; except for
    alphas large enough that conjugate gradients provably converge in a few products with
    S (eigenvalues of S + alpha I within [alpha, alpha + ||S||_F]: at most
    ``_CG_MAX_ITERS`` iterations), which skip the O(n^3) factorisation. Every solution is
    accepted on its true float64 residual (normwise backward error at the Gram's precision,
    ``_BACKWARD_TOL``). ``solve_all`` batches a grid (see the module docstring). S may be
    float32 (the Gram as formed) or float64. Work buffers are allocated once.
    """

    def __init__(self, S: torch.Tensor, method: str, float64_copy: bool = True):
        """``float64_copy=False``: no float64 copy of a float32 S for the residuals (they are
        then converted in row chunks), for a single solve where the copy would not pay."""
        self.method = method
        self.S = S
        self.n_float64 = 0  # alphas that needed a float64 factorisation
        self.n_cg = 0  # alphas solved by conjugate gradients, without a factorisation
        self.n_solved = 0
        self._work32 = self._work64 = self._chunk64 = None
        # On CPU the per-alpha loop runs on numpy arrays and scipy's BLAS/LAPACK only, with no
        # torch (OpenMP) operation between two BLAS calls: interleaving thread pools on shared
        # cores made the same loop ~20 % slower (one library's idle workers spin while the
        # other's threads want the cores). See also ``_dgemm``.
        self._np = S.device.type == "cpu"
        # S in float64 and contiguous (BLAS needs one leading dimension; a view such as the
        # train block of a larger Gram would otherwise be copied by every product) for the
        # residuals: S itself, else a copy when small, else chunked conversion
        if S.dtype == torch.float64 and (S.is_contiguous() or not self._np):
            self._S64 = S
        elif method == "cholesky" and float64_copy and S.numel() * 8 <= _S64_COPY_BYTES:
            self._S64 = S.to(torch.float64, memory_format=torch.contiguous_format, copy=True)
        else:
            self._S64 = None
        if self._np:
            self._S64 = None if self._S64 is None else self._S64.numpy()
        self._tol = _BACKWARD_TOL.get(S.dtype, _BACKWARD_TOL[torch.float32])
        self._s_norm = _frobenius64(S) if method == "cholesky" else 0.0
        if method == "eigh":
            self.lam, self.U = _eigh64(S)

    def solve(self, B: torch.Tensor, alpha: float) -> torch.Tensor:
        """B: (n, c) -> X: (n, c) float64."""
        return self.solve_all(B, [alpha])[0]

    def solve_all(self, B: torch.Tensor, alphas) -> list:
        """``[solve(B, a) for a in alphas]``, batched: the alphas that conjugate gradients
        provably solve iterate together (one product with S per iteration for all of them),
        and the float32 Cholesky solutions are checked by one float64 residual product for
        all alphas; only an alpha whose check fails is refined (its factor recomputed) or
        solved in float64."""
        B = B.to(torch.float64)
        alphas = [float(a) for a in alphas]
        if self.method == "eigh":
            UB = self.U.T @ B
            return [self.U @ (UB / (self.lam + a)[:, None]) for a in alphas]
        out = [None] * len(alphas)
        with _blas_threads():
            Bx = B.numpy() if self._np else B
            cg = [i for i, a in enumerate(alphas) if self._cg_guaranteed(a)]
            for i, X in zip(cg, self._cg([alphas[i] for i in cg], Bx) if cg else []):
                out[i] = X
            self.n_cg += sum(X is not None for X in out)
            todo = [i for i, X in enumerate(out) if X is None]
            # A float32 Gram's float32 Cholesky solutions usually pass unrefined: factor and solve
            # every alpha, then one check for all. A float64 Gram (the exact kernel) is solved to
            # near float64 accuracy, which an unrefined float32 solution never reaches: its alphas
            # go straight to the refining path (no factorisation wasted on a first try).
            quick = self._tol >= _BACKWARD_TOL[torch.float32]
            first = {i: self._factor_solve(Bx, alphas[i]) for i in todo} if quick else {}
            first = {i: X for i, X in first.items() if X is not None}
            if first:
                checked = self._accepted_all(Bx, list(first.values()), [alphas[i] for i in first])
                for (i, X), ok in zip(first.items(), checked):
                    out[i] = X if ok else None
            for i in (first if quick else todo):  # refinement on float64 residuals
                if out[i] is None:
                    out[i] = self._mixed(Bx, alphas[i])
        self.n_solved += len(alphas)
        for i, X in enumerate(out):
            if X is None:
                self.n_float64 += 1
                self._work32 = None  # one (n, n) work buffer at a time
                if self._work64 is None:
                    self._work64 = torch.empty(self.S.shape, dtype=torch.float64, device=self.S.device)
                out[i] = _solve_psd(self.S, B, alphas[i], work=self._work64)
            elif self._np:
                out[i] = torch.from_numpy(np.ascontiguousarray(X))
        return out

    def counts(self) -> dict:
        """How the alphas solved so far were solved."""
        if self.method == "eigh":
            return {"eigh": 1}
        return {"cg": self.n_cg, "cholesky32": self.n_solved - self.n_cg - self.n_float64,
                "cholesky64": self.n_float64}

    def _matvec(self, X, alpha):
        """(S + alpha I) X in float64; X: numpy on CPU (see __init__), a tensor elsewhere;
        alpha a float or one per column of X."""
        if not self._np:
            if not isinstance(alpha, float):
                alpha = torch.as_tensor(alpha, dtype=torch.float64, device=X.device)
            return (_matmul64(self.S, X) if self._S64 is None else self._S64 @ X) + alpha * X
        if self._S64 is not None:  # (called within solve_all's BLAS thread limit)
            return _dgemm(self._S64, X) + alpha * X
        S = self.S.numpy()  # float32: converted in row chunks through one reused buffer
        step = min(S.shape[0], _rows_per_chunk(S.shape[1], 8) // 8)
        if self._chunk64 is None:
            self._chunk64 = np.empty((step, S.shape[1]), dtype=np.float64)
        out = np.empty(X.shape, dtype=np.float64)
        for r0 in range(0, S.shape[0], step):
            r1 = min(r0 + step, S.shape[0])
            buf = self._chunk64[:r1 - r0]
            np.copyto(buf, S[r0:r1])
            out[r0:r1] = _dgemm(buf, X)
        return out + alpha * X

    def _accepted(self, R, X, B, alpha) -> bool:
        """Normwise backward error ||R|| / (||S + alpha I|| ||X|| + ||B||) within tolerance."""
        a_norm = self._s_norm + alpha * self.S.shape[0] ** 0.5  # ||S + alpha I||_F, bounded
        return _norm(R) <= self._tol * (a_norm * _norm(X) + _norm(B))

    def _accepted_all(self, B, Xs, alphas) -> list:
        """``_accepted`` of each (X, alpha) on its true residual, from one product with S."""
        c = B.shape[1]
        cat = np.concatenate if self._np else torch.cat
        R = cat([B] * len(Xs), 1) - self._matvec(cat(Xs, 1), np.repeat(alphas, c))
        return [self._accepted(R[:, j * c:(j + 1) * c], X, B, a) for j, (X, a) in enumerate(zip(Xs, alphas))]

    def _cg_guaranteed(self, alpha) -> bool:
        """Whether the condition bound 1 + ||S||_F / alpha guarantees conjugate gradients reach
        the tolerance in ``_CG_MAX_ITERS`` iterations."""
        kappa = 1.0 + self._s_norm / alpha
        rate = (kappa**0.5 - 1.0) / (kappa**0.5 + 1.0)  # error reduction per iteration, at worst
        return rate <= 0 or math.log(rate) * _CG_MAX_ITERS <= math.log(self._tol / 2)

    def _cg(self, alphas, B):
        """Conjugate gradients for (S + a I) X = B for every a in alphas at once (each column
        its own recursion, one product with S per iteration for all): the solutions, None
        for an alpha whose true residual is not accepted (the Cholesky path then solves it)."""
        tiny = np.finfo(np.float64).tiny  # numpy arrays on CPU, tensors elsewhere: same operators
        c, k = B.shape[1], len(alphas)
        a = np.repeat(alphas, c)  # one alpha per column
        B_all = np.concatenate([B] * k, 1) if self._np else torch.cat([B] * k, 1)
        X, R, P = B_all * 0.0, B_all * 1.0, B_all * 1.0
        rs = (R * R).sum(0)
        groups = [slice(j * c, (j + 1) * c) for j in range(k)]

        def accepted(R):
            return [self._accepted(R[:, g], X[:, g], B, al) for g, al in zip(groups, alphas)]

        for _ in range(_CG_MAX_ITERS + 2):
            if all(accepted(R)):
                break
            Q = self._matvec(P, a)
            step = rs / _at_least((P * Q).sum(0), tiny)
            X += step * P
            R -= step * Q
            rs_new = (R * R).sum(0)
            P = R + (rs_new / _at_least(rs, tiny)) * P
            rs = rs_new
        ok = accepted(B_all - self._matvec(X, a))  # the true residual, not the recursion's
        return [X[:, g] * 1.0 if good else None for g, good in zip(groups, ok)]

    def _factor32(self, alpha):
        """Float32 Cholesky factor of S + alpha I in the one float32 work buffer (None when the
        factorisation breaks down)."""
        if self._work32 is None:
            self._work64 = None
            self._work32 = torch.empty(self.S.shape, dtype=torch.float32, device=self.S.device)
        return _cholesky_shifted(self.S, alpha, self._work32)

    def _factor_solve(self, B, alpha):
        """A float32 Cholesky solve (None when the factorisation breaks down)."""
        factor = self._factor32(alpha)
        return None if factor is None else _as_float64(_cholesky_solve(B, factor))

    def _mixed(self, B, alpha):
        """Float32 Cholesky with refinement on float64 residuals; None when it does not converge."""
        factor = self._factor32(alpha)
        if factor is None:
            return None
        X = _as_float64(_cholesky_solve(B, factor))
        for step in range(_REFINE_STEPS + 1):
            R = B - self._matvec(X, alpha)
            if self._accepted(R, X, B, alpha):
                return X
            if step < _REFINE_STEPS:
                X += _as_float64(_cholesky_solve(R, factor))
        return None


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
        if w.size > _BLAS_MAX_ELEMENTS:
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
        with _blas_threads():
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
    if F.device.type == "cpu" and upper and F.numel() > _BLAS_MAX_ELEMENTS:
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
        with _blas_threads():
            x, info = potrs(F.numpy().T, Bn, lower=1)
        if info != 0:  # pragma: no cover - only for invalid arguments
            raise RuntimeError(f"LAPACK potrs failed (info={info}).")
        return x if isinstance(B, np.ndarray) else torch.from_numpy(np.ascontiguousarray(x))
    return torch.cholesky_solve(B.to(F.dtype), F, upper=upper)


def _dgemm(A: np.ndarray, X: np.ndarray) -> np.ndarray:
    """A @ X in float64 by scipy's BLAS. numpy and scipy each ship their own OpenBLAS, each
    with its own thread pool: mixing numpy's matmul with scipy's LAPACK in one loop leaves
    one library's idle workers spinning on the cores the other needs (a 2.5 ms product took
    ~40 ms right after a scipy potrf). The CPU solves therefore use scipy's BLAS only."""
    from scipy.linalg import blas

    if A.size > _BLAS_MAX_ELEMENTS or X.size > _BLAS_MAX_ELEMENTS:
        # past scipy's 32-bit indexing: in blocks within it (whole rows of a C-ordered A where
        # they fit, views without a copy)
        m, inner = A.shape
        c = X.shape[1]
        kb = min(inner, _BLAS_MAX_ELEMENTS)
        rb = max(1, _BLAS_MAX_ELEMENTS // kb)
        cb = max(1, min(_BLAS_MAX_ELEMENTS // kb, _BLAS_MAX_ELEMENTS // rb))
        out = np.zeros((m, c), dtype=np.float64)
        for r0 in range(0, m, rb):
            for k0 in range(0, inner, kb):
                for c0 in range(0, c, cb):
                    out[r0:r0 + rb, c0:c0 + cb] += _dgemm(A[r0:r0 + rb, k0:k0 + kb], X[k0:k0 + kb, c0:c0 + cb])
        return out
    # Row-major A is column-major A^T: trans_a=1 gives A back, without a copy.
    a, ta = (A.T, 1) if A.flags.c_contiguous else (A, 0)
    b, tb = (X.T, 1) if X.flags.c_contiguous else (X, 0)
    return blas.dgemm(1.0, a, b, trans_a=ta, trans_b=tb)


def _as_float64(A):
    return A.astype(np.float64, copy=False) if isinstance(A, np.ndarray) else A.to(torch.float64)


def _norm(A) -> float:
    """Frobenius norm of a numpy array or a tensor, as a float."""
    return math.sqrt(float((A * A).sum()))


def _at_least(v, floor: float):
    return np.maximum(v, floor) if isinstance(v, np.ndarray) else v.clamp_min(floor)


def _centre_rows_cols_(K: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
    """C K C with C = I - 11^T/N, in place, for a symmetric K: K - 1 m^T - m 1^T + mean(m),
    m the column means (accumulated in float64; pass them when already known)."""
    m = _col_means64(K) if m is None else m
    K.sub_(m.to(K.dtype)[None, :]).sub_(m.to(K.dtype)[:, None]).add_(float(m.mean()))
    return K


def _col_means64(K: torch.Tensor) -> torch.Tensor:
    """Column means in float64 over row chunks (``K.mean(0, dtype=float64)`` would first
    make a float64 copy of all of K)."""
    step = _rows_per_chunk(K.shape[1], 8)
    total = torch.zeros(K.shape[1], dtype=torch.float64, device=K.device)
    for r0 in range(0, K.shape[0], step):
        total += K[r0:r0 + step].sum(0, dtype=torch.float64)
    return total / K.shape[0]


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
    or N after the refit on train + validation); ``grid_solver``; ``n_float64`` (alphas
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
    scores, betas, preds = None, {}, None
    if has_val:
        betas = dict(zip(map(float, alphas), solver.solve_all(Ytr - y_mean, alphas)))
        # every alpha's validation scores in one pass over the cross-kernel
        c = Y.shape[1]
        S_all = _matmul64(Kz[n_train:, :n_train], torch.cat(list(betas.values()), 1)) + y_mean.repeat(len(alphas))
        scores = [_accuracy(S_all[:, i * c:(i + 1) * c], yv_idx) for i in range(len(alphas))]
        preds = [_predicted_index(S_all[:, i * c:(i + 1) * c]) for i in range(len(alphas))]
        del S_all
        best = max(range(len(alphas)), key=lambda i: (scores[i], alphas[i]))
        alpha = float(alphas[best])
    else:
        alpha = float(alphas[0])
    counts = solver.counts()
    n_float64 = solver.n_float64
    if has_val and refit:
        del solver, betas  # their buffers, before the (N, N) refit
        y_all = Y.mean(0) if fit_intercept else zero
        # offset = y_all - mean_j (Kz beta)_j = y_all - colmeans(Kz) . beta, read before Kz is centred
        a = _col_means64(Kz) if fit_intercept else None
        K_all = Kz if overwrite_gram else Kz.clone()
        if fit_intercept:
            _centre_rows_cols_(K_all, a)  # train + validation centred with their own mean
        beta = _ShiftedSolver(K_all, "cholesky", float64_copy=False).solve(Y - y_all, alpha)
        del K_all
        offset = y_all - a @ beta if fit_intercept else zero
        n_used = N
    else:
        beta = betas.get(alpha)
        if beta is None:
            beta = solver.solve(Ytr - y_mean, alpha)
        offset = y_mean - _matmul64(K_tt, beta).mean(0) if fit_intercept else zero  # ~y_mean
        n_used = n_train
    return {"alpha": alpha, "scores": scores, "beta": beta, "offset": offset, "n_used": n_used,
            "grid_solver": method, "n_float64": n_float64, "solve_counts": counts,
            "predictions": preds}


def _frobenius64(K: torch.Tensor) -> float:
    """||K||_F accumulated in float64 over row chunks (no float64 copy of K)."""
    step = _rows_per_chunk(K.shape[1], 8)
    return math.sqrt(sum(float(torch.linalg.vector_norm(K[r0:r0 + step], dtype=torch.float64)) ** 2
                         for r0 in range(0, K.shape[0], step)))


def _matmul64(K: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """K @ M in float64 for a float32 or float64 K, in row chunks (no float64 copy of K)."""
    if K.dtype == torch.float64:
        return K @ M
    step = _rows_per_chunk(K.shape[1], 8)
    return torch.cat([K[r0:r0 + step].to(torch.float64) @ M for r0 in range(0, K.shape[0], step)])


# --- the estimator ---

class _ClassifierBase:
    """What the ridge classifiers share (``RidgeClassifier``, ``projector.kernel``'s and
    ``projector.streaming``'s): the alpha grid, labels from scores, accuracy, repr.
    Subclasses provide ``decision_function`` and ``classes_``."""

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

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"


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
        device, see the module docstring), "eigh" or "cholesky".

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
    val_predictions_ : {alpha: predicted class indices (n_val,)} of the train-only fit at
        each alpha, with validation data (else None).
    cv_ : "validation", "loo" or None.
    solver_ : the solver of the final coef_, "primal" or "dual".
    grid_solver_ : "eigh" or "cholesky" (None when no grid was solved).
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

    # -- fit --

    def fit(self, X, y, X_val=None, y_val=None) -> "RidgeClassifier":
        """X: (n_samples, n_features), y: (n_samples,) labels;
        optional X_val: (n_val, n_features), y_val: (n_val,)."""
        X = _check_2d(X, "RidgeClassifier.fit")
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver={self.solver!r} is not one of {_SOLVERS}.")
        if self.grid_solver not in _GRID_SOLVERS:
            raise ValueError(f"grid_solver={self.grid_solver!r} is not one of {_GRID_SOLVERS}.")
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
        self.grid_solver_ = None
        self.solve_counts_ = None
        self.val_predictions_ = None

        if X_val is None and self.alphas is not None and np.size(self.alphas) == 1:
            # one alpha, nothing to choose: a single Cholesky solve, no eigendecomposition
            self.alphas_ = self._resolve_alphas(1.0)
            self.alpha_, self.cv_, self.val_scores_ = float(self.alphas_[0]), None, None
            return self._set_coef(*self._solve_once([X], Y, self.alpha_), X.device)
        if X_val is not None:
            return self._fit_validation(X, Y, X_val, _binarize(yv_idx, len(self.classes_)), yv_idx)
        return self._fit_loo(X, Y, y_idx)

    def _fit_validation(self, X, Y, X_val, Yv, yv_idx) -> "RidgeClassifier":
        """The grid scored on validation data, then (refit) train + validation at alpha_."""
        n, d = X.shape
        solver = self._solver_for(n, d)
        mu = _mean([X]) if self.fit_intercept else None
        y_mean = Y.mean(0) if self.fit_intercept else torch.zeros(Y.shape[1], dtype=torch.float64, device=X.device)
        if solver == "dual":
            # One Gram of train + validation rows centred with the training mean serves
            # the train kernel, the validation cross-kernel and the refit.
            Kz = gram([X, X_val], mu, rows=True)
            trace = float(Kz[:n, :n].diagonal().sum(dtype=torch.float64))
            self.alphas_ = alphas = self._resolve_alphas(trace / n)
            fit = dual_fit(Kz, torch.cat([Y, Yv]), n, yv_idx, alphas, self.grid_solver, self.refit,
                           fit_intercept=self.fit_intercept, overwrite_gram=True)
            del Kz
            parts = [X, X_val] if fit["n_used"] > n else [X]
            W = _xt_dot(parts, mu, fit["beta"])  # beta sums to 0: any centring gives W
            b = fit["offset"] - (mu @ W if mu is not None else 0.0)
            self.grid_solver_ = fit["grid_solver"]
            self.solve_counts_ = fit["solve_counts"]
            scores, preds = fit["scores"], fit["predictions"]
            self.alpha_ = fit["alpha"]
        else:
            G = gram([X], mu, rows=False)
            trace = float(G.diagonal().sum(dtype=torch.float64))
            self.alphas_ = alphas = self._resolve_alphas(trace / n)
            Yc = Y - y_mean
            B = _xt_dot([X], mu, Yc)  # (d, c): Xc^T Yc
            method = grid_solver_for(d, len(alphas), X.device, self.grid_solver)
            shifted = _ShiftedSolver(G, method)
            Zv = None
            if method == "eigh":  # validation rows in the eigenbasis, once
                Zv = _x_dot(X_val, mu, shifted.U.to(torch.float32), torch.float32).double()
                W0 = shifted.U.T @ B
            scores, weights, preds = [], {}, []
            if method == "eigh":
                S_all = [Zv @ (W0 / (shifted.lam + a)[:, None]) for a in alphas]
            else:
                weights = dict(zip(map(float, alphas), shifted.solve_all(B, alphas)))
                # every alpha's validation scores in one pass over X_val
                c = B.shape[1]
                S_cat = _x_dot(X_val, mu, torch.cat(list(weights.values()), 1))
                S_all = [S_cat[:, i * c:(i + 1) * c] for i in range(len(alphas))]
            for S in S_all:
                S = S + y_mean
                scores.append(_accuracy(S, yv_idx))
                preds.append(_predicted_index(S))
            best = max(range(len(alphas)), key=lambda i: (scores[i], alphas[i]))
            self.alpha_ = alpha = float(alphas[best])
            self.grid_solver_ = method
            self.solve_counts_ = shifted.counts()
            if self.refit:
                W, b = self._refit_primal(X_val, Y, Yv, G, B, mu, alpha)
            else:
                W = weights.get(alpha)
                if W is None:
                    W = shifted.solve(B, alpha)
                b = y_mean - (mu @ W if mu is not None else 0.0)
            del G
        self.cv_ = "validation"
        self.val_scores_ = {float(a): float(s) for a, s in zip(self.alphas_, scores)}
        self.val_predictions_ = {float(a): p for a, p in zip(self.alphas_, preds)}
        self.solver_ = solver
        return self._set_coef(W, b, X.device)

    def _refit_primal(self, X_val, Y, Yv, G_tr, B_tr, mu, alpha):
        """Train + validation at alpha from the training statistics and one pass over the
        validation rows. With z = x - mu (train mean) and delta = mu_all - mu:
        sum_all (x - mu_all)(x - mu_all)^T = G_tr + Zv^T Zv - N delta delta^T and, since
        the train z sum to zero and the centred labels of all rows too,
        sum_all (x - mu_all)(y - y_all)^T = B_tr + Zv^T (Yv - y_all)."""
        n, nv = Y.shape[0], X_val.shape[0]
        N = n + nv
        G = G_tr.to(torch.float64) + gram([X_val], mu, rows=False).to(torch.float64)
        if self.fit_intercept:
            mu_all = (n * mu + nv * _mean([X_val])) / N
            delta = mu_all - mu
            G.sub_(N * torch.outer(delta, delta))
            y_all = torch.cat([Y, Yv]).mean(0)
        else:
            mu_all, y_all = None, torch.zeros(Y.shape[1], dtype=torch.float64, device=X_val.device)
        W = _solve_psd(G, B_tr + _xt_dot([X_val], mu, Yv - y_all), alpha)
        return W, y_all - (mu_all @ W if mu_all is not None else 0.0)

    def _fit_loo(self, X, Y, y_idx) -> "RidgeClassifier":
        """No validation data: one eigendecomposition, exact leave-one-out over the grid."""
        n, d = X.shape
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
            # with an intercept, the constant direction split off exactly (not eigh's rounded "zero")
            lam, U = _eigh64_centred(K) if self.fit_intercept else _eigh64(K)
            del K
            W0 = U.T @ Yc  # (n, c)
        alphas = self._resolve_alphas(trace / n)
        self.alphas_ = alphas
        self.cv_, self.val_scores_ = None, None
        if len(alphas) > 1:
            accs = self._loo_accuracies(X, mu, solver, lam, V if solver == "primal" else U, W0, Yc, y_mean, y_idx, alphas)
            self.cv_ = "loo"
            self.grid_solver_ = "eigh"
            self.val_scores_ = {float(a): float(s) for a, s in zip(alphas, accs)}
            best = max(range(len(alphas)), key=lambda i: (accs[i], alphas[i]))
            alpha = float(alphas[best])
        else:
            alpha = float(alphas[0])
        self.alpha_ = alpha
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

    def _loo_accuracies(self, X, mu, solver, lam, vecs, W0, Yc, y_mean, y_idx, alphas):
        """Exact leave-one-out accuracy for every alpha.

        Ridge with an unpenalised intercept is a linear smoother with hat matrix
        ``H = 11^T/n + Kc (Kc + alpha I)^-1``; the left-out prediction of sample i is
        ``y_i - (y_i - yhat_i) / (1 - H_ii)``. With coordinates ``Q`` of the samples in
        the eigenbasis (primal: ``Xc V``; dual: ``U diag(lam)``),
        ``yhat = Q (W0 / (lam + alpha)) + ymean`` and ``H_ii = 1/n + sum_j Q_ij^2 / (lam_j + alpha)``
        (primal) or ``1/n + sum_j U_ij^2 lam_j / (lam_j + alpha)`` (dual); the 1/n term
        only with an intercept. With an intercept the dual eigenbasis spans the complement of
        the constant vector exactly (``_eigh64_centred``): 11^T/n is the constant direction's
        whole share of H.
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

    @property
    def weight_bytes(self) -> int:
        """Bytes of what predict needs: coef_ plus intercept_ (when fitted)."""
        _check_fitted(self, "coef_")
        return self.coef_.nbytes + (self.intercept_.nbytes if self.fit_intercept else 0)


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


def _predicted_index(S) -> torch.Tensor:
    """S: (n, c) scores -> predicted class indices (n,); c == 1 is a binary sign decision."""
    return (S[:, 0] > 0).long() if S.shape[1] == 1 else S.argmax(dim=1)


def _accuracy(S, y_idx) -> float:
    """S: (n, c) scores; c == 1 means a binary sign decision."""
    pred = (S[:, 0] > 0).long() if S.shape[1] == 1 else S.argmax(dim=1)
    return float((pred == y_idx).double().mean()) if len(y_idx) else float("nan")


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
