"""Rough memory and time of a cell before it runs, for ``gradfree run --suite ... --dry-run``.

Each method declares its own cost model (``flops`` and ``memory_bytes``, see
:mod:`benchmarks.core.protocol`), from sizes: the number of images, the feature dimension at
the cut, the number of random features ``k`` and the floating-point operations of each
phase (the backbone's and the trainers' forward FLOPs counted once on the meta device,
no weights loaded):

* extraction: forward FLOPs per image x images;
* projection ``|XR|^2`` (complex R): ``4 n d k``; ``linear``: ``2 n d k``;
* ridge: the smaller Gram (``2 n d^2`` or ``2 n^2 d``), then one eigendecomposition (~``9 m^3``) or a
  Cholesky per alpha (``m^3 / 3``), as the ridge picks; the logistic control: L-BFGS iterations of
  ``4 n d c`` per C of its grid;
  the exact kernel: the (N, N) Gram and one factorisation per alpha;
* training: 3 x forward FLOPs per image x images x epochs (1 x for a frozen backbone).

FLOPs become seconds at a rate per phase and device type: the median rate *measured* in earlier
results (of the same folder, and of ``--rates-from``; the same estimates divided by the recorded
``extract_s``, ``project_s``, ``fit_s``, ``train_s`` + ``tune_s``) for the same method and configuration
label at the size nearest the cell's (:meth:`Rates.at`), else for the phase, else the rough defaults of
:data:`DEFAULT_GFLOPS`. A cell that already has a result shows its measured time. Memory is the largest of the
live arrays (uint8 images, features, projected features, Gram matrices,
model). These are orders of magnitude to plan a sweep, not predictions; the same
memory figure is what :func:`benchmarks.harness.cells.plan_memory` refuses a cell on.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from benchmarks.harness.cells import Cell, cell_shape, describe, format_bytes
from benchmarks.harness.registry import REGISTRY, get_method, label, make_config
from benchmarks.core.protocol import CellShape, planned_memory_bytes
from benchmarks.harness.results import RESULTS_FILE, read_rows

#: Rough sustained GFLOP/s per phase, used when no earlier result measured them. The CPU
#: figures are a 2-core x86 laptop-class machine; the CUDA ones a data-centre GPU.
DEFAULT_GFLOPS = {
    "cpu": {"extract": 30.0, "project": 50.0, "fit": 20.0, "train": 15.0},
    "cuda": {"extract": 5000.0, "project": 20000.0, "fit": 1000.0, "train": 3000.0},
}


class Rates(dict):
    """GFLOP/s measured per key (the median over its samples, as a dict), and the samples behind them,
    ``(FLOPs, GFLOP/s)`` per key: :meth:`at` plans a phase at the rate measured at the size nearest its
    own. Small cells' times are mostly fixed costs: scaled to a whole dataset, their rate planned the exact
    kernel on 45,000 images at 103 minutes, which took 12."""

    def __init__(self, samples: dict[tuple, list[tuple[float, float]]] | None = None):
        self.samples = samples or {}
        super().__init__({k: statistics.median(r for _, r in v) for k, v in self.samples.items() if v})

    def merged(self, other: "Rates") -> "Rates":
        """Both sets of samples."""
        keys = set(self.samples) | set(other.samples)
        return Rates({k: self.samples.get(k, []) + other.samples.get(k, []) for k in keys})

    def at(self, key: tuple, flops: float) -> float | None:
        """The median rate of ``key``'s samples within a factor 2 of the size nearest ``flops`` (None
        without samples)."""
        samples = self.samples.get(key)
        if not samples:
            return None
        distance = [abs(math.log(f / flops)) if flops > 0 else 0.0 for f, _ in samples]
        nearest = min(distance)
        return statistics.median(r for (_, r), d in zip(samples, distance) if d <= nearest + math.log(2))


def measured_rates(results_csv: str | Path) -> Rates:
    """GFLOP/s measured by earlier final rows (:class:`Rates`), per (device type, phase) and, more precisely,
    per (device type, phase, method, label): a frozen linear probe and a whole network in one cycle run at
    rates far apart, and one median of both planned the second 6x too fast. A trainer's tuning runs
    (``tune_s``) count with its ``train_s``: its FLOPs include the grid's epochs. A phase the feature cache
    served (``cached_phases``: charged what it cost once, in every cell that reuses it) gives no sample; the
    row's other phases do (study rows mostly reuse their features: their fit rates were all left out)."""
    samples: dict[tuple, list[tuple[float, float]]] = {}
    for row in read_rows(results_csv):
        if row.get("row_type") != "final" or row.get("status") != "ok" or row.get("method") not in REGISTRY:
            continue
        try:
            options = json.loads(row.get("method_config") or "{}")
            config = make_config(get_method(row["method"]), options)
            shape = CellShape(backbone=row["backbone"], cut=row["cut"] or None, image_size=int(row["image_size"]),
                              n_classes=int(row["n_classes"]), n_train=int(row["n_train"]),
                              n_val=int(row["n_val"]), n_test=int(row["n_test"]))
            flops, _ = get_method(row["method"]).flops(config, shape)
            extra = json.loads(row.get("extra") or "{}")
        except Exception:  # a row of another version: no rate from it
            continue
        device = "cuda" if row.get("device", "").startswith("cuda") else "cpu"
        for phase, f in flops.items():
            seconds = float(row.get(f"{phase}_s") or 0) + (float(extra.get("tune_s") or 0) if phase == "train" else 0)
            if f > 0 and seconds > 0.05 and f"{phase}_s" not in extra.get("cached_phases", ()):
                for key in ((device, phase), (device, phase, row["method"], label(row["method"], options))):
                    samples.setdefault(key, []).append((f, f / seconds / 1e9))
    return Rates(samples)


def estimate(cell: Cell, rates: dict[tuple, float] | None = None) -> dict:
    """Images, feature dim, k, peak memory (bytes) and counted time (s) of ``cell``: each phase's FLOPs at
    the rate measured for that method and configuration (at the size nearest the cell's, :meth:`Rates.at`),
    else for that phase, else the default rate."""
    rates = rates or {}
    method_cls = get_method(cell.method)
    config = cell.config
    shape = cell_shape(cell)
    flops, info = method_cls.flops(config, shape)
    seconds, sources = 0.0, set()
    name = method_cls.label(config)
    at = rates.at if isinstance(rates, Rates) else (lambda key, _: rates.get(key))
    for phase, f in flops.items():
        rate = at((shape.device, phase, cell.method, name), f) or at((shape.device, phase), f)
        sources.add("measured" if rate else "default")
        seconds += f / 1e9 / (rate or DEFAULT_GFLOPS[shape.device][phase])
    return {"images": shape.n_images, "feature_dim": info["feature_dim"], "k": info["k"],
            "memory_bytes": planned_memory_bytes(method_cls, config, shape), "time_s": seconds,
            "rate_source": "+".join(sorted(sources)), "device": shape.device}


def _fmt_time(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def print_plan(cells: list[Cell], out_dir: str | Path, errors: list[Exception | None] | None = None,
               rates_from: list[str | Path] = (), retime: set[str] = frozenset()) -> int:
    """The dry-run table: one line per cell, with totals; return the number of cells a run would refuse.

    ``errors``: per cell, what refuses it (:func:`benchmarks.harness.executors.preflight`, the checks a run
    makes), or None; a refused cell is listed as such, with the reason, and not estimated.
    ``rates_from``: other results folders (or files) whose measured rates are used where ``out_dir`` has
    none yet (a new suite planned from an earlier one on the same machine). ``retime``: finished cells a run
    sets aside to run again (``--retime-busy``), listed as ``re-time`` and counted as to run."""
    errors = errors or [None] * len(cells)
    path = Path(out_dir) / RESULTS_FILE
    rates = Rates()
    for other in [*map(Path, rates_from), path]:
        rates = rates.merged(measured_rates(other / RESULTS_FILE if other.is_dir() else other))
    measured = {r["cell_key"]: float(r["train_total_s"] or 0) for r in read_rows(path)
                if r["row_type"] == "final" and r["status"] == "ok"}
    print(f"{'#':>3s}  {'cell_key':16s}  {'images':>7s}  {'feat dim':>8s}  {'k':>6s}  {'memory':>9s}  "
          f"{'time':>8s}  {'status':8s}  cell")
    total_todo = 0.0
    for i, (cell, error) in enumerate(zip(cells, errors), 1):
        key = cell.key()
        if error is not None:
            print(f"{i:>3d}  {key:16s}  {'':>7s}  {'':>8s}  {'':>6s}  {'':>9s}  {'':>8s}  {'REFUSED':8s}  "
                  f"{describe(cell)}\n     {type(error).__name__}: {error}")
            continue
        est = estimate(cell, rates)
        if key in measured and key not in retime:
            status, t = "done", f"{measured[key]:.0f} s*"
        elif key in measured:
            status, t = "re-time", "~" + _fmt_time(est["time_s"])
            total_todo += est["time_s"]
        else:
            status, t = "to run", "~" + _fmt_time(est["time_s"])
            total_todo += est["time_s"]
        k = "inf" if est["k"] == -1 else est["k"] or ""
        print(f"{i:>3d}  {key:16s}  {est['images']:>7d}  {est['feature_dim'] or '':>8}  {k:>6}  "
              f"{format_bytes(est['memory_bytes']):>9s}  {t:>8s}  {status:8s}  {describe(cell)}")
    n_done = sum(c.key() in measured and c.key() not in retime for c in cells)
    n_refused = sum(e is not None for e in errors)
    source = (f"rates measured in {', '.join(str(p) for p in [*rates_from, path])}, where they were; elsewhere "
              "the default rates" if rates else "default rates (benchmarks.harness.estimate.DEFAULT_GFLOPS)")
    print(f"\n{len(cells)} cells, {n_done} done before; ~{_fmt_time(total_todo)} of counted time to run "
          f"({source}; untimed evaluation and data loading come on top). * measured. Results go to {path}.")
    if n_refused:
        print(f"{n_refused} cell(s) REFUSED: a run would stop before any work; fix what each line above says.")
    return n_refused
