"""``perf --sections projection``: dense ``gaussian`` |XR|^2 (R drawn on the device while
it projects) against the bare GEMM of the same shapes with a ready-made R block (the
device's limit for the dense method); generation of R alone as its share of the
projection time.
"""

from __future__ import annotations

import math

import torch

from benchmarks.perf.common import Report, Sizes, alternate, binary_matrix, timed

def section_projection(rep: Report, sz: Sizes, device) -> None:
    """Dense gaussian against the bare GEMM of the same shapes, and its generation share."""
    from projector._random_matrix import _MODES, TILE_COLS, _mm_f32, gaussian_tiles, resolve_compute_mode
    from projector.gaussian import GaussianProjection

    n, m, k = sz.proj_n, sz.proj_m, sz.proj_k
    rep.log(f"projection: dense gaussian n={n} m={m} k={k} vs bare matmul")
    X = binary_matrix(n, m, device=device)
    proj = GaussianProjection(k, seed=0).fit(X)
    mode = resolve_compute_mode(None, X)
    cdt, copies = _MODES[mode]
    Xc = X.to(cdt)
    it = proj.iter_blocks(X)
    first_cols, _ = next(it)
    it.close()
    width = first_cols.stop - first_cols.start  # the block width transform uses
    n_blocks = math.ceil(k / width)
    c = math.ceil(width / TILE_COLS) * TILE_COLS
    B = torch.randn(copies * 2 * c, m, device=device).to(cdt)

    def bare():  # the GEMMs alone, R ready-made: the device's limit for the dense method
        for _ in range(n_blocks):
            _mm_f32(Xc, B.T)

    hot_s, ref_s = alternate(lambda: proj.transform(X), bare, device, sz.repeats)
    shape = f"n={n} m={m} k={k} block={width} mode={mode}"
    gflops = 2 * n * m * 2 * k * copies / ref_s / 1e9
    rep.add("projection", "dense gaussian (R drawn while projecting)", shape, ref_s / hot_s,
            "dense_vs_bare_matmul", hot_s, "bare GEMM, same shapes", ref_s,
            note=f"bare GEMM {gflops:.1f} GFLOP/s")
    n_tiles = math.ceil(k / TILE_COLS)
    gen_s, _ = timed(lambda: [gaussian_tiles(0, m, t0, min(c // TILE_COLS, n_tiles - t0), device, scale=False)
                              for t0 in range(0, n_tiles, c // TILE_COLS)], device, sz.repeats)
    rep.add("projection", "generation of R alone", shape, gen_s / hot_s, "generation_share", gen_s,
            "dense projection", hot_s, note="share of the projection time spent drawing R")
