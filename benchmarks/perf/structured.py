"""``perf --sections structured``: the Hadamard-based projection against ``gaussian`` at
m = 81,536, k = 120,000, rows reduced to fit the time; ``gaussian`` is timed on a few
blocks and extrapolated to all of them, which the row says.
"""

from __future__ import annotations

import math

from benchmarks.perf.common import Report, Sizes, binary_matrix, timed
from benchmarks.core.timing import PeakMemory

def section_structured(rep: Report, sz: Sizes, device) -> None:
    """Structured against gaussian at the seeds' shape, rows reduced; gaussian extrapolated."""
    from projector.projections import GaussianProjection
    from projector.structured import StructuredProjection

    n, m, k = sz.struct_n, sz.struct_m, sz.struct_k
    rep.log(f"structured: n={n} m={m} k={k} (gaussian on {sz.struct_gauss_blocks} blocks, extrapolated)")
    X = binary_matrix(n, m, seed=1, device=device)
    st = StructuredProjection(k, seed=0).fit(X)
    with PeakMemory(device) as mem_s:
        s_time, _ = timed(lambda: st.transform(X), device, sz.repeats)
    g = GaussianProjection(k, seed=0).fit(X)

    def some_blocks():
        it = g.iter_blocks(X)
        cols = [c for c, _ in (next(it) for _ in range(sz.struct_gauss_blocks))]
        it.close()
        return cols

    with PeakMemory(device) as mem_g:
        g_part, cols = timed(some_blocks, device, 1)
    width = cols[0].stop - cols[0].start
    n_blocks = math.ceil(k / width)
    g_time = g_part / len(cols) * n_blocks
    shape = f"n={n} m={m} (d={st.padded_dim_}) k={k}"
    rep.add("structured", "structured vs gaussian, time", shape, g_time / s_time, "structured_speedup", s_time,
            f"gaussian ({len(cols)} of {n_blocks} blocks timed, extrapolated)", g_time, mem_s.delta_bytes,
            note=f"gaussian block peak {mem_g.delta_bytes / 1e6:.0f} MB; structured {s_time / n * 1e3:.2f} ms/row")
