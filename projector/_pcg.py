"""Preconditioned conjugate gradients for ``(S + alpha I) X = B`` over a grid of alphas, S (n, n)
a float32 PSD Gram held once (never copied, never factorised): the kernel's solver past the sizes
where a factorisation per alpha fits in memory or time (Falkon, Rudi et al. 2017; EigenPro, Ma &
Belkin 2017-2019: a low-rank preconditioner shared by every right-hand side).

* Preconditioner: a rank-r Nystroem approximation ``S ~ F F^T`` by block randomly pivoted
  partial Cholesky (Chen, Epperly, Tropp & Webber 2022: pivots drawn in proportion to the
  residual diagonal; O(n r^2) work, r columns of S read), turned once into its eigenpairs
  ``F F^T = U diag(lam) U^T``. For every alpha, ``(U diag(lam) U^T + alpha I)^-1 =
  U diag(1 / (lam + alpha)) U^T + (I - U U^T) / alpha`` (Woodbury): one (n, r) product each way.
  With it the eigenvalues of the preconditioned system lie in ``[1, 1 + lam_{r+1}(S) / alpha]``
  up to the approximation's error, instead of ``[1, 1 + lam_1(S) / alpha]``.
* Iteration: every (alpha, class) column runs its own recursion, but all share one float32 GEMM
  of S with the (n, n_active) block of search directions per iteration; a column stops when its
  relative residual ``||b - (S + alpha I) x|| / ||b||`` is within ``tol``.
* Check: the final residual is recomputed against S in float64 (row chunks of S converted, no
  float64 copy); where float32 products left it above ``tol`` the iteration restarts from it.

Accuracy: ``S + alpha I`` has all eigenvalues >= alpha, so ``||x - x*|| <= ||r|| / alpha`` for
residual r: a relative residual ``tol`` bounds the error of each column by ``tol ||b|| / alpha``
and the change of a decision value ``k(x) . beta`` by ``||k(x)|| tol ||b|| / alpha``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from projector._linalg import _matmul64, _rows_per_chunk

__all__ = ["PCGGrid", "nystrom_eig", "use_iterative", "direct_bytes", "iterative_bytes"]

_TOL = 1e-5  # relative residual per column
_MAX_ITERS = 2_000
_RESTARTS = 3  # restarts from the float64 residual after float32 products drifted
# A column stops, unconverged, when its residual is not finite or has not halved its best in this many
# iterations: an alpha below what the float32 kernel resolves stalls for ever (on all of CIFAR-10 the
# grid's smallest, 1e-6 of the mean eigenvalue, ran 1,161 iterations, most of the fit, and ended in NaN).
_STALL_ITERS = 100
_BLOCK = 64  # pivots drawn per step of the partial Cholesky
_GEMM_BYTES = 256 << 20  # row chunk of S per float32 product


# The exact kernel switches from a factorisation per alpha to conjugate gradients from this many
# train + validation rows, or where the direct path's matrices would not fit in memory. Flop
# counts: ~9 float32 Choleskys of n^3/3 against ~70-150 products of 2 n^2 x (13 alphas x 10
# classes), the factorisations' share growing with n. Measured on real MobileNetV2 sign features
# (CIFAR-10, 9,000 + 1,000 rows, 2 shared cores, refit included): 24 s by conjugate gradients
# against 176 s direct on a quiet machine (184 s against 462 s without refit under load), same
# alpha, test predictions agreeing on 99.9-100 %. Kept at 15,000 so that the cells measured so far (up to 13,000
# rows, e.g. the seeds' STL-10 shape) keep their direct, float64 solve.
CG_FROM_ROWS = 15_000


def direct_bytes(n_fit: int, n_train: int) -> int:
    """Peak bytes of the direct path: the (N, N) Gram in float32 and the kernel in float64,
    plus two (n, n) float64 factorisation buffers."""
    return int(n_fit**2 * (4 + 8) + 2 * n_train**2 * 8)


def iterative_bytes(n_fit: int, n_train: int, n_columns: int = 130) -> int:
    """Peak bytes of the conjugate-gradient path: one (N, N) float32 Gram, the preconditioner's
    factor and eigenvectors (n, r) float64 twice, ~16 (N, alphas x classes) float64 blocks
    and a 256 MB row chunk."""
    return int(n_fit**2 * 4 + 2 * n_fit * default_rank(n_fit) * 8 + 16 * n_fit * n_columns * 8 + (256 << 20))


def use_iterative(choice: str, n_fit: int, n_train: int, device) -> bool:
    """Whether the kernel is solved by conjugate gradients: ``grid_solver="cg"``, or "auto"
    from ``CG_FROM_ROWS`` rows on or where the direct path would not fit in free memory."""
    if choice != "auto":
        return choice == "cg"
    from projector._random_matrix import available_memory_bytes

    return n_fit >= CG_FROM_ROWS or direct_bytes(n_fit, n_train) > available_memory_bytes(device)


def default_rank(n: int) -> int:
    """Preconditioner rank for an (n, n) system: 10 sqrt(n), within [64, 2,000] (Falkon takes
    ~sqrt(n) centres as its model; here the Gram is exact and r only buys fewer iterations). At
    45,000 rows its (n, r) float64 factor is 0.7 GB beside the Gram's 8.1 GB."""
    return int(min(n, 2_000, max(64, 10 * math.isqrt(max(n, 1)))))


def nystrom_eig(column, diag: torch.Tensor, rank: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs (U: (n, k) float64 orthonormal, lam: (k,)) of a rank-k <= rank Nystroem
    approximation of a PSD S from its diagonal (n,) and ``column(idx) -> S[:, idx]`` float64
    (n, len(idx)), by block randomly pivoted partial Cholesky."""
    n = diag.numel()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    d = diag.to(torch.float64).clamp_min(0.0).clone()
    total = float(d.sum())
    F = torch.zeros(n, rank, dtype=torch.float64, device=diag.device)
    k = 0
    while k < rank and float(d.sum()) > 1e-12 * total:
        b = min(_BLOCK, rank - k)
        idx = torch.multinomial(d.cpu(), b, replacement=True, generator=gen).unique().to(diag.device)
        G = column(idx)
        if k:
            G -= F[:, :k] @ F[idx, :k].T
        lam, Q = torch.linalg.eigh((G[idx] + G[idx].T) / 2)
        keep = lam > 1e-12 * abs(float(lam.max()))  # numerically zero: already spanned
        keep &= lam > 0
        if not bool(keep.any()):
            break
        Fn = G @ (Q[:, keep] / lam[keep].sqrt())
        t = min(Fn.shape[1], rank - k)
        F[:, k:k + t] = Fn[:, -t:]  # eigh ascends: the largest directions
        k += t
        d -= Fn[:, -t:].square().sum(1)
        d.clamp_min_(0.0)
        d[idx] = 0.0
    F = F[:, :k]
    s2, V = torch.linalg.eigh(F.T @ F)  # F F^T = (F V s^-1) s^2 (F V s^-1)^T
    keep = s2 > 1e-12 * float(s2.max()) if k else s2 > 0
    return F @ (V[:, keep] / s2[keep].sqrt()), s2[keep]


class PCGGrid:
    """``(S + alpha I)^-1 B`` for a grid of alphas by preconditioned conjugate gradients.

    S: (n, n) float32 (any row stride: a block of a larger Gram is used in place) or float64,
    symmetric PSD, never modified. ``solve_all(B, alphas)`` solves every (alpha, column of B)
    at once; ``info`` then holds, per alpha, the iterations and the final relative residual
    (float64), ``iterations`` (products with S), ``rank`` (the preconditioner's) and
    ``converged`` (alphas that reached ``tol``).
    """

    method = "cg"
    n_float64 = 0

    def __init__(self, S: torch.Tensor, float64_copy: bool = True, tol: float = _TOL,
                 rank: int | None = None, max_iter: int = _MAX_ITERS, seed: int = 0):
        self.S, self.tol, self.max_iter = S, float(tol), int(max_iter)
        n = S.shape[0]
        self.rank = default_rank(n) if rank is None else int(min(rank, n))
        self.U, self.lam = nystrom_eig(lambda idx: S[:, idx].to(torch.float64), S.diagonal(), self.rank, seed)
        self.info = {"solver": "pcg", "preconditioner": "nystrom-rpcholesky", "rank": int(self.lam.numel()),
                     "tol": self.tol, "iterations": 0, "alphas": {}}

    def solve(self, B: torch.Tensor, alpha: float) -> torch.Tensor:
        """B: (n, c) -> X: (n, c) float64, for one ``alpha``."""
        return self.solve_all(B, [alpha])[0]

    def counts(self) -> dict:
        """How the solves went so far: ``cg`` (alphas solved) and ``iterations`` (products with S)."""
        return {"cg": len(self.info["alphas"]), "iterations": self.info["iterations"]}

    def _product(self, P: torch.Tensor) -> torch.Tensor:
        """S P in float64 from float32 GEMMs over row chunks of S (P: (n, k) float64)."""
        if self.S.dtype == torch.float64:
            return self.S @ P
        P32 = P.to(torch.float32)
        out = torch.empty(P.shape, dtype=torch.float64, device=P.device)
        step = max(1, _GEMM_BYTES // max(4 * self.S.shape[1], 1))
        for r0 in range(0, self.S.shape[0], step):
            out[r0:r0 + step] = torch.mm(self.S[r0:r0 + step], P32)
        return out

    def _precondition(self, R, a):
        """M_a^-1 R for the per-column alphas a (k,): R / a + U ((U^T R) (1/(lam + a) - 1/a))."""
        T = self.U.T @ R
        T *= 1.0 / (self.lam[:, None] + a) - 1.0 / a
        return R / a + self.U @ T

    def solve_all(self, B: torch.Tensor, alphas) -> list:
        """B: (n, c) -> [(n, c) float64 for each alpha]."""
        B = B.to(torch.float64)
        c, alphas = B.shape[1], [float(x) for x in alphas]
        a = torch.tensor(np.repeat(alphas, c), dtype=torch.float64, device=B.device)
        B_all = B.repeat(1, len(alphas))
        b_norm = B_all.norm(dim=0).clamp_min(torch.finfo(torch.float64).tiny)
        X = torch.zeros_like(B_all)
        R = B_all.clone()
        iters = torch.zeros(len(a), dtype=torch.int64)
        given_up = torch.zeros(len(a), dtype=torch.bool)  # stalled columns: not restarted (they would stall again)
        for _ in range(_RESTARTS + 1):
            self._iterate(X, R, a, b_norm, iters, given_up)
            R = B_all - _matmul64(self.S, X) - a * X  # the true residual, float64 accumulation
            if bool(((R.norm(dim=0) <= self.tol * b_norm) | given_up.to(R.device)).all()) \
                    or int(iters.max()) >= self.max_iter:
                break
        rel = (R.norm(dim=0) / b_norm).view(len(alphas), c).amax(1)
        for i, al in enumerate(alphas):
            self.info["alphas"][f"{al:.6g}"] = {"iterations": int(iters[i * c:(i + 1) * c].max()),
                                       "relative_residual": float(rel[i]),
                                       "converged": bool(rel[i] <= 10 * self.tol)}
        finite = rel[torch.isfinite(rel)]
        worst = float(finite.max()) if len(finite) == len(rel) else float("inf")
        self.info["max_relative_residual"] = max(worst, self.info.get("max_relative_residual", 0.0))
        return [X[:, i * c:(i + 1) * c].clone() for i in range(len(alphas))]

    def _iterate(self, X, R, a, b_norm, iters, given_up) -> None:
        """CG from (X, R) in place, each column its own recursion, one product with S for the
        active columns per iteration. The active columns are kept compacted (contiguous) and
        written back when they stop."""
        tiny = torch.finfo(torch.float64).tiny
        cols = torch.nonzero((R.norm(dim=0) > self.tol * b_norm) & ~given_up.to(R.device)).flatten()
        if not len(cols):
            return
        Xa, Ra, aa, bn = X[:, cols], R[:, cols], a[cols], b_norm[cols]
        Z = self._precondition(Ra, aa)
        P, rz = Z, (Ra * Z).sum(0)
        n_it = 0
        best = Ra.norm(dim=0) / bn  # per column: its best relative residual, and when it last halved
        best_at = torch.zeros(len(cols), dtype=torch.int64)
        while len(cols):
            Q = self._product(P)
            Q += aa * P
            step = rz / (P * Q).sum(0).clamp_min(tiny)
            Xa += step * P
            Ra -= step * Q
            n_it += 1
            rel = Ra.norm(dim=0) / bn
            halved = rel <= 0.5 * best
            best = torch.where(halved, rel, best)
            best_at = torch.where(halved.cpu(), torch.full_like(best_at, n_it), best_at)
            stalled = ~torch.isfinite(rel).cpu() | (n_it - best_at >= _STALL_ITERS)
            if bool(stalled.any()):  # given up: the float64 residual check reports it
                given_up[cols[stalled.to(cols.device)].cpu()] = True
            live = (rel > self.tol) & ~stalled.to(rel.device)
            out_of_iters = int(iters.max()) + n_it >= self.max_iter
            if out_of_iters or not bool(live.all()):
                done = cols if out_of_iters else cols[~live]
                keep = torch.zeros(len(cols), dtype=torch.bool) if out_of_iters else live
                X[:, done], R[:, done] = Xa[:, ~keep], Ra[:, ~keep]
                iters[done.cpu()] += n_it
                cols, Xa, Ra, P, rz, aa, bn = (cols[keep], Xa[:, keep], Ra[:, keep], P[:, keep], rz[keep],
                                               aa[keep], bn[keep])
                best, best_at = best[keep], best_at[keep.cpu()]
            self.info["iterations"] += 1
            if not len(cols):
                break
            Z = self._precondition(Ra, aa)
            rz_new = (Ra * Z).sum(0)
            P = Z + (rz_new / rz.clamp_min(tiny)) * P
            rz = rz_new
