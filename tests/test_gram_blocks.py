"""Gram products past 2**31 elements: tiled BLAS calls, and torch for the large factorisations.

scipy's BLAS/LAPACK (OpenBLAS with 32-bit integers) segfault on a matrix of 2**31 elements
or more, e.g. the (N, N) Gram from N = 46,341 on. ``_linalg._BLAS_MAX_ELEMENTS`` bounds what
one call sees; shrinking it here sends tiny matrices through the tiled and torch paths.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from projector import _factor as F
from projector import _linalg as L
from projector.kernel import KernelRidgeClassifier
from projector.projections import GaussianProjection
from projector.ridge import RidgeClassifier
from projector.streaming import StreamingRidgeClassifier


pytestmark = pytest.mark.usefixtures("one_thread")


def _lower(C):
    return torch.tril(C.double())


@pytest.mark.parametrize("limit", [2**31 - 1, 60, 7, 1])
@pytest.mark.parametrize("rows", [True, False])
@pytest.mark.parametrize("n,k", [(23, 5), (17, 40), (30, 1), (1, 3)])
def test_tiled_syrk_accumulates_the_plain_product(monkeypatch, limit, rows, n, k):
    """C += M M^T over three calls (beta = 1), M = A or A^T: uneven tiles (N not a multiple of
    the tile), the inner dimension cut too; the upper triangle is left to ``_symmetrize_``."""
    monkeypatch.setattr(L, "_BLAS_MAX_ELEMENTS", limit)
    g = torch.Generator().manual_seed(n * k)
    C0 = torch.randn(n, n, generator=g)
    C = C0.clone()
    expected = C0.double()
    for _ in range(3):
        A = torch.randn(n, k, generator=g) if rows else torch.randn(k, n, generator=g)
        L._syrk_(C, A, rows=rows)
        M = A.double() if rows else A.double().T
        expected = expected + M @ M.T
    torch.testing.assert_close(_lower(C), torch.tril(expected), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.triu(C, 1), torch.triu(C0, 1), rtol=0, atol=0)


def test_tiles_are_near_equal_and_cover_the_range():
    assert L._tiles(23, 10) == [(0, 7), (7, 15), (15, 23)]
    assert L._tiles(20, 10) == [(0, 10), (10, 20)]
    assert L._tiles(5, 10) == [(0, 5)]


@pytest.mark.parametrize("limit", [2**31 - 1, 50])
@pytest.mark.parametrize("rows", [True, False])
def test_gram_in_tiles_is_exact_on_binary_rows(monkeypatch, limit, rows):
    """Binary rows: integer counts below 2**24, exact in float32 whatever the tiling."""
    monkeypatch.setattr(L, "_BLAS_MAX_ELEMENTS", limit)
    g = torch.Generator().manual_seed(1)
    X = (torch.rand(41, 19, generator=g) > 0.5).to(torch.uint8)
    K = L.gram([X[:25], X[25:]], None, rows=rows)  # the BLAS path (integer ones: test_binary_gram)
    Xd = X.double()
    torch.testing.assert_close(K.double(), Xd @ Xd.T if rows else Xd.T @ Xd, rtol=0, atol=0)


@pytest.mark.parametrize("rows", [True, False])
def test_centred_gram_in_tiles_matches_float64(monkeypatch, rows):
    monkeypatch.setattr(L, "_BLAS_MAX_ELEMENTS", 40)
    g = torch.Generator().manual_seed(2)
    X = torch.rand(37, 23, generator=g)
    mu = X.double().mean(0)
    Xc = X.double() - mu
    expected = Xc @ Xc.T if rows else Xc.T @ Xc
    torch.testing.assert_close(L.gram([X[:20], X[20:]], mu, rows=rows).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_factorisation_and_solve_go_through_torch_in_place(monkeypatch, dtype):
    """Past the limit potrf / potrs are torch's, in the caller's work buffer, same solution."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(60, 80, generator=g, dtype=torch.float64)
    S = (A @ A.T).to(dtype)
    B = torch.randn(60, 3, generator=g, dtype=torch.float64)
    expected = torch.linalg.solve(S.double() + 0.5 * torch.eye(60, dtype=torch.float64), B)
    monkeypatch.setattr(L, "_BLAS_MAX_ELEMENTS", 100)
    work = torch.empty(60, 60, dtype=dtype)
    factor = F._cholesky_shifted(S, 0.5, work)
    assert factor[0].data_ptr() == work.data_ptr() and factor[1]
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for rhs in (B, B.numpy()):
        x = F._cholesky_solve(rhs, factor)
        assert isinstance(x, type(rhs))
        torch.testing.assert_close(torch.as_tensor(x).double(), expected, rtol=tol, atol=tol * expected.abs().max())
    assert F._cholesky_shifted(-S, 0.5, work) is None  # not positive definite: None, as from scipy
    torch.testing.assert_close(F._solve_psd(S, B, 0.5), expected, rtol=tol, atol=tol * expected.abs().max())


def test_large_dgemm_in_row_or_column_blocks(monkeypatch):
    monkeypatch.setattr(L, "_BLAS_MAX_ELEMENTS", 50)
    g = np.random.default_rng(4)
    A, X = g.normal(size=(23, 17)), g.normal(size=(17, 3))
    np.testing.assert_allclose(L._dgemm(A, X), A @ X, rtol=1e-12)
    np.testing.assert_allclose(L._dgemm(np.asfortranarray(A), X), A @ X, rtol=1e-12)
    X = g.normal(size=(17, 7))  # the right-hand side past the limit too
    np.testing.assert_allclose(L._dgemm(A, X), A @ X, rtol=1e-12)


def test_eigendecomposition_past_the_limit_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(L, "_BLAS_MAX_ELEMENTS", 100)
    X = torch.rand(20, 30)  # dual: a (20, 20) kernel
    with pytest.raises(ValueError, match="validation data"):
        RidgeClassifier(alphas=[1.0, 10.0]).fit(X, torch.arange(20) % 2)  # leave-one-out needs eigh


def _binary_data(n, m, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    X = (torch.rand(n, m, generator=g) > 0.5).to(torch.uint8)
    X[:, :5] = (y[:, None] == torch.arange(5)[None, :] % 3).to(torch.uint8)
    return X, y


def _fits(monkeypatch, make, limit):
    """The same fit at scipy's real limit and at a tiny one (every Gram tiled, every potrf /
    potrs through torch): decision functions on held-out rows."""
    X, y = _binary_data(50, 30, 0)
    Xv, yv = _binary_data(25, 30, 1)
    Xt, _ = _binary_data(20, 30, 2)
    out = []
    for lim in (2**31 - 1, limit):
        monkeypatch.setattr(L, "_BLAS_MAX_ELEMENTS", lim)
        model = make().fit(X, y, Xv, yv)
        out.append((model.alpha_, model.decision_function(Xt).double()))
    return out


@pytest.mark.parametrize("k,solver", [(20, "primal"), (200, "dual")])
def test_streaming_fit_in_tiles_is_the_same_fit(monkeypatch, k, solver):
    (a0, S0), (a1, S1) = _fits(monkeypatch, lambda: StreamingRidgeClassifier(
        GaussianProjection(n_components=k, seed=0), solver=solver, grid_solver="cholesky", block_size=64), 30)
    assert a1 == pytest.approx(a0, rel=1e-6)  # the grid is relative to the Gram's trace
    torch.testing.assert_close(S1, S0, rtol=1e-4, atol=1e-4 * S0.abs().max())


def test_kernel_fit_in_tiles_is_the_same_fit(monkeypatch):
    (a0, S0), (a1, S1) = _fits(monkeypatch, lambda: KernelRidgeClassifier(grid_solver="cholesky"), 30)
    assert a1 == pytest.approx(a0, rel=1e-6)
    torch.testing.assert_close(S1, S0, rtol=1e-6, atol=1e-6 * S0.abs().max())


def _mem_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


N_PAST = 46_342  # the smallest N with N * N > 2**31: one ssyrk over the whole Gram segfaulted


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/meminfo").exists() or _mem_available_bytes() < 12 * 2**30,
                    reason="needs ~10 GB free memory: one (46342, 46342) float32 Gram is 8.6 GB")
def test_gram_past_2_31_elements():
    """The (N, N) Gram at N = 46,342 through ``gram``: no crash (the old single ssyrk segfaulted with
    d = 64), entries equal to direct dot products. The streaming dual pass forms its Gram through the same
    ``_syrk_`` and ``_symmetrize_`` (its centring in tiles: ``test_streaming_fit_in_tiles_is_the_same_fit``);
    a second 8.6 GB Gram here cost CI ~40 s, mostly the machine mapping fresh memory."""
    d = 64
    g = torch.Generator().manual_seed(5)
    X = (torch.rand(N_PAST, d, generator=g) > 0.5).to(torch.uint8)
    Xf = X.to(torch.float32)
    check = torch.tensor([0, 1, 46_339, 46_340, 46_341, N_PAST - 1])

    K = L.gram([X], None, rows=True)  # the BLAS path, not an integer one
    assert K.shape == (N_PAST, N_PAST)
    exact = Xf[check] @ Xf.T  # (6, N), integer counts: exact in float32
    torch.testing.assert_close(K[check], exact, rtol=0, atol=0)
    torch.testing.assert_close(K[:, check].T, exact, rtol=0, atol=0)
    torch.testing.assert_close(K.diagonal(), Xf.sum(1), rtol=0, atol=0)


def test_symmetrize_in_tiles_mirrors_the_lower_triangle(monkeypatch):
    monkeypatch.setattr(L, "_SYMMETRIZE_TILE", 7)  # 7-row tiles over 30 rows: a ragged last one
    C = torch.randn(30, 30, generator=torch.Generator().manual_seed(0))
    lower = torch.tril(C)
    out = L._symmetrize_(C.clone())
    torch.testing.assert_close(out, lower + torch.tril(C, -1).T, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64])
def test_all_finite_finds_one_bad_value(dtype):
    from projector._validation import all_finite

    T = torch.ones(3000, 50, dtype=dtype)
    assert all_finite(T) and all_finite(T[:0]) and all_finite(torch.ones(5, dtype=torch.int64))
    for bad in (float("nan"), float("inf"), -float("inf")):
        U = T.clone()
        U[-1, -1] = bad
        assert not all_finite(U)
        if dtype.is_complex:
            U[-1, -1] = complex(1.0, bad)  # bad in the imaginary part only
            assert not all_finite(U)
