"""Chunked linear algebra under the ridge fits: centred products that never form ``Xc``, Gram
matrices by BLAS ``ssyrk`` (tiled past 2**31 elements), float64 products by scipy's BLAS, and
the thread limit that keeps two BLAS thread pools from fighting over the cores.

``parts`` is a list of row blocks (n_i, d) standing for their row concatenation; ``mu`` a
centring (d,) (None: uncentred). Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["gram"]

_CHUNK_BYTES = 128 << 20  # bound on a temporary centred slice of X
# scipy's BLAS and LAPACK (OpenBLAS, 32-bit integers) segfault on a matrix of 2**31 elements
# or more (an (n, n) Gram from n = 46,341 on): no matrix handed to one of their calls has more
# than this many elements. Larger products are tiled; larger factorisations and triangular
# solves go to torch (MKL, 64-bit offsets).
_BLAS_MAX_ELEMENTS = 2**31 - 1
_TILE_BYTES = 256 << 20  # one float32 tile buffer of a tiled ssyrk / sgemm

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
            if mu is not None and X.is_floating_point() and dtype != torch.float64:
                # rows centred in float64 before the cast: rounding x ~ 1e4 (float64 rows) or the
                # mean (float32 rows) to float32 first would cost 1e4 * 2**-24 on every centred entry
                chunk.copy_(X[r0:r0 + step].double() - mu)
                yield offset + r0, chunk
                continue
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
            if mu is not None and X.is_floating_point() and dtype != torch.float64:
                chunk[r0:r0 + X.shape[0]].copy_(X[:, c0:c0 + w].double() - mu[c0:c0 + w])  # centred before the cast
            else:
                chunk[r0:r0 + X.shape[0]].copy_(X[:, c0:c0 + w])
                if mu is not None:
                    chunk[r0:r0 + X.shape[0]].sub_(mu[c0:c0 + w].to(dtype))
            r0 += X.shape[0]
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


_SYMMETRIZE_TILE = 1024  # rows and columns of a tile (4 MB in float32)


def _symmetrize_(C: torch.Tensor) -> torch.Tensor:
    """Copy the lower triangle of C over its upper one (CPU float32, after ``_syrk_``)."""
    if C.device.type == "cpu" and C.dtype == torch.float32:
        N, T = C.shape[0], _SYMMETRIZE_TILE
        for r0 in range(0, N, T):  # square tiles: a transposed copy that stays in cache (a whole panel's did not)
            r1 = min(r0 + T, N)
            blk = C[r0:r1, r0:r1]
            blk.copy_(torch.tril(blk) + torch.tril(blk, -1).T)
            for c0 in range(r1, N, T):
                C[r0:r1, c0:c0 + T].copy_(C[c0:c0 + T, r0:r1].T)
    return C


def gram(parts, mu, rows: bool = True) -> torch.Tensor:
    """Gram of the stacked parts centred with mu (None: uncentred), float32 BLAS (``ssyrk`` in tiles):
    ``rows=True``: ``Xc Xc^T``, (N, N); ``rows=False``: ``Xc^T Xc``, (d, d). (Binary rows' uncentred
    Gram in integer arithmetic where faster: ``projector._binary_gram.rows_gram``.)"""
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
    return check_finite_gram(_symmetrize_(K), parts)


def check_finite_gram(K: torch.Tensor, parts, what: str = "X") -> torch.Tensor:
    """K itself if finite, else a ValueError that says why and what to do: finite X whose float32
    Gram overflows (entries past 3.4e38: |x| ~ 1e19 and more) would give NaN coefficients and
    every prediction class 0, silently. ``what``: whose Gram it is (X, or its features)."""
    from projector._validation import all_finite

    if all_finite(K):
        return K
    big = max((float(P.abs().max()) for P in parts if P.numel()), default=float("nan"))
    raise ValueError(
        f"The float32 Gram matrix of {what} overflowed (float32 holds values up to 3.4e38; X's largest "
        f"magnitude is {big:.3g}). Scale X to moderate values (e.g. divide it by its largest absolute value, "
        "or sklearn.preprocessing.StandardScaler) and fit again.")


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


ROW_BLOCK = 256  # rows of one fixed-shape product in ``_rows_mm`` (and the projections' GEMMs)


def _rows_mm(X: torch.Tensor, B: torch.Tensor, prep=None, block: int = ROW_BLOCK) -> torch.Tensor:
    """``prep(X) @ B``, (n, c) float32, one fixed-size block of rows per product, the last one
    zero-padded, each row starting on a 64-byte boundary: a BLAS picks its kernel and summation
    order from the shape (and, for small products, from each row's alignment), so a row's result
    would otherwise change with the rows it is batched with (MKL: 2e-7 relative). X: (n, d);
    B: (d, c) float32; ``prep(rows) -> (r, d) float32`` (default: a cast), applied per block."""
    n, d = X.shape
    d_pad = -(-d // 16) * 16  # 16 float32 = 64 bytes: every row of the buffer aligned alike
    out = torch.empty(n, B.shape[1], dtype=torch.float32, device=X.device)
    buf = torch.zeros(block, d_pad, dtype=torch.float32, device=X.device)
    Bp = torch.zeros(d_pad, B.shape[1], dtype=torch.float32, device=X.device)
    Bp[:d] = B
    for r0 in range(0, n, block):
        rows = min(block, n - r0)
        xr = X[r0:r0 + rows]
        buf[:rows, :d].copy_(prep(xr) if prep is not None else xr)
        if rows < block:
            buf[rows:].zero_()
        out[r0:r0 + rows] = (buf @ Bp)[:rows]
    return out


def _centre_(Z: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Z -= mu in place, float32 Z (n, d), mu (d,) float64: each entry centred in float64 and
    rounded once, over row chunks (``Z.sub_(mu.float())`` would shift every column by the
    rounding of its mean, ~mean * 2**-24, against centred entries that may be far smaller)."""
    step = _rows_per_chunk(Z.shape[1], 8)
    for r0 in range(0, Z.shape[0], step):
        Z[r0:r0 + step].copy_(Z[r0:r0 + step].double().sub_(mu))
    return Z


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
