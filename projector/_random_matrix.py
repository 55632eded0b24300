"""The canonical random matrix R of the dense projections, drawn tile by tile, and the memory budget
that sizes a block: pure functions, no estimator (those are :mod:`projector.gaussian`'s).
See :mod:`projector.gaussian` for R's definition."""

from __future__ import annotations

import math

import torch

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
    scale: bool = True,
) -> torch.Tensor:
    """Canonical tiles ``[tile_start, tile_start + n_tiles)`` of R, stored transposed.

    Returns ``RT: (2 * n_tiles * TILE_COLS, n_features)`` laid out as
    ``[Re tiles..., Im tiles...]``, i.e. ``RT[:c].T = Re R[:, cols]`` and
    ``RT[c:].T = Im R[:, cols]`` with ``c = n_tiles * TILE_COLS``; with ``imag=False``
    only the real half ``(c, n_features)``. Values are drawn in float32 and then cast
    to ``dtype``, so every dtype sees the same R up to rounding. ``out`` may be a
    preallocated buffer of the right shape. ``scale=False`` leaves out the factor
    ``1/sqrt(n_features)`` (the projections apply it to their product instead: a pass
    over ``n x c`` values rather than ``m x c``).

    On CPU the tiles are drawn by a small thread pool, one tile per task: each tile
    has its own generator, so the values do not depend on the number of threads.
    """
    device = torch.device(device)
    c = n_tiles * TILE_COLS
    rows = 2 * c if imag else c
    if out is None:
        out = torch.empty(rows, n_features, dtype=dtype, device=device)
    elif out.shape != (rows, n_features) or out.dtype != dtype:
        raise ValueError(f"out must be {(rows, n_features)} {dtype}, got {tuple(out.shape)} {out.dtype}")

    def draw(i: int) -> None:
        direct = dtype == torch.float32  # draw straight into the buffer, no temporary
        tmp = None if direct else torch.empty(TILE_COLS, n_features, dtype=torch.float32, device=device)
        gen = torch.Generator(device=device)
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

    pool = _generation_pool() if device.type == "cpu" and n_tiles > 1 else None
    if pool is None:
        for i in range(n_tiles):
            draw(i)
    else:  # torch's CPU normal_ is single-threaded: draw independent tiles side by side
        list(pool.map(draw, range(n_tiles)))
    if scale:
        out.mul_(1.0 / math.sqrt(n_features))
    return out


_POOL = None


def _generation_pool():
    """A process-wide pool of torch.get_num_threads() workers drawing CPU tiles (None for one thread)."""
    global _POOL
    workers = max(1, min(torch.get_num_threads(), 8))
    if workers == 1:
        return None
    if _POOL is None or _POOL._max_workers != workers:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gradfree-tiles")
    return _POOL


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


def _auto_block_tiles(n_features: int, n_rows: int, bytes_per_value: int, device: torch.device, budget: int) -> int:
    """Tiles per block so that the block's buffers of R and its product fit ``budget``.

    ``bytes_per_value``: bytes one value of R costs over all of its buffers (the float32
    draw, the compute copy(ies), both prefetch slots)."""
    per_tile = 2 * TILE_COLS * (n_features * bytes_per_value + n_rows * 8)
    cap = _MAX_AUTO_TILES.get(device.type, 2)
    return int(max(1, min(cap, budget // max(per_tile, 1))))


# How the GEMM X @ R is computed. X is exact in every mode when it holds small integers
# (a binary uint8 X); R is Gaussian and is only approximated in the low-precision ones.
_MODES = {
    # mode: (dtype of X and of R's copy in the GEMM, number of copies of R)
    "float32": (torch.float32, 1),
    "float64": (torch.float64, 1),
    "bfloat16": (torch.bfloat16, 1),  # R rounded to 8 bits of mantissa (~0.4 %)
    "float16": (torch.float16, 1),  # R rounded to 11 bits (~0.05 %)
    # R = R_hi + R_lo, both bfloat16 (16 bits of mantissa, ~2e-5), two bf16 GEMMs with
    # float32 accumulation: near-float32 accuracy at the speed of the bf16 tensor cores.
    "bf16x2": (torch.bfloat16, 2),
}
_DTYPE_MODES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16",
                torch.float16: "float16"}
_EXACT_LOW_PRECISION = (torch.uint8, torch.int8, torch.bool)  # values exact in bf16 / fp16


def resolve_compute_mode(compute_dtype, X: torch.Tensor) -> str:
    """The GEMM mode for ``compute_dtype`` (None/"auto", a torch dtype or a mode name) and X.

    Auto: on CUDA a binary/small-integer X (exact in bfloat16) uses ``"bf16x2"``; everything
    else ``"float32"`` (CPUs without bf16 matrix units gain nothing from bf16)."""
    if compute_dtype is None or compute_dtype == "auto":
        if X.device.type == "cuda" and X.dtype in _EXACT_LOW_PRECISION:
            return "bf16x2"
        return "float32"
    if isinstance(compute_dtype, torch.dtype):
        if compute_dtype not in _DTYPE_MODES:
            raise ValueError(f"compute_dtype {compute_dtype} is not supported; choose one of "
                             f"{sorted(_DTYPE_MODES.values())}, 'bf16x2' or None.")
        return _DTYPE_MODES[compute_dtype]
    if compute_dtype not in _MODES:
        raise ValueError(f"compute_dtype {compute_dtype!r} is not understood; choose None (auto), a torch "
                         f"dtype or one of {sorted(_MODES)}.")
    return str(compute_dtype)


def _mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with float32 output; low-precision inputs accumulate in float32 (CUDA's mm with
    out_dtype; on CPU the inputs are upcast, which computes the same sums)."""
    if a.dtype in (torch.float32, torch.float64):
        return a @ b
    if a.is_cuda:
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (RuntimeError, TypeError):  # pragma: no cover - a torch or GPU without mm(out_dtype)
            pass
    return a.float() @ b.float()
