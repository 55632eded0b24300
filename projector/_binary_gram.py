"""Gram matrices and cross products of binary (0/1) rows in integer arithmetic.

For 0/1 rows ``X X^T`` is a matrix of counts (``G_ij`` = features on in both rows, at most
m). Three paths compute it, all exact:

* ``"float32"`` -- today's path (``projector._linalg.gram``: BLAS ``ssyrk``; ``_cross``:
  ``sgemm``): counts below 2**24 are exact in float32;
* ``"int8"`` -- ``torch._int_mm`` on int8 operands with int32 accumulation (oneDNN on CPU:
  VNNI / AMX-INT8 where the CPU has them; cuBLASLt on CUDA, operands padded with zero rows
  and columns to its shape rules, which do not change a count). A count is at most m, so
  int32 is exact for m < 2**31; uint8 and bool rows are reinterpreted as int8 without a copy;
* ``"popcount"`` -- rows bit-packed into uint64 words (32x smaller than float32), counts by
  ``numpy.bitwise_count`` of their AND (CPU only; without a compiled kernel it is usually
  the slowest, so the measurement rarely picks it).

``gram_path`` picks one for given rows: ``"float32"`` unless every row is binary (an
integer or bool dtype with values in {0, 1}); else a path forced by ``forced_gram_path``
or the environment variable ``GRADFREE_GRAM_PATH``; else the fastest, measured once per
process and device type on a (512, 4096) block (an integer path only where it beats float32
by ``_MARGIN``; ``measured_gram_times`` returns the times). The Gram comes back in float32
like ``gram``'s (exact: counts below 2**24), the cross products in float64 like ``_cross``'s.
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref

import numpy as np
import torch

from projector._linalg import _rows_per_chunk, _tiles, gram

__all__ = ["GRAM_PATHS", "binary_cross", "binary_gram", "forced_gram_path", "gram_path", "is_binary",
           "measured_gram_times", "rows_gram"]

GRAM_PATHS = ("float32", "int8", "popcount")
ENV_VAR = "GRADFREE_GRAM_PATH"
_MARGIN = 1.1  # an integer path must beat float32 by this factor to be chosen (timing noise)
_PROBE_SHAPE = (512, 4096)  # the block the choice is measured on
_TILE_ROWS = 2048  # row tiles: of the Gram, only pairs on and below the diagonal are multiplied
_POPCOUNT_BYTES = 32 << 20  # bound on popcount's broadcast temporary
_FORCED: list[str] = []  # stack of forced_gram_path contexts
_MEASURED: dict[str, dict[str, float]] = {}  # device type -> {path: seconds on the probe block}
_SEEN: dict = {}  # id(tensor) -> (weak reference, version counter, is_binary): the last 8 checked


def is_binary(*tensors) -> bool:
    """True when every tensor has an integer or bool dtype and only values 0 and 1 (one
    pass over each: a max, and a min for signed dtypes; remembered for a tensor not modified
    since, e.g. the kept rows that each chunk of a prediction meets again)."""
    return all(_is_binary(X) for X in tensors)


def _is_binary(X: torch.Tensor) -> bool:
    if X.is_floating_point() or X.is_complex():
        return False
    if X.dtype == torch.bool or not X.numel():
        return True
    seen = _SEEN.get(id(X))
    if seen is not None and seen[0]() is X and seen[1] == X._version:  # the same object, unmodified
        return seen[2]
    result = int(X.max()) <= 1 and (X.dtype == torch.uint8 or int(X.min()) >= 0)
    if len(_SEEN) >= 8:
        _SEEN.pop(next(iter(_SEEN)))
    _SEEN[id(X)] = (weakref.ref(X), X._version, result)
    return result


def _check_path(path: str, where: str) -> str:
    if path not in GRAM_PATHS:
        raise ValueError(f"{where}: unknown Gram path {path!r}; expected one of {', '.join(GRAM_PATHS)}.")
    return path


@contextlib.contextmanager
def forced_gram_path(path: str):
    """Context: binary Grams and cross products take ``path`` (one of ``GRAM_PATHS``) instead
    of the measured choice; rows that are not binary make an integer path an error."""
    _FORCED.append(_check_path(path, "forced_gram_path"))
    try:
        yield
    finally:
        _FORCED.pop()


def _forced() -> str | None:
    if _FORCED:
        return _FORCED[-1]
    env = os.environ.get(ENV_VAR, "").strip()
    return _check_path(env, f"environment variable {ENV_VAR}") if env else None


def gram_path(parts, others=()) -> str:
    """The path for the rows of ``parts`` (and ``others``, for a cross product): forced, else
    ``"float32"`` for rows that are not binary, else the one measured fastest on their device."""
    rows = list(parts) + list(others)
    forced = _forced()
    binary = is_binary(*rows)
    if forced is not None:
        if forced != "float32" and not binary:
            raise ValueError(f"Gram path {forced!r} was forced, but the rows are not binary "
                             f"(dtypes {sorted({str(X.dtype) for X in rows})}, values other than 0 and 1): "
                             f"integer paths need 0/1 integer rows; force 'float32' or leave the choice to gradfree.")
        if forced == "popcount" and rows[0].device.type != "cpu":
            raise ValueError("Gram path 'popcount' runs on CPU only (numpy); the rows are on "
                             f"{rows[0].device}: force 'int8' or 'float32' there.")
        return forced
    if not binary:
        return "float32"
    times = measured_gram_times(rows[0].device)
    best = min(times, key=times.get)
    return best if times[best] * _MARGIN <= times["float32"] else "float32"


def measured_gram_times(device) -> dict[str, float]:
    """{path: best of 3 seconds} for the Gram of a random 0/1 (512, 4096) block on ``device``,
    measured on the first call per device type (then cached for the process). A path that
    raises there, or whose counts differ from float32's, gets infinity: never chosen."""
    kind = torch.device(device).type
    if kind not in _MEASURED:
        g = torch.Generator().manual_seed(0)
        block = (torch.rand(_PROBE_SHAPE, generator=g) < 0.5).to(torch.uint8).to(device)
        runs = {"float32": lambda: gram([block], None, rows=True),
                "int8": lambda: _gram_int8([block])}
        if kind == "cpu":
            runs["popcount"] = lambda: _gram_popcount([block])
        times, reference = {}, None
        for name, fn in runs.items():
            try:  # warm-up (first-call costs, e.g. oneDNN's kernel generation, are not the path's)
                counts = fn()
            except RuntimeError:  # no int8 GEMM on this device or build: not a candidate
                times[name] = float("inf")
                continue
            reference = counts if reference is None else reference
            if not torch.equal(counts, reference):  # a path that miscounts here is never chosen
                times[name] = float("inf")
                continue
            best = float("inf")
            for _ in range(3):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        _MEASURED[kind] = times
    return dict(_MEASURED[kind])


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def rows_gram(parts, path: str | None = None) -> torch.Tensor:
    """Uncentred ``X X^T`` (N, N) float32 of the stacked ``parts``: binary rows through ``path`` (None:
    the measured choice, :func:`gram_path`), anything else (or ``path="float32"``) by float32 BLAS."""
    K = binary_gram(parts, path)
    return K if K is not None else gram(parts, None, rows=True)


def binary_gram(parts, path: str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """``X X^T`` (N, N) of the stacked binary parts (n_i, m) by ``path`` (None: ``gram_path``);
    None when the path is ``"float32"`` (the caller's own BLAS path). ``dtype``: float32
    (``gram``'s: exact for m < 2**24), or an integer dtype whose range holds m (int16 for
    m < 2**15: half the memory)."""
    path = gram_path(parts) if path is None else _check_path(path, "binary_gram")
    if path == "float32":
        return None
    m = parts[0].shape[1]
    if not dtype.is_floating_point and torch.iinfo(dtype).max < m:
        raise ValueError(f"binary_gram: counts up to m = {m} do not fit {dtype} (at most "
                         f"{torch.iinfo(dtype).max}); ask for int32 or float32.")
    return _gram_int8(parts, dtype) if path == "int8" else _gram_popcount(parts, dtype)


def binary_cross(A: torch.Tensor, B: torch.Tensor, a_norms: bool = False, path: str | None = None):
    """``A B^T`` (n_a, n_b) float64 of binary rows A: (n_a, m), B: (n_b, m) by ``path`` (None:
    ``gram_path``); with ``a_norms`` also ``|a_i|^2`` (n_a,) float64 (row sums: a^2 = a).
    None when the path is ``"float32"``."""
    path = gram_path([A], [B]) if path is None else _check_path(path, "binary_cross")
    if path == "float32":
        return None
    G = (_cross_int8(A, B) if path == "int8" else _cross_popcount(A, B)).to(torch.float64)
    return (G, A.sum(1, dtype=torch.int64).to(torch.float64)) if a_norms else G


# --- int8: torch._int_mm, int32 accumulation ---

def _as_int8(X: torch.Tensor) -> torch.Tensor:
    """0/1 rows as int8: a reinterpretation for 1-byte dtypes, else a converted copy."""
    if X.dtype == torch.int8:
        return X
    if X.dtype in (torch.uint8, torch.bool):
        return X.view(torch.int8)
    return X.to(torch.int8)


def _int_mm(a: torch.Tensor, b: torch.Tensor, pad: bool | None = None) -> torch.Tensor:
    """a b^T, (p, q) int32, for int8 a: (p, w), b: (q, w). cuBLASLt (``pad``, the default on
    CUDA) wants p > 16 and w, q multiples of 8: zero rows and columns are added, which add 0
    to every count, and the extra rows and columns of the product are cut off."""
    if pad is None:
        pad = a.device.type == "cuda"
    if not pad:
        return torch._int_mm(a, b.T)
    (p, w), q = a.shape, b.shape[0]
    p2, w2, q2 = max(p, 17), -(-w // 8) * 8, -(-q // 8) * 8
    if (p2, w2, q2) != (p, w, q):
        a = torch.nn.functional.pad(a, (0, w2 - w, 0, p2 - p))
        b = torch.nn.functional.pad(b, (0, w2 - w, 0, q2 - q))
    return torch._int_mm(a.contiguous(), b.contiguous().T)[:p, :q]


def _row_tiles(parts, most: int):
    """[(operand, start)]: the stacked rows as int8 row tiles of at most ``most`` rows, each
    inside one part (a view of it for 1-byte dtypes), with its first row's index in the stack."""
    out, offset = [], 0
    for X in parts:
        X8 = _as_int8(X)  # a reinterpretation, or one converted copy of the part
        out += [(X8[r0:r1], offset + r0) for r0, r1 in _tiles(X.shape[0], most)]
        offset += X.shape[0]
    return out


def _gram_int8(parts, dtype=torch.float32) -> torch.Tensor:
    """X X^T (N, N) in dtype by int8 GEMMs over all m features at once (int32 accumulation:
    counts <= m): one product per row tile pair on or below the diagonal, written into K and,
    transposed, above it. No float copy of the rows; float32 is exact for m < 2**24."""
    N, m = sum(X.shape[0] for X in parts), parts[0].shape[1]
    K = torch.zeros(N, N, dtype=dtype, device=parts[0].device)
    if not N or not m:
        return K
    tiles = _row_tiles(parts, _TILE_ROWS)
    for i, (a, i0) in enumerate(tiles):
        for b, j0 in tiles[:i + 1]:
            T = _int_mm(a, b)
            K[i0:i0 + a.shape[0], j0:j0 + b.shape[0]] = T
            if j0 != i0:
                K[j0:j0 + b.shape[0], i0:i0 + a.shape[0]] = T.T
    return K


def _cross_int8(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A B^T (n_a, n_b) int32 by int8 GEMMs over all m at once, in row tiles of B (exact:
    counts <= m)."""
    nA, nB, m = A.shape[0], B.shape[0], A.shape[1]
    G = torch.zeros(nA, nB, dtype=torch.int32, device=A.device)
    if not nA or not nB or not m:
        return G
    A8 = _as_int8(A)
    for b, j0 in _row_tiles([B], _TILE_ROWS):
        G[:, j0:j0 + b.shape[0]] = _int_mm(A8, b)
    return G


# --- popcount: bit-packed rows, numpy.bitwise_count ---

def _packed(parts) -> np.ndarray:
    """The stacked 0/1 rows bit-packed: (N, W) uint64, W = ceil(m / 64), zero bits past m."""
    N, m = sum(X.shape[0] for X in parts), parts[0].shape[1]
    W = -(-m // 64)
    P = np.zeros((N, W * 8), dtype=np.uint8)
    step, r0 = _rows_per_chunk(m, 1), 0
    for X in parts:
        for s in range(0, X.shape[0], step):
            rows = X[s:s + step].cpu().numpy()
            P[r0 + s:r0 + s + rows.shape[0], :-(-m // 8)] = np.packbits(rows != 0, axis=1)
        r0 += X.shape[0]
    return P.view(np.uint64)


def _popcount_ab(Pa: np.ndarray, Pb: np.ndarray) -> np.ndarray:
    """popcount(a_i AND b_j) summed over words: (n_a, n_b) int32, for packed Pa: (n_a, W),
    Pb: (n_b, W); the (rows, n_b, W) temporary kept under ``_POPCOUNT_BYTES``."""
    out = np.empty((Pa.shape[0], Pb.shape[0]), dtype=np.int32)
    step = max(1, _POPCOUNT_BYTES // max(1, 9 * Pb.shape[0] * Pb.shape[1]))
    for r0 in range(0, Pa.shape[0], step):
        np.sum(np.bitwise_count(Pa[r0:r0 + step, None, :] & Pb[None, :, :]), axis=2, dtype=np.int32,
               out=out[r0:r0 + step])
    return out


def _gram_popcount(parts, dtype=torch.float32) -> torch.Tensor:
    """X X^T (N, N) in dtype by popcounts, tile pairs on or below the diagonal (numpy, on CPU)."""
    P = _packed(parts)
    N = P.shape[0]
    K = torch.zeros(N, N, dtype=dtype).numpy()
    tiles = _tiles(N, _TILE_ROWS) if N else []
    for i, (i0, i1) in enumerate(tiles):
        for j0, j1 in tiles[:i + 1]:
            T = _popcount_ab(P[i0:i1], P[j0:j1])
            K[i0:i1, j0:j1] = T
            K[j0:j1, i0:i1] = T.T
    return torch.from_numpy(K).to(parts[0].device)


def _cross_popcount(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A B^T (n_a, n_b) int32 by popcounts (numpy, on CPU)."""
    return torch.from_numpy(_popcount_ab(_packed([A]), _packed([B]))).to(A.device)
