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
  up to float rounding;
* a row's features do not depend on the rows it comes with, to the bit: every GEMM
  multiplies one fixed-size block of rows (``_ROW_BLOCK``, the last one zero-padded), so
  the BLAS runs the same kernel on every row whatever the batch;
* the first ``k`` components are the same whatever ``n_components >= k``;
* a consumer can regenerate any block of ``R`` later (``random_block``) without
  storing it: the projection's only parameter is its seed.

torch's CPU and CUDA generators differ, so the same seed gives a different (equally
distributed) ``R`` on CPU and on CUDA.

How a block is computed
-----------------------
On CPU the tiles of a block are drawn side by side by a small thread pool (torch's CPU
``normal_`` is single-threaded; every tile has its own generator, so the values do not
depend on the threads). On CUDA the next block is drawn on a side stream while the
current one multiplies (double-buffered, ordered by events), so generation hides
behind the GEMM. The scale ``1/sqrt(m)`` is applied to the ``n x c`` product rather
than to the ``m x c`` block. The GEMM runs in ``compute_dtype``: float32 by default; on
CUDA a binary (uint8) X -- exact in bfloat16 -- uses ``"bf16x2"``: R split into
``R_hi + R_lo`` (two bfloat16 halves, ~2e-5 relative error) and two bf16 tensor-core
GEMMs accumulated in float32, near-float32 results at bf16 speed. Only X is exact in
low precision; R is Gaussian and is only approximated by a single bfloat16/float16.

Memory: a block of ``c`` columns costs ``2 * m * c`` values of the compute dtype (twice
with prefetch, plus a float32 draw buffer for non-float32 modes) plus ``rows * 2c`` for
the product of one row block and ``n * c`` for the block's features; ``c`` is chosen from
the free memory of the input's device when ``block_size=None``. X is converted to the
compute dtype one row block at a time (``rows * m`` values).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from projector._blocks import BlockProjection
from projector._random_matrix import (_MEM_FRACTION, _MODES, TILE_COLS, _auto_block_tiles, _mm_f32,
                                      available_memory_bytes, gaussian_tiles, resolve_compute_mode)
from projector._linalg import ROW_BLOCK
from projector._validation import _check_2d, _check_fitted, _check_n_features

# Rows multiplied by one GEMM: always this many, the last block zero-padded. A BLAS picks its
# kernel (and its order of summation) from the shape, so a row's features would otherwise depend
# on how many rows came with it: 2e-7 relative under MKL's AVX2 path, enough for scikit-learn's
# sample-order check to fail. The copy into one buffer also fixes the operand's alignment.
_ROW_BLOCK = {"cpu": ROW_BLOCK, "cuda": 1024}

# --- estimators ---

class _RandomProjection(BlockProjection):
    """Shared fit / transform / iter_blocks of the projections built on R."""

    name = ""
    _imag = True  # whether the features need Im R

    def __init__(
        self,
        n_components: int,
        seed: int = 0,
        block_size: int | None = None,
        row_chunk_size: int | None = None,
        compute_dtype: torch.dtype | str | None = None,
        progress: bool = False,
        prefetch: bool | None = None,
    ):
        self.n_components = n_components
        self.seed = seed
        self.block_size = block_size
        self.row_chunk_size = row_chunk_size
        self.compute_dtype = compute_dtype
        self.progress = progress
        self.prefetch = prefetch

    def iter_blocks(self, X: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
        """Stream the features: yields ``(cols, Y[:, cols])`` block by block.

        X: (n_samples, n_features); each ``Y_block: (n_samples, cols.stop - cols.start)``
        float32, on X's device. Lets a consumer use the features without holding
        ``Y: (n_samples, n_components)``.
        """
        X = _check_2d(X, f"{type(self).__name__}.transform")
        _check_fitted(self)
        _check_n_features(self, X)
        return self._blocks_of(X)  # checks above run now

    def _blocks_of(self, X: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
        return ((cols, Ys[0]) for cols, Ys in self._blocks([X]))

    def iter_blocks_multi(self, parts: list[torch.Tensor]) -> Iterator[tuple[slice, list[torch.Tensor]]]:
        """``iter_blocks`` over several inputs at once, each block of R drawn once for all:
        yields ``(cols, [Y_part[:, cols] for each part])``. parts: tensors (n_i, n_features)
        on one device."""
        parts = [_check_2d(P, f"{type(self).__name__}.transform") for P in parts]
        _check_fitted(self)
        for P in parts:
            _check_n_features(self, P)
        if len({P.device for P in parts}) > 1:
            raise ValueError("iter_blocks_multi needs all parts on one device.")
        return self._blocks(parts)

    def _blocks(self, parts: list[torch.Tensor]) -> Iterator[tuple[slice, list[torch.Tensor]]]:
        X = parts[0]
        device = X.device
        mode = resolve_compute_mode(self.compute_dtype, X)
        cdt, copies = _MODES[mode]
        itemsize = torch.empty((), dtype=cdt).element_size()
        n, m, k = sum(P.shape[0] for P in parts), self.n_features_in_, self.n_components
        budget = int(_MEM_FRACTION * available_memory_bytes(device))
        # CUDA: draw the next block on a side stream while this one multiplies.
        prefetch = device.type == "cuda" and self.prefetch is not False
        slots = 2 if prefetch else 1

        rows_per_gemm = _ROW_BLOCK.get(device.type, _ROW_BLOCK["cpu"])
        # every GEMM multiplies one fixed-size block of rows, copied (converted) into this buffer
        xbuf = torch.zeros(rows_per_gemm, m, dtype=cdt, device=device)

        draw_f32 = cdt != torch.float32  # draw in float32, then convert / split
        r_bytes = slots * (copies * itemsize + (4 if draw_f32 else 0))
        if self.block_size is not None:
            tiles = max(1, math.ceil(int(self.block_size) / TILE_COLS))
        else:
            # from the row block, not n: the GEMM's shape (hence its kernel) must not depend on the batch
            tiles = _auto_block_tiles(m, rows_per_gemm, r_bytes, device, budget // 2)
        n_tiles_total = math.ceil(k / TILE_COLS)
        blocks = [(t0, min(tiles, n_tiles_total - t0)) for t0 in range(0, n_tiles_total, tiles)]
        halves = 2 if self._imag else 1
        rows_max = halves * min(tiles, n_tiles_total) * TILE_COLS
        # One set of buffers per slot for all blocks; a narrower last block uses leading rows.
        bufs = [(torch.empty(copies * rows_max, m, dtype=cdt, device=device),
                 torch.empty(rows_max, m, dtype=torch.float32, device=device) if draw_f32 else None)
                for _ in range(slots)]

        def produce(i: int):
            """Block i's R, transposed, in the GEMM layout: (copies * halves * c, m)."""
            t0, nt = blocks[i]
            rows = halves * nt * TILE_COLS
            gemm_buf, f32_buf = bufs[i % slots]
            draw = f32_buf[:rows] if draw_f32 else gemm_buf[:rows]
            gaussian_tiles(self.seed, m, t0, nt, device, torch.float32, imag=self._imag, out=draw, scale=False)
            if draw_f32:
                hi = gemm_buf[:rows]
                hi.copy_(draw)
                if copies == 2:  # R_lo = R - R_hi, rounded again
                    draw.sub_(hi.float())
                    gemm_buf[rows:2 * rows].copy_(draw)
            return gemm_buf[:copies * rows]

        progress = None
        if self.progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(blocks), desc=f"{self.name} projection", unit="block")
        stream = torch.cuda.Stream(device) if prefetch else None
        if stream is not None:
            ready = [torch.cuda.Event() for _ in range(slots)]
            free = [torch.cuda.Event() for _ in range(slots)]

            stream.wait_stream(torch.cuda.current_stream(device))  # buffers and X are ready

            def launch(i):
                with torch.cuda.stream(stream):
                    stream.wait_event(free[i % slots])  # the slot's previous block is multiplied
                    RT = produce(i)
                    ready[i % slots].record(stream)
                return RT

            pending = launch(0) if blocks else None
        try:
            for i, (t0, nt) in enumerate(blocks):
                if stream is None:
                    RT = produce(i)
                else:
                    RT = pending
                    if i + 1 < len(blocks):
                        pending = launch(i + 1)
                    torch.cuda.current_stream(device).wait_event(ready[i % slots])
                c = nt * TILE_COLS
                c0 = t0 * TILE_COLS
                cols = slice(c0, min(c0 + c, k))
                width = cols.stop - cols.start
                h = halves * c
                Y_blocks = []
                for Xp in parts:
                    Y_block = torch.empty(Xp.shape[0], width, dtype=torch.float32, device=device)
                    for r0 in range(0, Xp.shape[0], rows_per_gemm):
                        rows = min(rows_per_gemm, Xp.shape[0] - r0)
                        xbuf[:rows].copy_(Xp[r0:r0 + rows])
                        if rows < rows_per_gemm:
                            xbuf[rows:].zero_()
                        P = _mm_f32(xbuf, RT.T)  # (rows_per_gemm, copies * h): [X Re R | X Im R] (hi, lo)
                        if copies == 2:
                            P = P[:, :h] + P[:, h:]
                        Y_block[r0:r0 + rows] = self._combine(P[:rows], c, m)[:, :width]
                    Y_blocks.append(Y_block)
                if stream is not None:
                    free[i % slots].record(torch.cuda.current_stream(device))
                if progress is not None:
                    progress.update(1)
                yield cols, Y_blocks
        finally:
            if stream is not None:  # nothing may still write into the buffers when they are freed
                torch.cuda.current_stream(device).wait_stream(stream)
            if progress is not None:
                progress.close()

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

    def _combine(self, P: torch.Tensor, c: int, m: int) -> torch.Tensor:
        """P: (rows, halves * c) products with the unscaled R -> features (rows, c) float32."""
        raise NotImplementedError


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
    row_chunk_size : kept for compatibility, no effect: rows are multiplied in fixed blocks
        of ``_ROW_BLOCK`` rows (256 on CPU), so that a row's features do not depend on the
        batch it comes in.
    compute_dtype : how the GEMM ``X @ R`` runs: None (auto: ``"bf16x2"`` for a uint8/bool
        X on CUDA, else float32), a torch dtype (float32, float64, bfloat16, float16: R
        rounded to it) or ``"bf16x2"`` (R split into two bfloat16 halves, ~2e-5 relative
        error, for the bf16 matrix units; X must be exact in bf16, as binary X is). The
        output is float32 in every mode.
    progress : show a tqdm bar over blocks (rate and ETA).
    prefetch : CUDA only: draw block b+1 on a side stream while block b multiplies
        (None/True); False draws and multiplies in turn. CPU tiles are drawn in parallel
        by a thread pool (one generator per tile, so the values do not change).

    Attributes
    ----------
    n_features_in_ : number of input features m.
    """

    name = "gaussian"
    flops_per_mac = 4  # |X R|^2 with complex R: two real products per multiply-add

    def _combine(self, P, c, m):
        # R's scale 1/sqrt(m) applied here, after the GEMM: n x c values instead of m x c
        re, im = P[:, :c], P[:, c:]
        return torch.addcmul(re * re, im, im).mul_(1.0 / m).float()

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
    flops_per_mac = 2
    _imag = False

    def _combine(self, P, c, m):
        return P.mul(1.0 / math.sqrt(m)).float()

    @property
    def matrix_bytes(self) -> int:
        """Bytes Re R would take if materialised as float32: m * k * 4."""
        _check_fitted(self)
        return self.n_features_in_ * self.n_components * 4
