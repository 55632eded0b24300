"""Solvers of ``(S + alpha I) X = B`` for a grid of alphas, S (n, n) symmetric PSD: the grid
solvers in one dictionary, ``GRID_SOLVERS``, and the rule that picks one (``grid_solver_for``).

* ``"eigh"``: one float64 eigendecomposition, then every alpha is a diagonal rescaling;
* ``"cg"``: preconditioned conjugate gradients (``projector._pcg``): S held once, never
  factorised or copied, for Grams too large for a factorisation per alpha;
* ``"cholesky"``: one Cholesky factorisation per alpha, in float32 with iterative refinement
  on float64 residuals, in float64 when that does not converge; alphas so large that
  conjugate gradients provably converge in a few products with S (alpha above ~10 ||S||_F)
  skip the factorisation.

Each solution is accepted on its true float64 residual when its normwise backward error is
within the precision the Gram was formed in (float32's unit roundoff for the Gram of float32
features, 1e-13 for a float64 kernel): solving further would only resolve the Gram's own
rounding. The grid is solved in batches: the conjugate-gradient alphas iterate together, one
product with S per iteration for all of them, and the float32 Cholesky solutions of all other
alphas are checked by one float64 product; only an alpha that fails its check is refined or
solved again in float64. On CPU this loop runs on numpy arrays with scipy's BLAS and LAPACK
for every product and factorisation: no torch (OpenMP) operation and no numpy matmul (numpy
ships a second OpenBLAS) in between. Thread pools of different libraries contending for 2
cores made the loop 20 % to 2x slower.

On 2 CPU cores a float64 ``eigh`` costs as much as ~25 batched per-alpha solves at n = 1,000
and ~54 at n = 2,000 (LAPACK's tridiagonalisation is memory bound), so a 13-value grid is
solved by ``eigh`` up to n ~ 500 and by Cholesky above; on CUDA ``eigh`` is cheap and wins
from ~6 alphas on.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from projector._factor import _cholesky_shifted, _cholesky_solve, _eigh64, _solve_psd
from projector._pcg import PCGGrid
from projector._linalg import (
    _as_float64,
    _at_least,
    _blas_threads,
    _dgemm,
    _frobenius64,
    _matmul64,
    _norm,
    _rows_per_chunk,
)

__all__ = ["GRID_SOLVERS", "grid_solver_for", "solve_grid"]

_GRID_SOLVER_CHOICES = ("auto", "eigh", "cholesky", "cg")
# Cost of one float64 eigh in per-alpha solves of the same (n, n) matrix, i.e. the
# break-even grid size, ``c * (n / 1000) ** p``. Measured on 2 CPU cores with the batched
# grid solves (torch's float64 eigh against ``CholeskyGrid.solve_all`` over the default
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


def grid_solver_for(n: int, n_alphas: int, device: torch.device | str, choice: str = "auto") -> str:
    """``"eigh"`` or ``"cholesky"`` (or ``choice`` when not "auto", e.g. ``"cg"``) for a grid of ``n_alphas`` on an (n, n) system on ``device``."""
    if choice not in _GRID_SOLVER_CHOICES:
        raise ValueError(f"grid_solver={choice!r} is not one of {_GRID_SOLVER_CHOICES}.")
    if choice != "auto":
        return choice
    c, p = _EIGH_IN_SOLVES.get(torch.device(device).type, _EIGH_IN_SOLVES["cpu"])
    return "eigh" if n_alphas >= c * (max(int(n), 1) / 1000.0) ** p else "cholesky"



class EighGrid:
    """``(S + alpha I)^-1 B`` for alpha after alpha from one float64 eigendecomposition of S
    (each alpha a diagonal rescaling). ``lam``, ``U``: the eigenpairs (negative ones clamped)."""

    method = "eigh"
    n_float64 = 0

    def __init__(self, S: torch.Tensor, float64_copy: bool = True):
        self.S = S
        self.lam, self.U = _eigh64(S)

    def solve(self, B: torch.Tensor, alpha: float) -> torch.Tensor:
        """B: (n, c) -> X: (n, c) float64."""
        return self.solve_all(B, [alpha])[0]

    def solve_all(self, B: torch.Tensor, alphas) -> list:
        """B: (n, c) -> [(n, c) float64 for each alpha], from the one eigendecomposition."""
        UB = self.U.T @ B.to(torch.float64)
        return [self.U @ (UB / (self.lam + float(a))[:, None]) for a in alphas]

    def counts(self) -> dict:
        """How the alphas were solved: one eigendecomposition, ``{"eigh": 1}``."""
        return {"eigh": 1}


class CholeskyGrid:
    """Solves ``(S + alpha I) X = B`` for alpha after alpha, S: (n, n) PSD, not modified.

    Per alpha a float32 Cholesky with float64 iterative refinement (residuals against S's
    exact values in float64), else a float64 Cholesky; except for alphas large enough that
    conjugate gradients provably converge in a few products with S (eigenvalues of
    S + alpha I within [alpha, alpha + ||S||_F]: at most ``_CG_MAX_ITERS`` iterations), which
    skip the O(n^3) factorisation. Every solution is accepted on its true float64 residual
    (normwise backward error at the Gram's precision, ``_BACKWARD_TOL``). ``solve_all``
    batches a grid (see the module docstring). S may be float32 (the Gram as formed) or
    float64. Work buffers are allocated once.
    """

    method = "cholesky"

    def __init__(self, S: torch.Tensor, float64_copy: bool = True):
        """``float64_copy=False``: no float64 copy of a float32 S for the residuals (they are
        then converted in row chunks), for a single solve where the copy would not pay."""
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
        elif float64_copy and S.numel() * 8 <= _S64_COPY_BYTES:
            self._S64 = S.to(torch.float64, memory_format=torch.contiguous_format, copy=True)
        else:
            self._S64 = None
        if self._np:
            self._S64 = None if self._S64 is None else self._S64.numpy()
        self._tol = _BACKWARD_TOL.get(S.dtype, _BACKWARD_TOL[torch.float32])
        self._s_norm = _frobenius64(S)

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


# The grid solvers by name: each takes S (n, n) and gives ``solve(B, alpha)``, ``solve_all(B,
# alphas)`` and ``counts()``.
GRID_SOLVERS = {"eigh": EighGrid, "cholesky": CholeskyGrid, "cg": PCGGrid}


def _ShiftedSolver(S: torch.Tensor, method: str, float64_copy: bool = True):
    """The grid solver ``method`` ("eigh", "cholesky" or "cg") on S."""
    return GRID_SOLVERS[method](S, float64_copy=float64_copy)


def solve_grid(S: torch.Tensor, B: torch.Tensor, alphas, method: str = "auto") -> tuple[list, dict]:
    """``[(S + a I)^-1 B for a in alphas]`` (float64) and how they were solved, by the grid
    solver ``method`` ("auto": ``grid_solver_for`` S's size, the grid's and S's device)."""
    method = grid_solver_for(S.shape[0], len(alphas), S.device, method)
    solver = GRID_SOLVERS[method](S)
    return solver.solve_all(B, alphas), solver.counts()
