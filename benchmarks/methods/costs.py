"""The cost model of a random-features cell's fit, by path: the FLOPs a dry run plans for the ridge (raw or
projected features), the logistic control and the exact kernel, each at the rate measured for that
configuration (:mod:`benchmarks.harness.estimate`)."""

from __future__ import annotations

from projector._pcg import CG_FROM_ROWS
from projector._solvers import grid_solver_for

_CG_ITERATIONS = 100  # planned products with the Gram per conjugate-gradient solve (grid, refit)
_LBFGS_ITERATIONS = 100  # planned L-BFGS iterations per fit of the logistic control (the measured rate absorbs it)


def kernel_solve_flops(n_fit: int, n: int, n_classes: int) -> float:
    """The exact kernel's solves: a float32 Cholesky per alpha (13) on the direct path, or the
    conjugate gradients' products with the Gram (every alpha and class; then the refit)."""
    if n_fit < CG_FROM_ROWS:
        return 13 * n**3 / 3.0
    return _CG_ITERATIONS * 2.0 * (n**2 * 13 * n_classes + n_fit**2 * n_classes)


def ridge_flops(n: int, d: int, n_alphas: int, device: str = "cpu") -> float:
    """The smaller Gram, then the grid's solves as :func:`projector._solvers.grid_solver_for` picks them:
    one eigendecomposition (~9 m^3) or a Cholesky per alpha (m^3 / 3 each)."""
    m = min(n, d)
    return 2.0 * n * d * m + (9.0 * m**3 if grid_solver_for(m, n_alphas, device) == "eigh" else n_alphas * m**3 / 3)


def logistic_flops(n: int, n_final: int, d: int, n_classes: int, n_cs: int) -> float:
    """The logistic control's fits: each C on the n training rows, then the chosen one on n_final rows (train +
    validation with the refit; 0 without: the grid's fit is kept); an L-BFGS iteration is a product with X and
    one with X^T."""
    return _LBFGS_ITERATIONS * 4.0 * d * n_classes * (n_cs * n + n_final)
