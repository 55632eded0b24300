"""``perf --sections streaming``: the ridge fitted from a streamed Gram against
project-then-fit, time and peak memory; with ``--full`` also the seeds' STL-10 shape
(n = 13,000, m = 81,536) on fewer blocks than k = 120,000 (the memory does not depend
on k; the row says so).
"""

from __future__ import annotations

import math

import torch

from benchmarks.perf.common import Report, Sizes, binary_matrix, timed
from benchmarks.core.timing import PeakMemory

def section_streaming(rep: Report, sz: Sizes, device) -> None:
    """Streamed Gram vs project-then-fit (time, memory, agreement); the STL-10 shape's memory."""
    from projector.projections import GaussianProjection
    from projector.ridge import RidgeClassifier
    from projector.streaming import StreamingRidgeClassifier

    n, m, k = sz.stream_n, sz.stream_m, sz.stream_k
    nv = n // 4
    rep.log(f"streaming: n={n} (+{nv} val) m={m} k={k}, streamed vs materialised")
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 10, (n + nv,), generator=g).to(device)
    X = binary_matrix(n + nv, m, seed=5, device=device)
    X[:, :40] |= (y[:, None] == torch.arange(40, device=device)[None, :] % 10).to(torch.uint8)
    with PeakMemory(device) as mem_s:
        t_s, st = timed(lambda: StreamingRidgeClassifier(GaussianProjection(k, seed=0)).fit(X[:n], y[:n], X[n:], y[n:]),
                        device, 1)
    Xt = binary_matrix(200, m, seed=6, device=device)

    def materialised():
        proj = GaussianProjection(k, seed=0).fit(X[:n])
        return proj, RidgeClassifier().fit(proj.transform(X[:n]), y[:n], proj.transform(X[n:]), y[n:])

    with PeakMemory(device) as mem_m:
        t_m, (proj, ridge) = timed(materialised, device, 1)
    a, b = st.decision_function(Xt), ridge.decision_function(proj.transform(Xt))
    err = float((a - b).abs().max() / b.abs().max())
    shape = f"n={n} n_val={nv} m={m} k={k} solver={st.solver_}"
    rep.add("streaming", "streamed fit vs project + fit, time", shape, t_s / t_m, "streaming_time_ratio", t_s,
            "project + RidgeClassifier", t_m, mem_s.delta_bytes,
            note=f"materialised peak {mem_m.delta_bytes / 1e6:.0f} MB vs streamed {mem_s.delta_bytes / 1e6:.0f} MB; "
                 f"decision functions agree to {err:.1e} (relative)")
    if not sz.stl_stream:
        return
    n, m = sz.stl_n, sz.stl_m
    block = 512  # CPU's automatic block width for the dense projection
    k = sz.stl_blocks * block
    nv = n // 5
    rep.log(f"streaming: STL-10 shape n={n - nv} train + {nv} val, m={m}, {sz.stl_blocks} blocks of {block} "
            "(memory does not grow with k)")
    with PeakMemory(device) as mem:
        X = binary_matrix(n, m, seed=7, device=device)
        y = torch.arange(n, device=device) % 10
        est = StreamingRidgeClassifier(GaussianProjection(k, seed=0), solver="dual",
                                       block_size=block, progress=True)
        t, _ = timed(lambda: est.fit(X[:n - nv], y[:n - nv], X[n - nv:], y[n - nv:]), device, 1)
        del X
    rep.add("streaming", "STL-10 shape streamed dual fit, peak memory", f"N={n} m={m} k={k} (of 120,000)",
            mem.delta_bytes / 1e9, "streaming_peak_gb", t, peak_bytes=mem.delta_bytes,
            note=f"{sz.stl_blocks} blocks of {block} instead of {math.ceil(120_000 / block)}; Gram {est.gram_bytes_ / 1e9:.2f} GB float32; "
                 "13-alpha grid; inputs included; absolute process peak "
                 f"{mem.peak_bytes / 1e9:.2f} GB")
