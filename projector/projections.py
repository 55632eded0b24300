"""Random projections computed block by block, the random matrix never held whole.

The canonical random matrix
---------------------------
``R`` is complex, ``(n_features, n_components)``, with ``Re R`` and ``Im R`` i.i.d.
``N(0, 1/m)`` (``m = n_features``), the distribution of lightonml's simulated OPU.
It is defined as column tiles of ``TILE_COLS`` columns: tile ``t`` (columns
``[t*TILE_COLS, (t+1)*TILE_COLS)``) comes from its own generator,
``torch.Generator(device).manual_seed(seed * 1_000_003 + t)``, which draws
``torch.randn(TILE_COLS, m)`` for ``Re R`` then the same for ``Im R`` (each the
transpose of the tile, in float32, then scaled by ``1/sqrt(m)``). Hence:

* the features do not depend on the block size (a block is a whole number of tiles),
  nor on the row chunking, up to float rounding;
* the first ``k`` components are the same whatever ``n_components >= k``;
* a consumer can regenerate any block of ``R`` later (``random_block``) without
  storing it: the projection's only parameter is its seed.

torch's CPU and CUDA generators differ, so the same seed gives a different (equally
distributed) ``R`` on CPU and on CUDA.

Memory: a block of ``c`` columns costs ``2 * m * c`` values of the compute dtype plus
``n * 2c`` for its product; ``c`` is chosen from the free memory of the input's device
when ``block_size=None``. Binary ``uint8`` input is converted to the compute dtype once
when that fits the budget, else in row chunks for each block.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from projector.encoders import _check_2d, _check_fitted, _check_n_features
from projector.opu import OPUProjection

__all__ = [
    "TILE_COLS",
    "gaussian_tiles",
    "GaussianProjection",
    "LinearProjection",
    "NoProjection",
    "PROJECTIONS",
    "make_projection",
]

TILE_COLS = 256  # width of a canonical tile of R; changing it changes the features
_SEED_STRIDE = 1_000_003  # tile t of seed s uses generator seed s * _SEED_STRIDE + t
_MEM_FRACTION = 0.25  # share of the free memory one projection call may use for temporaries
_FALLBACK_BUDGET_BYTES = 1 << 30  # when free memory cannot be read
# A block of c columns of R is a GEMM with 2c columns (Re and Im): on CPU 2 * 512 is
# as fast as wider and keeps R's block at 334 MB for m = 81536; a GPU likes wider.
_MAX_AUTO_TILES = {"cpu": 2, "cuda": 16}


# --- pure functions: the random matrix and the memory budget ---

def gaussian_tiles(
    seed: int,
    n_features: int,
    tile_start: int,
    n_tiles: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    imag: bool = True,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Canonical tiles ``[tile_start, tile_start + n_tiles)`` of R, stored transposed.

    Returns ``RT: (2 * n_tiles * TILE_COLS, n_features)`` laid out as
    ``[Re tiles..., Im tiles...]``, i.e. ``RT[:c].T = Re R[:, cols]`` and
    ``RT[c:].T = Im R[:, cols]`` with ``c = n_tiles * TILE_COLS``; with ``imag=False``
    only the real half ``(c, n_features)``. Values are drawn in float32 and then cast
    to ``dtype``, so every dtype sees the same R up to rounding. ``out`` may be a
    preallocated buffer of the right shape.
    """
    device = torch.device(device)
    c = n_tiles * TILE_COLS
    rows = 2 * c if imag else c
    if out is None:
        out = torch.empty(rows, n_features, dtype=dtype, device=device)
    elif out.shape != (rows, n_features) or out.dtype != dtype:
        raise ValueError(f"out must be {(rows, n_features)} {dtype}, got {tuple(out.shape)} {out.dtype}")
    direct = dtype == torch.float32  # draw straight into the buffer, no temporary
    tmp = None if direct else torch.empty(TILE_COLS, n_features, dtype=torch.float32, device=device)
    gen = torch.Generator(device=device)
    for i in range(n_tiles):
        gen.manual_seed(seed * _SEED_STRIDE + tile_start + i)
        parts = [slice(i * TILE_COLS, (i + 1) * TILE_COLS)]
        if imag:
            parts.append(slice(c + i * TILE_COLS, c + (i + 1) * TILE_COLS))
        for rows_i in parts:  # Re then Im: the order fixes the stream
            if direct:
                torch.randn(TILE_COLS, n_features, generator=gen, device=device, out=out[rows_i])
            else:
                torch.randn(TILE_COLS, n_features, generator=gen, device=device, out=tmp)
                out[rows_i].copy_(tmp)
    out.mul_(1.0 / math.sqrt(n_features))
    return out


def available_memory_bytes(device: torch.device | str) -> int:
    """Free memory of ``device`` in bytes: CUDA from the driver; CPU from
    /proc/meminfo MemAvailable, capped by a cgroup (container) limit if any;
    a fixed 1 GiB budget-equivalent when neither can be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    try:  # cgroup v2: the container may be allowed less than the host has free
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            room = int(limit) - used
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    if avail is None:
        return int(_FALLBACK_BUDGET_BYTES / _MEM_FRACTION)
    return max(int(avail), 0)


def _auto_block_tiles(n_features: int, n_rows: int, itemsize: int, device: torch.device, budget: int) -> int:
    """Tiles per block so that one block of R and its product fit ``budget``."""
    per_tile = 2 * TILE_COLS * (n_features + n_rows) * itemsize
    cap = _MAX_AUTO_TILES.get(device.type, 2)
    return int(max(1, min(cap, budget // max(per_tile, 1))))


# --- estimators ---

class _RandomProjection:
    """Shared fit / transform / iter_blocks of the projections built on R."""

    name = ""
    _imag = True  # whether the features need Im R

    def __init__(
        self,
        n_components: int,
        seed: int = 0,
        block_size: int | None = None,
        row_chunk_size: int | None = None,
        compute_dtype: torch.dtype | None = None,
        progress: bool = False,
    ):
        self.n_components = n_components
        self.seed = seed
        self.block_size = block_size
        self.row_chunk_size = row_chunk_size
        self.compute_dtype = compute_dtype
        self.progress = progress

    def fit(self, X: torch.Tensor, y=None):
        """X: (n_samples, n_features). Only records n_features: R follows from the seed."""
        X = _check_2d(X, f"{type(self).__name__}.fit")
        if int(self.n_components) < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}.")
        if X.shape[1] < 1:
            raise ValueError("X has no features (shape {}); nothing to project.".format(tuple(X.shape)))
        self.n_features_in_ = X.shape[1]
        return self

    def fit_transform(self, X: torch.Tensor, y=None) -> torch.Tensor:
        return self.fit(X).transform(X)

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        """X: (n_samples, n_features) -> Y: (n_samples, n_components) float32."""
        Y = torch.empty(X.shape[0], self.n_components, dtype=torch.float32, device=X.device)
        for cols, Y_block in self.iter_blocks(X):
            Y[:, cols] = Y_block
        return Y

    def iter_blocks(self, X: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
        """Stream the features: yields ``(cols, Y[:, cols])`` block by block.

        X: (n_samples, n_features); each ``Y_block: (n_samples, cols.stop - cols.start)``
        float32, on X's device. Lets a consumer use the features without holding
        ``Y: (n_samples, n_components)``.
        """
        X = _check_2d(X, f"{type(self).__name__}.transform")
        _check_fitted(self)
        _check_n_features(self, X)
        return self._blocks(X)  # checks above run now, not at the first next()

    def _blocks(self, X: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
        device = X.device
        dtype = self._dtype()
        itemsize = torch.empty((), dtype=dtype).element_size()
        n, m, k = X.shape[0], self.n_features_in_, self.n_components
        budget = int(_MEM_FRACTION * available_memory_bytes(device))

        # Convert X once if its compute-dtype copy fits half the budget, else per row chunk.
        x_bytes = n * m * itemsize
        if self.row_chunk_size is not None:
            chunk = max(1, int(self.row_chunk_size))
        elif X.dtype == dtype or x_bytes <= budget // 2:
            chunk = max(n, 1)
        else:
            chunk = max(1, (budget // 2) // (m * itemsize))
        Xc = X.to(dtype) if chunk >= n else X

        if self.block_size is not None:
            tiles = max(1, math.ceil(int(self.block_size) / TILE_COLS))
        else:
            tiles = _auto_block_tiles(m, min(n, chunk), itemsize, device, budget // 2)
        n_tiles_total = math.ceil(k / TILE_COLS)
        starts = range(0, n_tiles_total, tiles)
        if self.progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"{self.name} projection", unit="block")
        halves = 2 if self._imag else 1
        # One buffer for all blocks; the last, narrower block uses its leading rows.
        buf = torch.empty(halves * min(tiles, n_tiles_total) * TILE_COLS, m, dtype=dtype, device=device)
        for t0 in starts:
            nt = min(tiles, n_tiles_total - t0)
            RT = gaussian_tiles(self.seed, m, t0, nt, device, dtype, imag=self._imag,
                                out=buf[:halves * nt * TILE_COLS])
            c0 = t0 * TILE_COLS
            cols = slice(c0, min(c0 + nt * TILE_COLS, k))
            width = cols.stop - cols.start
            Y_block = torch.empty(n, width, dtype=torch.float32, device=device)
            for r0 in range(0, n, chunk):
                xr = Xc[r0:r0 + chunk]
                P = xr.to(dtype) @ RT.T  # (rows_in_chunk, 2c): [X Re R | X Im R]
                Y_block[r0:r0 + chunk] = self._combine(P, nt * TILE_COLS)[:, :width]
            yield cols, Y_block

    def random_block(
        self,
        cols: slice,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Columns ``cols`` of this projection's R, as ``(R_re, R_im)``, each
        ``(n_features, cols.stop - cols.start)``, regenerated from the seed exactly as
        ``transform`` sees them on a device of the same type."""
        _check_fitted(self)
        start, stop, step = cols.indices(self.n_components)
        if step != 1 or stop <= start:
            raise ValueError(f"cols must be a non-empty contiguous slice within [0, {self.n_components}), got {cols}.")
        t0, t1 = start // TILE_COLS, math.ceil(stop / TILE_COLS)
        RT = gaussian_tiles(self.seed, self.n_features_in_, t0, t1 - t0, device, dtype)
        c = (t1 - t0) * TILE_COLS
        sl = slice(start - t0 * TILE_COLS, stop - t0 * TILE_COLS)
        return RT[:c].T[:, sl], RT[c:].T[:, sl]

    def _dtype(self) -> torch.dtype:
        return self.compute_dtype or torch.float32

    def _combine(self, P: torch.Tensor, c: int) -> torch.Tensor:
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Bytes the fitted projection stores: none, R is regenerated from the seed."""
        return 0

    @property
    def param_count(self) -> int:
        """Stored parameters: none (the seed is a hyperparameter)."""
        return 0

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"


class GaussianProjection(_RandomProjection):
    """Simulated-OPU random features ``Y = |X R|^2``.

    X: (n_samples, n_features), binary uint8 or float -> Y: (n_samples, n_components) float32.
    R: complex (n_features, n_components), Re and Im i.i.d. N(0, 1/n_features), defined
    tile by tile from ``seed`` (see the module docstring) and never held whole.

    The expected kernel is, for samples x, y and s2 = 1/n_features,
    ``E[Y_x . Y_y] / n_components = 4 s2**2 (|x|^2 |y|^2 + (x . y)**2)``.

    Parameters
    ----------
    n_components : number of random features k.
    seed : R's seed; the same seed gives the same features whatever block_size.
    block_size : columns of R generated at once, rounded up to whole tiles of
        ``TILE_COLS``; None chooses from the device's free memory (at most 512 on
        CPU, 4096 on CUDA).
    row_chunk_size : rows of X multiplied at once; None: all rows unless converting a
        uint8 X to the compute dtype would not fit the memory budget.
    compute_dtype : dtype of R and of the matmul (default float32); the output is float32.
    progress : show a tqdm bar over blocks (rate and ETA).

    Attributes
    ----------
    n_features_in_ : number of input features m.
    """

    name = "gaussian"

    def _combine(self, P, c):
        re, im = P[:, :c].float(), P[:, c:].float()
        return re * re + im * im

    @property
    def matrix_bytes(self) -> int:
        """Bytes R would take if materialised as complex64: m * k * 8."""
        _check_fitted(self)
        return self.n_features_in_ * self.n_components * 8


class LinearProjection(_RandomProjection):
    """Linear random features ``Y = Re(X R)`` with the same R as GaussianProjection
    (same seed -> the real part of the same matrix). A reference without the
    modulus-squared nonlinearity.

    X: (n_samples, n_features) -> Y: (n_samples, n_components) float32.
    Parameters as for GaussianProjection.
    """

    name = "linear"
    _imag = False

    def _combine(self, P, c):
        return P.float()

    @property
    def matrix_bytes(self) -> int:
        """Bytes Re R would take if materialised as float32: m * k * 4."""
        _check_fitted(self)
        return self.n_features_in_ * self.n_components * 4


class NoProjection:
    """No projection: features passed through as float32 (the control: ridge directly
    on encoded or raw features).

    X: (n_samples, n_features) -> (n_samples, n_features) float32. ``n_components`` and
    ``seed`` are accepted for a uniform registry interface and ignored.
    """

    name = "none"

    def __init__(self, n_components: int | None = None, seed: int = 0, **kwargs):
        self.n_components = n_components
        self.seed = seed

    def fit(self, X, y=None):
        X = _check_2d(X, "NoProjection.fit")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        X = _check_2d(X, "NoProjection.transform")
        _check_fitted(self)
        _check_n_features(self, X)
        return X.to(torch.float32)

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    def iter_blocks(self, X):
        yield slice(0, X.shape[1]), self.transform(X)

    nbytes = 0
    param_count = 0
    matrix_bytes = 0

    def __repr__(self) -> str:
        return "NoProjection()"


# OPUProjection lives in projector.opu, which imports lightonml only inside fit:
# listing it here costs nothing when lightonml is not installed.
PROJECTIONS = {
    "gaussian": GaussianProjection,
    "linear": LinearProjection,
    "none": NoProjection,
    "opu": OPUProjection,
}


def make_projection(name: str, n_components: int | None = None, seed: int = 0, **kwargs):
    """Build a projection from its registry name, e.g.
    ``make_projection("gaussian", n_components=10_000, seed=0, block_size=1024)``."""
    try:
        cls = PROJECTIONS[name]
    except KeyError:
        raise ValueError(f"Unknown projection {name!r}: choose one of {sorted(PROJECTIONS)}.") from None
    if cls is not NoProjection and n_components is None:
        raise ValueError(f"Projection {name!r} needs n_components (the number of random features).")
    return cls(n_components=n_components, seed=seed, **kwargs)
