"""The runner: owns the clock, runs one cell, hands every row to a sink as soon as it exists.

A *cell* (:mod:`benchmarks.harness.cells`) is one configuration; its ``cell_key`` is a hash of
everything that defines it, so re-running the same cells skips those that already have a
successful ``final`` row: an interrupted run resumes where it stopped. A cell that raises
gets a ``failed`` row with its error and the run goes on.

The runner writes nothing itself: :meth:`Runner.run_cell` gives its rows (the per-epoch
rows as they come, then the final or failed row) to a *sink*, a callable taking a list of
rows. The executors (:mod:`benchmarks.harness.executors`) pass the results file's ``append``, or,
in a Ray worker, a list that travels back to the driver. A final row carries the cell's test
predictions (the method's ``test_pred``) under :data:`benchmarks.harness.predictions.ROW_KEY`; the
driver's sink writes them beside ``results.csv`` (:mod:`benchmarks.harness.predictions`).
"""

from __future__ import annotations

import dataclasses
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.harness import results as res
from benchmarks.harness.metadata import cpu_flags, device_name, load_average
from benchmarks.core.checkpoint import CellCheckpoint, config_hash
from benchmarks.harness.cells import Cell, cell_shape, describe, resolve_device
from benchmarks.core.data import DataBundle, load_dataset
from benchmarks.core.features import FeatureCache
from benchmarks.harness.registry import REGISTRY, get_method
from benchmarks.core.plugins import source as plugin_source
from benchmarks.harness.predictions import ROW_KEY, Predictions
from benchmarks.core.protocol import RunContext, planned_memory_bytes
from benchmarks.core.timing import Clock, peak_memory_bytes, reset_peak_memory

Sink = Callable[[list[dict]], None]


class DataChanged(ValueError):
    """A cell's data differ from the data of the rows already in its results folder."""


def data_group(row: dict) -> tuple:
    """What rows computed on one dataset subset share: name, image size and split sizes. Rows of one
    group must all have one ``data_fingerprint``: seeds averaged over, cells compared and runs resumed
    in one folder then all saw the same images."""
    return tuple(str(row.get(k) or "") for k in ("dataset", "image_size", "n_train", "n_val", "n_test"))


def folder_fingerprints(rows) -> dict[tuple, str]:
    """``{data group: data_fingerprint}`` of the rows of a results folder; :class:`DataChanged` if a
    group already holds two fingerprints (rows of a folder written before this check existed)."""
    seen: dict[tuple, str] = {}
    for row in rows:
        fp = row.get("data_fingerprint") or ""
        if not fp or row.get("status") != "ok":
            continue
        group = data_group(row)
        if seen.setdefault(group, fp) != fp:
            raise DataChanged(f"the rows of {group[0]} at {group[1]} px (n_train {group[2]}, n_val {group[3]}, "
                              f"n_test {group[4]}) in this results folder come from two different data "
                              f"(data_fingerprint {seen[group]} and {fp}); move one set of rows out, or use a "
                              "new --out.")
    return seen


def common_columns(run_id: str, cell: Cell) -> dict:
    """The identity and axes columns every row of ``cell`` carries."""
    return {"run_id": run_id, "cell_key": cell.key(), "suite": cell.suite, "method": cell.method,
            "dataset": cell.dataset, "backbone": cell.backbone, "cut": cell.cut, "weights": cell.weights,
            "precision": cell.precision, "seed": cell.seed, "image_size": cell.image_size}


def failed_row(run_id: str, cell: Cell, error: BaseException, **columns) -> dict:
    """The ``failed`` row of ``cell``: its common columns, ``columns`` and ``error`` as ``Type: message``
    (the message cut at 1,500 characters)."""
    return {**common_columns(run_id, cell), **columns, "row_type": "failed", "status": "failed",
            "finished_at": res.now(), "error": f"{error.__class__.__name__}: {str(error)[:1500]}"}


@dataclass
class Runner:
    """Runs cells in this process. ``progress`` prints a line per cell and the methods' bars."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    progress: bool = True
    fail_fast: bool = False
    feature_cache: FeatureCache | None = field(default_factory=FeatureCache)
    #: ``{data group: data_fingerprint}`` of the rows already in the results folder (:func:`folder_fingerprints`):
    #: a cell whose data differ stops the run with :class:`DataChanged` before its method runs.
    fingerprints: dict[tuple, str] = field(default_factory=dict)
    #: ``OUT/checkpoints``: each cell's trainer checkpoints its epochs in ``<cell_key>/`` and resumes from them
    #: (:mod:`benchmarks.core.checkpoint`); the folder is deleted when the cell finishes. None: no checkpoints.
    checkpoint_dir: Path | None = None
    _data: tuple | None = None

    def load_data(self, cell: Cell) -> DataBundle:
        """``cell``'s data (:func:`benchmarks.core.data.load_dataset`); the last dataset decoded is kept and
        reused for cells of the same :meth:`Cell.data_key`."""
        # Keep the last dataset decoded: cells of a sweep usually share it.
        if self._data is None or self._data[0] != cell.data_key():
            bundle = load_dataset(cell.dataset, cell.data_dir, cell.image_size, cell.train_per_class,
                                  cell.test_per_class, cell.val_fraction, progress=self.progress,
                                  val_per_class=cell.val_per_class, subset_seed=cell.seed)
            self._data = (cell.data_key(), bundle)
        return self._data[1]

    def check_data(self, cell: Cell, columns: dict) -> None:
        """:class:`DataChanged` when ``cell``'s data (its ``columns``' fingerprint) differ from what the
        folder's rows of the same data group were computed on: resuming would mix two datasets."""
        group, fp = data_group(columns), columns["data_fingerprint"]
        known = self.fingerprints.setdefault(group, fp)
        if known != fp:
            raise DataChanged(
                f"{describe(cell)}: its data ({cell.dataset}, data_fingerprint {fp}) differ from the data the "
                f"rows already in this results folder were computed on (data_fingerprint {known}, same dataset, "
                "image size and split sizes): the images changed, or --data-dir points at another copy. "
                "Resuming would mix the two. Use a new --out for the new data, or rename the folder's "
                "results.csv to keep the old rows apart.")

    def run_cell(self, cell: Cell, sink: Sink) -> dict:
        """Run ``cell``; every row goes to ``sink``; return its final (or failed) row."""
        common = common_columns(self.run_id, cell)
        checkpoint = None
        try:
            device = _set_up(cell, common)
            method_cls = get_method(cell.method)
            config = cell.config
            if cell.method not in REGISTRY:  # (extra) a plugin: the code its rows came from
                common["method_source"] = plugin_source(method_cls)
            common["estimate"] = _estimate(method_cls, config, cell, device)  # (extra) what a dry run plans
            data = self.load_data(cell)
            common.update(data.describe())
            self.check_data(cell, common)
            if method_cls.uses_backbone:
                common.update(cut=cell.cut, weights=cell.weights)  # resolved once, by make_cell
            else:
                common.update(backbone="", cut="", weights="", precision="")
            torch.manual_seed(cell.seed)
            clock = Clock(device)
            reset_peak_memory(device)

            method = method_cls(config)
            # the configuration that runs (a preset applied), not the options as given
            ran = dataclasses.asdict(getattr(method, "config", config))

            def emit(row: dict) -> None:
                sink([{**common, "status": "ok", "finished_at": res.now(), "method_config": ran,
                       "load_at_row": load_average(), **row}])

            if self.checkpoint_dir is not None:
                parts = dict(config=ran, data=common["data_fingerprint"], device=str(device), torch=torch.__version__)
                checkpoint = CellCheckpoint(self.checkpoint_dir / cell.key(), cell.key(), config_hash(**parts),
                                            made_with=parts)
            ctx = RunContext(data=data, clock=clock, device=device, seed=cell.seed,
                             backbone=cell.backbone, cut=common["cut"] or None, weights=cell.weights,
                             precision=cell.precision, batch_size=cell.batch_size,
                             progress=self.progress, emit=emit, feature_cache=self.feature_cache,
                             checkpoint=checkpoint)
            row = self._final_row(method.run(ctx), common, ran, clock, device, data, checkpoint)
        except (KeyboardInterrupt, DataChanged):
            raise
        except Exception as err:
            if self.fail_fast:
                raise
            row = failed_row(self.run_id, cell, err, **{k: v for k, v in common.items() if k not in (
                "run_id", "cell_key")})
            row["extra"] = {"traceback": traceback.format_exc()[-2000:]}
            if self.progress:
                print(f"  FAILED: {row['error']}")
        sink([row])
        if checkpoint is not None:  # finished, ok or failed (an interrupted cell keeps its checkpoint)
            checkpoint.clear()
        return row


    def _final_row(self, out: dict, common: dict, ran: dict, clock: Clock, device, data: DataBundle,
                   checkpoint) -> dict:
        """The cell's final row from what its method returned."""
        test_pred = out.pop("test_pred", None)  # kept beside results.csv, never a column
        row = {**common, "row_type": "final", "status": "ok", "finished_at": res.now(),
               "method_config": ran, **clock.columns(), **out,
               "peak_memory_bytes": peak_memory_bytes(device), "load_at_row": load_average()}
        if clock.charged:
            row["extra"] = {"cached_phases": sorted(clock.charged)}
        if test_pred is not None:
            row[ROW_KEY] = Predictions.of(test_pred, data.test, self.run_id)
        if checkpoint is not None and checkpoint.resumed:  # "stage@epoch" of each training resumed
            row["extra"] = {**(row.get("extra") or {}), "resumed_from": checkpoint.resumed}
        return row


def _set_up(cell: Cell, common: dict) -> torch.device:
    """The cell's device and threads set, and the columns naming them (in ``common``)."""
    device = resolve_device(cell.device)
    if device.type == "cuda":
        # Once for every method alike (the DAWNBench recipe relies on it).
        torch.backends.cudnn.benchmark = True
    if cell.threads:
        torch.set_num_threads(cell.threads)
    common.update(device=str(device), device_name=device_name(device), threads=torch.get_num_threads())
    if device.type == "cpu":  # (extra) what picks the BLAS and int8 kernels, and so the time
        common["cpu_flags"] = cpu_flags()
    # (extra) the machine's 1-minute load average when the cell starts and at each row: a
    # figure timed beside other work (load well above ``threads``) can be told apart
    common["load_at_start"] = load_average()
    return device


def _estimate(method_cls, config, cell: Cell, device) -> dict:
    """The method's own cost model for the cell (FLOPs per phase, planned peak memory): what a dry run
    plans, kept in the row so that plans can be checked against what was measured."""
    try:
        shape = cell_shape(cell, device)
        flops, _ = method_cls.flops(config, shape)
        return {"flops": {k: float(v) for k, v in flops.items()},
                "memory_bytes": planned_memory_bytes(method_cls, config, shape)}
    except Exception as err:  # a cost model that fails must not fail the cell; the row says why
        return {"error": f"{type(err).__name__}: {err}"[:300]}


__all__ = ["Cell", "DataChanged", "Runner", "Sink", "common_columns", "data_group", "describe", "failed_row",
           "folder_fingerprints"]
