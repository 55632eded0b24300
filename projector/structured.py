"""Structured random features: the statistics of ``|X R|^2`` from fast Walsh-Hadamard transforms.

A dense complex Gaussian R costs ``O(n m k)`` time and ``O(m k)`` values to generate.
Here each real row of R is replaced by a row of the SORF-style orthogonal map

    W_t = S_t  H D1_t  H D2_t  H D3_t  P_t          (one map per "transform" t)

with ``d = 2**ceil(log2(m))`` (the input is zero-padded), ``H`` the Sylvester Hadamard
matrix divided by sqrt(d) (orthogonal), ``D*_t`` random sign diagonals, ``P_t`` a random
injection of the m input coordinates into the d slots (a permutation of the padding),
and ``S_t`` a diagonal of random row lengths ``sqrt(chi2_d / m)``. The rows of ``H D H D
H D`` are unit vectors spread nearly uniformly over the sphere; a uniform direction
times a ``chi_d`` length is exactly a Gaussian vector, so every row of ``W_t`` has
(nearly) the distribution of a row of ``R^T`` with ``N(0, 1/m)`` entries, and the
features have (nearly) the kernel of the dense ones,
``E[Y_x . Y_y] / k = 4 s2**2 (|x|^2 |y|^2 + (x . y)**2)``, s2 = 1/m.

Transform t yields d real rows; complex feature ``j = t * d/2 + i`` takes ``Re`` from row
``2i`` and ``Im`` from row ``2i + 1``:  ``Y_j = (W_t x)_{2i}**2 + (W_t x)_{2i+1}**2``.
Each transform costs three FWHTs of length d per sample, ``O(d log d)``, instead of
``O(m d)`` for d dense columns: ``O(n k log m)`` in all. Its parameters (signs,
injection, lengths) are ``O(d)`` numbers drawn from ``numpy.random.default_rng((seed,
t))``, regenerated when needed: the projection stores nothing, and the features are the
same on CPU and CUDA (up to float rounding), block by block as a whole.

The FWHT is computed as a Kronecker product of small Hadamard matrices (``H_d = H_a (x)
H_b (x) H_c``, a <= 64): three batched GEMMs instead of ``log2 d`` memory-bound
butterfly passes, several times faster on CPU and natural on GPU tensor cores.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from projector._blocks import BlockProjection
from projector._validation import _check_2d, _check_fitted, _check_n_features

__all__ = ["StructuredProjection", "fwht", "hadamard", "padded_dim"]

_MAX_FACTOR_BITS = 6  # Kronecker factors of at most 64 x 64: measured fastest on CPU
_CHUNK_BYTES = 4 << 20  # (rows, transforms, d) float32 work array: cache-sized, ~1.5x faster than 256 MB


def padded_dim(n_features: int) -> int:
    """d: the power of two the input is zero-padded to (at least 2)."""
    return max(2, 1 << (int(n_features) - 1).bit_length())


_HADAMARD: dict = {}


def hadamard(a: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The unnormalised Sylvester Hadamard matrix (a, a), a a power of two, entries +-1, cached per device."""
    key = (a, str(device), dtype)
    if key not in _HADAMARD:
        H = torch.ones(1, 1, dtype=dtype)
        h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=dtype)
        while H.shape[0] < a:
            H = torch.kron(h2, H)  # H_2d = [[H, H], [H, -H]]
        _HADAMARD[key] = H.to(device)
    return _HADAMARD[key]


def _factors(d: int) -> list[int]:
    p = d.bit_length() - 1
    parts = max(1, math.ceil(p / _MAX_FACTOR_BITS))
    bits = [p // parts + (1 if i < p % parts else 0) for i in range(parts)]
    return [1 << b for b in bits]


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised fast Walsh-Hadamard transform along the last axis (a power of two):
    ``fwht(x) = x @ H_d`` in Sylvester order, for any leading shape. Not in place."""
    d = x.shape[-1]
    if d & (d - 1):
        raise ValueError(f"fwht needs a power-of-two length, got {d}.")
    lead = x.shape[:-1]
    rows = math.prod(lead)
    fac = _factors(d)
    y = x.reshape(rows, d)
    # Index i = (i_1, ..., i_r) in mixed radix fac; H_d = H_f1 (x) ... (x) H_fr.
    for ax, a in enumerate(fac):
        left = rows * math.prod(fac[:ax])
        right = math.prod(fac[ax + 1:])
        H = hadamard(a, y.device, y.dtype)
        if right == 1:
            y = y.reshape(left, a) @ H
        else:
            y = torch.matmul(H, y.reshape(left, a, right))
    return y.reshape(*lead, d)


def _transform_params(seed: int, n_features: int, t: int, n_hd: int) -> dict:
    """Transform t's random parameters (numpy, float32): injection, signs, row scales."""
    d = padded_dim(n_features)
    rng = np.random.default_rng([int(seed), int(t)])
    pos = rng.permutation(d)[:n_features]
    signs = rng.integers(0, 2, size=(n_hd, d)).astype(np.float32) * 2 - 1
    # Row lengths chi_d / sqrt(m): with a uniform direction, an exactly N(0, I/m) row.
    # The Hadamard normalisation d**-0.5 per transform is folded in.
    scale = np.sqrt(rng.chisquare(d, size=d) / n_features) * d ** (-0.5 * n_hd)
    return {"pos": pos, "signs": signs, "scale": scale.astype(np.float32)}


class StructuredProjection(BlockProjection):
    """Structured complex random features with the statistics of ``|X R|^2``, in O(n k log m).

    X: (n_samples, n_features), binary uint8 or float -> Y: (n_samples, n_components) float32,
    on X's device. See the module docstring for the construction.

    Parameters
    ----------
    n_components : number of random features k.
    seed : the same seed gives the same features whatever block_size (up to rounding),
        on CPU and CUDA alike; the first k features do not depend on n_components.
    block_size : features per block of ``iter_blocks``, rounded up to whole transforms
        (d/2 features each); None: at least 2048 and one transform.
    row_chunk_size : rows transformed at once; None: a cache-sized (~4 MB) work array.
    n_hd : number of ``H D`` factors (3, as in SORF; 1 or 2 mix sparse inputs poorly).
    progress : tqdm bar over blocks.

    Attributes
    ----------
    n_features_in_ : m.
    padded_dim_ : d, the power of two >= m.
    n_transforms_ : ceil(2k / d).
    """

    name = "structured"
    flops_per_mac = 4  # counted as the dense |X R|^2 it stands for

    def __init__(
        self,
        n_components: int,
        seed: int = 0,
        block_size: int | None = None,
        row_chunk_size: int | None = None,
        n_hd: int = 3,
        progress: bool = False,
    ):
        self.n_components = n_components
        self.seed = seed
        self.block_size = block_size
        self.row_chunk_size = row_chunk_size
        self.n_hd = n_hd
        self.progress = progress

    def _fit(self, X: torch.Tensor, kind: str) -> None:
        """Records the shapes only: the parameters follow from the seed."""
        if int(self.n_hd) < 1:
            raise ValueError(f"n_hd must be >= 1, got {self.n_hd!r}.")
        super()._fit(X, kind)
        self.padded_dim_ = padded_dim(self.n_features_in_)
        self.n_transforms_ = math.ceil(2 * int(self.n_components) / self.padded_dim_)

    def iter_blocks(self, X: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
        """Yields ``(cols, Y[:, cols])``, ``Y_block: (n_samples, width)`` float32, block by block."""
        X = _check_2d(X, "StructuredProjection.transform")
        _check_fitted(self)
        _check_n_features(self, X)
        return self._blocks_of(X)

    def block_width(self) -> int:
        """Columns of each block ``iter_blocks`` yields (the last may be narrower): whole
        transforms of d/2 features, at least ``block_size``."""
        _check_fitted(self)
        return min(self._transforms_per_block() * (self.padded_dim_ // 2), int(self.n_components))

    def _transforms_per_block(self) -> int:
        per_block = int(self.block_size) if self.block_size else 2048
        return max(1, math.ceil(per_block / (self.padded_dim_ // 2)))

    def _blocks_of(self, X):
        d, k = self.padded_dim_, int(self.n_components)
        half = d // 2
        g = self._transforms_per_block()
        groups = [list(range(t0, min(t0 + g, self.n_transforms_))) for t0 in range(0, self.n_transforms_, g)]
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(groups), desc="structured projection", unit="block")
        for ts in groups:
            c0 = ts[0] * half
            cols = slice(c0, min(c0 + len(ts) * half, k))
            width = cols.stop - cols.start
            U = self._linear_rows(X, ts)
            Y_block = torch.empty(X.shape[0], width, dtype=torch.float32, device=X.device)
            for r0, u in U:  # u: (rows, g, d) -> Re^2 + Im^2 of adjacent rows
                f = u.view(u.shape[0], -1, 2).square_().sum(-1)
                Y_block[r0:r0 + u.shape[0]] = f[:, :width]
            if bar is not None:
                bar.update(1)
            yield cols, Y_block
            del Y_block, U  # before the next block is allocated: one block alive, not two
        if bar is not None:
            bar.close()

    def _params(self, ts: list[int], device) -> dict:
        ps = [_transform_params(self.seed, self.n_features_in_, t, int(self.n_hd)) for t in ts]
        return {
            "pos": [torch.as_tensor(p["pos"], device=device) for p in ps],
            "signs": torch.as_tensor(np.stack([p["signs"] for p in ps], 1), device=device),  # (n_hd, g, d)
            "scale": torch.as_tensor(np.stack([p["scale"] for p in ps]), device=device),  # (g, d)
        }

    def _linear_rows(self, X: torch.Tensor, ts: list[int]):
        """Yield (row_offset, U: (rows, g, d)) with U = W_t x for the transforms ts, real rows."""
        d, g, n = self.padded_dim_, len(ts), X.shape[0]
        prm = self._params(ts, X.device)
        signs, scale = prm["signs"], prm["scale"]
        if self.row_chunk_size is not None:
            chunk = max(1, int(self.row_chunk_size))
        else:
            chunk = max(1, _CHUNK_BYTES // (4 * g * d))
        for r0 in range(0, n, chunk):
            xr = X[r0:r0 + chunk].to(torch.float32)
            rows = xr.shape[0]
            u = torch.zeros(rows, g, d, dtype=torch.float32, device=X.device)
            for j in range(g):  # inject the m coordinates into d slots, the last signs folded in
                pos = prm["pos"][j]
                u[:, j, pos] = xr * signs[-1, j, pos]
            u = fwht(u)
            for h in range(int(self.n_hd) - 2, -1, -1):
                u = fwht(u.mul_(signs[h]))
            yield r0, u.mul_(scale)

    def random_block(self, cols: slice, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense equivalent of features ``cols``: ``(R_re, R_im)``, each (n_features, width),
        such that ``Y[:, cols] = (X R_re)**2 + (X R_im)**2``. Materialises the rows of the
        transforms (O(m d) memory): for tests and small inspections only."""
        _check_fitted(self)
        start, stop, step = cols.indices(int(self.n_components))
        if step != 1 or stop <= start:
            raise ValueError(f"cols must be a non-empty contiguous slice, got {cols}.")
        half = self.padded_dim_ // 2
        ts = list(range(start // half, (stop - 1) // half + 1))
        eye = torch.eye(self.n_features_in_, device=device)
        U = torch.cat([u for _, u in self._linear_rows(eye, ts)]).reshape(self.n_features_in_, -1)
        off = start - ts[0] * half
        pairs = U.view(self.n_features_in_, -1, 2)[:, off:off + stop - start]
        return pairs[..., 0].to(dtype), pairs[..., 1].to(dtype)

    @property
    def matrix_bytes(self) -> int:
        """Bytes of the parameters if they were kept: per transform n_hd sign vectors and the
        row scales (float32, d each) and the injection (int64, m): O(k), not O(m k)."""
        _check_fitted(self)
        d, m = self.padded_dim_, self.n_features_in_
        return self.n_transforms_ * ((int(self.n_hd) + 1) * d * 4 + m * 8)
