"""Which code path the BLAS libraries take, and a check that forcing another one worked.

``make test`` runs the numerical tests (``-m numerics``) a second time with MKL (torch) and
OpenBLAS (scipy's and numpy's copies) forced off this CPU's default code path, so that a
tolerance tuned on one CPU fails here and not on the next one. Before that run it runs this
script under the same forcing: it probes a float32 GEMM in each library in a child process
with the forcing and in one without it (the variables below removed), prints the paths
(OpenBLAS's core type from threadpoolctl, MKL's reproducibility mode from ``MKL_VERBOSE``) and
exits 1 when a library computed the same bits both ways: the forcing did not reach it.

The forcing: ``MKL_CBWR=COMPATIBLE`` (MKL's SSE2-level reproducible path; ``AVX2`` is MKL's
default on AMD and ``MKL_ENABLE_INSTRUCTIONS`` is ignored there) and
``OPENBLAS_CORETYPE=Sandybridge`` (AVX kernels, where a current CPU gets Haswell, Zen or
SkylakeX ones). On a CPU whose default these are, pick others: ``make test
NUMERICS_BLAS="MKL_CBWR=AVX OPENBLAS_CORETYPE=Prescott"``.

Usage: ``env MKL_CBWR=COMPATIBLE OPENBLAS_CORETYPE=Sandybridge python tests/blas_paths.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

BLAS_VARIABLES = ("MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE", "OPENBLAS_CORETYPE",
                  "OPENBLAS_VERBOSE")
FORCED = {"MKL_CBWR": "COMPATIBLE", "OPENBLAS_CORETYPE": "Sandybridge"}

_PROBE = r"""
import hashlib, json
import numpy as np, torch
from scipy.linalg import blas
from threadpoolctl import threadpool_info

rng = np.random.default_rng(0)
a = rng.standard_normal((300, 700), dtype=np.float32)
b = rng.standard_normal((700, 500), dtype=np.float32)
digest = lambda x: hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]
out = {"torch (MKL)": digest((torch.from_numpy(a) @ torch.from_numpy(b)).numpy()),
       "scipy (OpenBLAS)": digest(blas.sgemm(1.0, a, b)),
       "numpy (OpenBLAS)": digest(a @ b),
       "openblas": sorted({f"{i['filepath'].rsplit('/', 1)[-1].split('-')[0]}: {i.get('architecture')}" for i in threadpool_info()
                           if i.get("internal_api") == "openblas"})}
print(json.dumps(out))
"""


def probe(env: dict) -> dict:
    """The probe's result in a child process with ``env``: GEMM digests per library, OpenBLAS's
    core types and MKL's reproducibility mode (``CNR:...`` of its verbose line)."""
    env = {**env, "MKL_VERBOSE": "1"}
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"the BLAS probe failed:\n{done.stderr}")
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    modes = sorted({w for line in lines if line.startswith("MKL_VERBOSE") for w in line.split() if w.startswith("CNR:")})
    result["mkl"] = modes or ["(no MKL_VERBOSE line: torch without MKL?)"]
    return result


def default_env(env: dict | None = None) -> dict:
    """``env`` (default: this process's) without the variables that force a BLAS path."""
    env = dict(os.environ if env is None else env)
    for name in BLAS_VARIABLES:
        env.pop(name, None)
    return env


def unchanged(forced: dict, default: dict) -> list[str]:
    """The libraries whose GEMM gave the same bits forced and by default."""
    return [lib for lib in ("torch (MKL)", "scipy (OpenBLAS)", "numpy (OpenBLAS)") if forced[lib] == default[lib]]


def main() -> int:
    set_here = {k: os.environ[k] for k in BLAS_VARIABLES if k in os.environ}
    if not set_here:
        print(f"blas_paths: no BLAS path forced (set e.g. {' '.join(f'{k}={v}' for k, v in FORCED.items())})")
        return 1
    forced, default = probe(dict(os.environ)), probe(default_env())
    print(f"blas_paths: forced {set_here}")
    for key in ("mkl", "openblas"):
        print(f"  {key}: default {default[key]} -> forced {forced[key]}")
    same = unchanged(forced, default)
    if same:
        print(f"blas_paths: FAILED: {', '.join(same)} computed the same bits as on the default path: the forcing "
              "did not change its code path on this CPU. Pick another, e.g. NUMERICS_BLAS=\"MKL_CBWR=AVX "
              "OPENBLAS_CORETYPE=Prescott\".")
        return 1
    print("blas_paths: every library took another code path (its GEMM's bits differ from the default's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
