"""The runner: owns the clock, runs cells, writes every row as soon as it exists.

A *cell* is one configuration (method, dataset, backbone, cut, precision,
seed and the method's own options). Its ``cell_key`` is a hash of everything
that defines it, so re-running the same cells skips those that already have a
successful ``final`` row: an interrupted run resumes where it stopped. A cell
that raises gets a ``failed`` row with its error and the run goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks import results as res
from benchmarks.data import DataBundle, load_dataset
from benchmarks.methods import RunContext, get_method, make_config
from benchmarks.features import FeatureCache
from benchmarks.timing import Clock, peak_memory_bytes, reset_peak_memory


#: Methods that use the cell's backbone, cut, weights and precision axes.
BACKBONE_METHODS = ("random-features", "finetune")


@dataclass(frozen=True)
class Cell:
    """One configuration to run; its fields are the result's axes."""

    method: str = "random-features"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    backbone: str = "mobilenet_v2"
    cut: str | None = None
    weights: str = "DEFAULT"
    precision: str = "fp32"
    image_size: int = 96
    train_per_class: int | None = 500
    test_per_class: int | None = 200
    val_fraction: float = 0.2
    batch_size: int = 128
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    suite: str = ""
    # The method's own options (see each method's Config), as sorted (name, value) pairs.
    options: tuple[tuple[str, Any], ...] = ()

    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)

    def key(self) -> str:
        """A stable hash of what defines the cell (not where or how fast it runs)."""
        ident = dataclasses.asdict(self)
        for k in ("threads", "suite", "batch_size"):
            ident.pop(k)
        ident["options"] = sorted([list(o) for o in self.options])
        blob = json.dumps(ident, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def data_key(self) -> tuple:
        return (self.dataset, self.data_dir, self.image_size, self.train_per_class,
                self.test_per_class, self.val_fraction)


def with_options(cell: Cell, **options) -> Cell:
    merged = {**cell.option_dict(), **{k: v for k, v in options.items() if v is not None}}
    return dataclasses.replace(cell, options=tuple(sorted(merged.items())))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available here; use --device cpu.")
    return dev


def validate(cell: Cell) -> None:
    """Reject a bad cell before any data is loaded: unknown method, dataset, backbone, cut..."""
    from benchmarks.backbones import PRECISIONS, resolve_cut
    from benchmarks.data import DATASET_NAMES, DatasetError

    get_method(cell.method)
    if cell.dataset not in DATASET_NAMES[:-1] and not cell.dataset.startswith("imagefolder:"):
        raise DatasetError(f"unknown dataset {cell.dataset!r}; choose one of: {', '.join(DATASET_NAMES)}")
    if cell.method in BACKBONE_METHODS:
        resolve_cut(cell.backbone, cell.cut)
        if cell.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {cell.precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if cell.image_size < 16:
        raise ValueError(f"image size {cell.image_size} is too small; use at least 16 pixels.")
    resolve_device(cell.device)


@dataclass
class Runner:
    out_dir: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    progress: bool = True
    fail_fast: bool = False
    feature_cache: FeatureCache | None = field(default_factory=FeatureCache)
    _data: tuple | None = None

    @property
    def results_path(self) -> Path:
        return Path(self.out_dir) / res.RESULTS_FILE

    def load_data(self, cell: Cell) -> DataBundle:
        # Keep the last dataset decoded: cells of a sweep usually share it.
        if self._data is None or self._data[0] != cell.data_key():
            bundle = load_dataset(cell.dataset, cell.data_dir, cell.image_size, cell.train_per_class,
                                  cell.test_per_class, cell.val_fraction, progress=self.progress)
            self._data = (cell.data_key(), bundle)
        return self._data[1]

    def run(self, cells: list[Cell]) -> list[dict]:
        """Run every cell not finished yet; return the final rows of this call."""
        for cell in cells:
            validate(cell)
        done = res.finished_keys(self.results_path)
        rows = []
        for i, cell in enumerate(cells):
            if cell.key() in done:
                if self.progress:
                    print(f"[{i + 1}/{len(cells)}] {cell.method} {cell.key()}: done before, skipped")
                continue
            if self.progress:
                print(f"[{i + 1}/{len(cells)}] {describe(cell)}")
            rows.append(self.run_cell(cell))
        return rows

    def run_cell(self, cell: Cell) -> dict:
        common = {"run_id": self.run_id, "cell_key": cell.key(), "suite": cell.suite,
                  "method": cell.method, "dataset": cell.dataset, "backbone": cell.backbone,
                  "cut": cell.cut, "weights": cell.weights, "precision": cell.precision,
                  "seed": cell.seed, "image_size": cell.image_size}
        try:
            device = resolve_device(cell.device)
            if device.type == "cuda":
                # Once for every method alike (the DAWNBench recipe relies on it).
                torch.backends.cudnn.benchmark = True
            if cell.threads:
                torch.set_num_threads(cell.threads)
            common.update(device=str(device), device_name=res.device_name(device),
                          threads=torch.get_num_threads())
            method_cls = get_method(cell.method)
            config = make_config(method_cls, cell.option_dict())
            data = self.load_data(cell)
            common.update(data.describe())
            if cell.method in BACKBONE_METHODS:
                from benchmarks.backbones import resolve_cut, resolve_weights

                common.update(cut=resolve_cut(cell.backbone, cell.cut),
                              weights=resolve_weights(cell.backbone, cell.weights))
            else:
                common.update(backbone="", cut="", weights="", precision="")
            torch.manual_seed(cell.seed)
            clock = Clock(device)
            reset_peak_memory(device)

            def emit(row: dict) -> None:
                res.append_rows(self.results_path, [{**common, "status": "ok", "finished_at": res.now(),
                                                     "method_config": dataclasses.asdict(config), **row}])

            ctx = RunContext(data=data, clock=clock, device=device, seed=cell.seed,
                             backbone=cell.backbone, cut=cell.cut, weights=cell.weights,
                             precision=cell.precision, batch_size=cell.batch_size,
                             progress=self.progress, emit=emit, feature_cache=self.feature_cache)
            out = method_cls(config).run(ctx)
            row = {**common, "row_type": "final", "status": "ok", "finished_at": res.now(),
                   "method_config": dataclasses.asdict(config), **clock.columns(), **out,
                   "peak_memory_bytes": peak_memory_bytes(device)}
            if clock.charged:
                row["extra"] = {"cached_phases": sorted(clock.charged)}
        except KeyboardInterrupt:
            raise
        except Exception as err:
            if self.fail_fast:
                raise
            row = {**common, "row_type": "failed", "status": "failed", "finished_at": res.now(),
                   "error": f"{err.__class__.__name__}: {err}",
                   "extra": {"traceback": traceback.format_exc()[-2000:]}}
            if self.progress:
                print(f"  FAILED: {row['error']}")
        res.append_rows(self.results_path, [row])
        return row


def describe(cell: Cell) -> str:
    parts = [cell.method, cell.dataset]
    if cell.method in BACKBONE_METHODS:
        parts += [cell.backbone, cell.cut or "(last cut)", cell.precision]
    parts += [f"{k}={v}" for k, v in cell.options]
    return " ".join(str(p) for p in parts) + f" seed={cell.seed}"
