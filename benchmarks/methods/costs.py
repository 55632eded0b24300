"""The cost model of a random-features cell's fit, by path: the FLOPs a dry run plans for the ridge (raw or
projected features), the logistic control and the exact kernel, each at the rate measured for that
configuration (:mod:`benchmarks.harness.estimate`)."""

from __future__ import annotations

import math

from benchmarks.methods.logistic import MAX_ITER
from projector._pcg import CG_FROM_ROWS
from projector._solvers import grid_solver_for

_CG_ITERATIONS = 100  # planned products with the Gram per conjugate-gradient solve (grid, refit)
#: L-BFGS iterations per C of the logistic control ~ 1.45 sqrt(n), to LogisticControl's cap: at a fixed C the data
#: term outweighs the penalty n-fold, so the problem's condition grows ~ n and a quasi-Newton method's iterations
#: ~ its square root. Measured (results/logit-iters: MobileNetV2 features.18 on CIFAR-10, C from 1e-4 to 1): 46,
#: 60, 84 and 177 a C on average at 500, 1,500, 5,000 and 15,000 images (1.19-2.06 sqrt(n); 1.45 at the largest).
#: A size-free count planned the control on all of CIFAR-10 2.5x under its time; the measured rate absorbs the
#: constant, the square root carries the trend across sizes.
_LBFGS_PER_SQRT_ROW = 1.45


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


def lbfgs_iterations(n: int) -> float:
    """Planned L-BFGS iterations of one fit of the logistic control on ``n`` rows."""
    return min(float(MAX_ITER), _LBFGS_PER_SQRT_ROW * math.sqrt(n))


def logistic_flops(n: int, n_final: int, d: int, n_classes: int, n_cs: int) -> float:
    """The logistic control's fits: each C on the n training rows, then the chosen one on n_final rows (train +
    validation with the refit; 0 without: the grid's fit is kept); an L-BFGS iteration is a product with X and
    one with X^T, :func:`lbfgs_iterations` of them a fit."""
    return 4.0 * d * n_classes * (n_cs * n * lbfgs_iterations(n) + n_final * lbfgs_iterations(n_final))
