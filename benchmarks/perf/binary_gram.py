"""``perf --sections binary_gram`` (or ``binary-gram``): the Gram ``X X^T`` of a 0/1 matrix in
integer arithmetic against float32, timed in one run on the same matrix.

Paths (:mod:`projector._binary_gram`, each asked for by name; all give the same counts, checked
here): ``int8`` (``torch._int_mm``, int32 accumulation: oneDNN's VNNI / AMX-INT8 kernels on
CPU), ``popcount`` (bit-packed rows, ``numpy.bitwise_count``; CPU only) and the reference
``float32``, the path the exact kernel takes without them (BLAS ``ssyrk`` of a float32 copy,
what ``projector._linalg.gram`` runs); a bare float32 GEMM ``torch.mm(X, X.T)`` is timed too,
for the issue's comparison. Best of ``bgram_repeats``, the paths taken in turn each round. The
targeted figures are float32 time / int8 time, against each float32 reference: >= 5 where
the CPU has AMX-INT8, >= 2 where it has VNNI (issue 22), at the issue's shape (4,096 x
16,384: the default and ``--full``); at a reduced shape (``--quick``), without VNNI or AMX,
or on a GPU, they are reported without a target. The rows say what the CPU has
(``/proc/cpuinfo`` flags, torch's CPU capability), whether every path gave the same counts,
and which path the kernel would choose here (measured once per process on a small block).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from benchmarks.perf.common import Report, Sizes, binary_matrix, timed

_FLAGS = ("amx_int8", "amx_tile", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The flags of ``_FLAGS`` that /proc/cpuinfo lists (or the given text); empty where unreadable."""
    if cpuinfo is None:
        with contextlib.suppress(OSError):
            cpuinfo = Path("/proc/cpuinfo").read_text()
    for line in (cpuinfo or "").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split()) & set(_FLAGS)
    return set()


def int8_tier(device, flags: set[str]) -> str:
    """``"amx"`` where the CPU has AMX-INT8, ``"vnni"`` where it has VNNI, else ``""``: which targets the
    integer paths are held to (issue 22: the binary Gram >= 5x / >= 2x float32, the seeds' kernel <= 0.25x /
    <= 0.5x its float32 floor)."""
    if torch.device(device).type != "cpu":
        return ""
    return "amx" if "amx_int8" in flags else "vnni" if flags & {"avx512_vnni", "avx_vnni"} else ""


def int8_metric(device, flags: set[str]) -> tuple[str, str]:
    """(metric, what the CPU has): the AMX target where the CPU has AMX-INT8, the VNNI one where
    it has VNNI, else the untargeted metric."""
    if torch.device(device).type != "cpu":
        return "binary_gram_int8_speedup", f"{torch.device(device).type} device"
    capability = torch.backends.cpu.get_cpu_capability()
    has = (f"CPU flags: {' '.join(sorted(flags)) or 'none of ' + ' '.join(_FLAGS)}; "
           f"torch CPU capability {capability}")
    tier = int8_tier(device, flags)
    what = {"amx": "AMX-INT8; ", "vnni": "VNNI, no AMX; ", "": "neither VNNI nor AMX; "}[tier]
    return "binary_gram_int8_speedup" + (f"_{tier}" if tier else ""), what + has


def section_binary_gram(rep: Report, sz: Sizes, device) -> None:
    """Each Gram path against float32 on one random 0/1 (n, m) matrix, best of the repeats."""
    from projector import _binary_gram as BG
    from projector._linalg import gram

    sec = "binary_gram"
    n, m, repeats = sz.bgram_n, sz.bgram_m, sz.bgram_repeats
    shape = f"n={n} m={m} 0/1"
    X = binary_matrix(n, m, seed=2, device=device)
    flags = cpu_flags() if torch.device(device).type == "cpu" else set()
    metric, has = int8_metric(device, flags)
    targeted = n * m >= 4096 * 16_384  # the shape; a reduced one (--quick) has no target
    rep.log(f"binary_gram: {shape}, best of {repeats}; {has}{'' if targeted else ' (reduced: targets not applied)'}")

    paths = ["float32", "int8"] + (["popcount"] if torch.device(device).type == "cpu" else [])
    Xf = X.float()

    def run(path):  # float32: gram's ssyrk in tiles; the others: the binary path itself, explicitly
        return gram([X], None, rows=True) if path == "float32" else BG.rows_gram([X], path)

    runs = {p: (lambda p=p: run(p)) for p in paths}
    runs["gemm"] = lambda: torch.mm(Xf, Xf.T)
    best, results = {}, {}
    for name, fn in runs.items():  # warm-up, and the counts of each path
        results[name] = fn()
    for _ in range(max(1, repeats)):
        for name, fn in runs.items():
            best[name] = min(best.get(name, float("inf")), timed(fn, device, 1)[0])
    exact = all(torch.equal(results[p], results["float32"]) for p in paths) and \
        torch.equal(results["gemm"], results["float32"])
    del results
    chosen = BG.gram_path([X])
    t32, gemm = best["float32"], best["gemm"]
    common = (f"{has}; float32 ssyrk {t32:.3g}s, bare float32 GEMM {gemm:.3g}s "
              f"({2 * n * n * m / gemm / 1e9:.0f} GFLOP/s); counts {'identical' if exact else 'DIFFER'} "
              f"across paths; the kernel's measured choice here: {chosen}")
    for path in paths[1:]:
        rep.add(sec, f"{path} Gram vs float32 (ssyrk), speed-up", shape, t32 / best[path],
                metric if path == "int8" else "binary_gram_popcount_speedup", best[path],
                "float32 ssyrk of the same matrix (projector._linalg.gram)", t32, note=common, targeted=targeted)
    rep.add(sec, "int8 Gram vs bare float32 GEMM (torch.mm), speed-up", shape, gemm / best["int8"], metric,
            best["int8"], "torch.mm(X, X.T) in float32 of the same matrix", gemm, note=common, targeted=targeted)
    if not exact:
        raise AssertionError(f"binary_gram: the Gram paths disagree on the same {shape} matrix")
