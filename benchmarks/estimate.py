"""Rough memory and time of a cell before it runs, for ``gradfree run --suite ... --dry-run``.

Estimates come from sizes: the number of images, the feature dimension at the
cut (``Extractor.out_shape``), the number of random features ``k`` and the
floating-point operations of each phase (the backbone's and the trainers'
forward FLOPs counted once on the meta device, no weights loaded):

* extraction: forward FLOPs per image x images;
* projection ``|XR|^2`` (complex R): ``4 n d k``; ``linear``: ``2 n d k``;
* ridge: the smaller Gram (``2 n d^2`` or ``2 n^2 d``) and its eigendecomposition (~``9 m^3``);
* training: 3 x forward FLOPs per image x images x epochs (1 x for a frozen backbone).

FLOPs become seconds at a rate per phase and device type: the median rate
*measured* in earlier results of the same folder when there are some (the same
estimates divided by the recorded ``extract_s``, ``project_s``, ``fit_s``,
``train_s``), else the rough defaults of :data:`DEFAULT_GFLOPS`. A cell that
already has a result shows its measured time. Memory is the largest of the
live arrays (uint8 images, features, projected features, Gram matrices,
model). These are orders of magnitude to plan a sweep, not predictions.
"""

from __future__ import annotations

import copy
import functools
import json
import statistics
from pathlib import Path

import torch

from benchmarks.runner import Cell

#: Rough sustained GFLOP/s per phase, used when no earlier result measured them. The CPU
#: figures are a 2-core x86 laptop-class machine; the CUDA ones a data-centre GPU.
DEFAULT_GFLOPS = {
    "cpu": {"extract": 30.0, "project": 50.0, "fit": 20.0, "train": 15.0},
    "cuda": {"extract": 5000.0, "project": 20000.0, "fit": 1000.0, "train": 3000.0},
}
#: Full training / test set sizes (images) when train_per_class / test_per_class is 0 (all).
FULL_SIZES = {"cifar10": (50000, 10000), "stl10": (5000, 8000), "fashion-mnist": (60000, 10000),
              "animals10": (20943, 5236)}
N_CLASSES = {"cifar10": 10, "stl10": 10, "fashion-mnist": 10, "animals10": 10}
_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def _device_type(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


@functools.lru_cache(maxsize=None)
def _base(backbone: str):
    from benchmarks.backbones import build_base

    return build_base(backbone, "none").eval()  # eval: out_shape runs a batch of one through BatchNorm


@functools.lru_cache(maxsize=None)
def backbone_shape(backbone: str, cut: str | None, image_size: int, pool_size: int = 0) -> tuple[int, int, int]:
    """(feature_dim, forward FLOPs per image, parameter count) of the backbone cut at ``cut``."""
    from benchmarks.backbones import truncate

    ext = truncate(backbone, _base(backbone), cut)
    c, h, w = ext.out_shape(image_size)
    dim = c * pool_size * pool_size if pool_size else c * h * w
    return dim, _forward_flops(ext, image_size), ext.param_count


def _forward_flops(model: torch.nn.Module, image_size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta").eval()  # eval: BatchNorm takes a batch of one
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.zeros(1, 3, image_size, image_size, device="meta"))
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=None)
def _trainer_shape(method: str, config_json: str, n_classes: int, image_size: int) -> tuple[int, int]:
    """(forward FLOPs per image, parameter count) of a from-scratch trainer's network."""
    from benchmarks.methods import get_method, make_config

    cls = get_method(method)
    cfg = make_config(cls, json.loads(config_json))
    net = cls(cfg).build(n_classes, image_size) if method == "small_cnn" else cls(cfg).build(n_classes)
    return _forward_flops(net, image_size), sum(p.numel() for p in net.parameters())


def _sizes(cell: Cell) -> tuple[int, int, int, int]:
    """(n_classes, n_train, n_val, n_test) the cell will load (n_classes 10 if unknown)."""
    n_classes = N_CLASSES.get(cell.dataset, 10)
    full_train, full_test = FULL_SIZES.get(cell.dataset, (1000 * n_classes, 200 * n_classes))
    n_fit = cell.train_per_class * n_classes if cell.train_per_class else full_train
    n_val = int(round(n_fit * cell.val_fraction))
    n_test = cell.test_per_class * n_classes if cell.test_per_class else full_test
    return n_classes, n_fit - n_val, n_val, n_test


def _ridge_flops(n: int, d: int) -> float:
    m = min(n, d)
    return 2.0 * n * d * m + 9.0 * m**3


def phase_flops(method: str, *, backbone: str = "", cut: str | None = None, image_size: int = 96,
                n_classes: int = 10, n_train: int = 0, n_val: int = 0, n_test: int = 0,
                config: dict | None = None) -> tuple[dict[str, float], dict]:
    """FLOPs of the counted phases of one cell, and the sizes they came from."""
    config = config or {}
    if method == "random-features":
        dim, fwd, params = backbone_shape(backbone, cut, image_size, int(config.get("pool_size") or 0))
        proj = config.get("projection", "gaussian")
        k = dim if proj == "none" else int(config.get("n_components", 10000))
        n_fit = n_train + n_val
        flops = {"extract": fwd * n_fit, "fit": _ridge_flops(n_train, k),
                 "project": {"gaussian": 4, "structured": 4, "linear": 2}.get(proj, 0) * n_fit * dim * k}
        return flops, {"feature_dim": dim, "k": k, "params": params}
    epochs = int(config.get("epochs", 10))
    if method == "finetune":
        dim, fwd, params = backbone_shape(backbone, cut, image_size)
        factor = 1.0 if config.get("mode", "linear-probe") == "linear-probe" else 3.0
    else:
        cfg = {k: v for k, v in config.items() if k not in ("batch_size",)}
        fwd, params = _trainer_shape(method, json.dumps(cfg, sort_keys=True, default=list), n_classes, image_size)
        dim, factor = 0, 3.0
    return {"train": factor * fwd * n_train * epochs}, {"feature_dim": dim, "k": 0, "params": params}


def _cell_flops(cell: Cell) -> tuple[dict[str, float], dict, tuple]:
    from benchmarks.methods import get_method, make_config
    import dataclasses

    sizes = _sizes(cell)
    config = dataclasses.asdict(make_config(get_method(cell.method), cell.option_dict()))
    if config.get("preset"):
        from baselines.finetune import PRESETS

        config.update(PRESETS[config["preset"]])
    flops, info = phase_flops(cell.method, backbone=cell.backbone, cut=cell.cut, image_size=cell.image_size,
                              n_classes=sizes[0], n_train=sizes[1], n_val=sizes[2], n_test=sizes[3],
                              config=config)
    return flops, info, sizes


def measured_rates(results_csv: str | Path) -> dict[tuple[str, str], float]:
    """Median GFLOP/s per (device type, phase) measured by earlier final rows."""
    from benchmarks.results import read_rows

    samples: dict[tuple[str, str], list[float]] = {}
    for row in read_rows(results_csv):
        if row.get("row_type") != "final" or row.get("status") != "ok":
            continue
        try:
            config = json.loads(row.get("method_config") or "{}")
            flops, _ = phase_flops(row["method"], backbone=row["backbone"], cut=row["cut"] or None,
                                   image_size=int(row["image_size"]), n_classes=int(row["n_classes"]),
                                   n_train=int(row["n_train"]), n_val=int(row["n_val"]),
                                   n_test=int(row["n_test"]), config=config)
        except Exception:  # a row of another version or method: no rate from it
            continue
        device = "cuda" if row.get("device", "").startswith("cuda") else "cpu"
        for phase, f in flops.items():
            seconds = float(row.get(f"{phase}_s") or 0)
            if f > 0 and seconds > 0.05 and "cached_phases" not in (row.get("extra") or ""):
                samples.setdefault((device, phase), []).append(f / seconds / 1e9)
    return {k: statistics.median(v) for k, v in samples.items()}


def estimate(cell: Cell, rates: dict[tuple[str, str], float] | None = None) -> dict:
    """Images, feature dim, k, peak memory (bytes) and counted time (s) of ``cell``."""
    rates = rates or {}
    device = _device_type(cell.device)
    flops, info, (n_classes, n_train, n_val, n_test) = _cell_flops(cell)
    seconds, sources = 0.0, set()
    for phase, f in flops.items():
        rate = rates.get((device, phase))
        sources.add("measured" if rate else "default")
        seconds += f / 1e9 / (rate or DEFAULT_GFLOPS[device][phase])
    n_all = n_train + n_val + n_test
    images = n_all * 3 * cell.image_size**2
    dim, k = info["feature_dim"], info["k"]
    if cell.method == "random-features":
        live = [n_all * dim * _BYTES.get(cell.precision, 4) + (n_train + n_val) * dim * 4,  # features, encoded
                (n_train + n_val) * k * 4 + 2 * min(n_train, k) ** 2 * 8]  # projected, Gram + eigenvectors
        memory = images + max(live) + info["params"] * 4
    else:
        memory = images + info["params"] * 4 * 4 + 256 * 3 * cell.image_size**2 * 4 * 20  # weights+grads+Adam, activations
    return {"images": n_all, "feature_dim": dim, "k": k, "memory_bytes": int(memory), "time_s": seconds,
            "rate_source": "+".join(sorted(sources)), "device": device}


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _fmt_time(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def print_plan(cells: list[Cell], out_dir: str | Path) -> None:
    """The dry-run table: one line per cell, with totals."""
    from benchmarks.results import RESULTS_FILE, read_rows
    from benchmarks.runner import describe

    path = Path(out_dir) / RESULTS_FILE
    rates = measured_rates(path)
    measured = {r["cell_key"]: float(r["train_total_s"] or 0) for r in read_rows(path)
                if r["row_type"] == "final" and r["status"] == "ok"}
    print(f"{'#':>3s}  {'cell_key':16s}  {'images':>7s}  {'feat dim':>8s}  {'k':>6s}  {'memory':>9s}  "
          f"{'time':>8s}  {'status':8s}  cell")
    total_todo = 0.0
    for i, cell in enumerate(cells, 1):
        est = estimate(cell, rates)
        key = cell.key()
        if key in measured:
            status, t = "done", f"{measured[key]:.0f} s*"
        else:
            status, t = "to run", "~" + _fmt_time(est["time_s"])
            total_todo += est["time_s"]
        print(f"{i:>3d}  {key:16s}  {est['images']:>7d}  {est['feature_dim'] or '':>8}  {est['k'] or '':>6}  "
              f"{_fmt_bytes(est['memory_bytes']):>9s}  {t:>8s}  {status:8s}  {describe(cell)}")
    n_done = sum(c.key() in measured for c in cells)
    source = ("rates measured in " + str(path)) if rates else "default rates (benchmarks.estimate.DEFAULT_GFLOPS)"
    print(f"\n{len(cells)} cells, {n_done} done before; ~{_fmt_time(total_todo)} of counted time to run "
          f"({source}; untimed evaluation and data loading come on top). * measured. Results go to {path}.")
