"""Where cells run: in this process (default) or as tasks on a Ray cluster.

:func:`run_cells` is the one entry point: it validates every cell before any work,
checks that the data of every cell still to run is there (:func:`benchmarks.core.data.open_dataset`),
claims the out folder's results file (:class:`benchmarks.harness.resultsfile.ResultsFile`: one run
per folder, a torn tail repaired), writes the run's metadata and hands the cells to an
executor. Both executors take the same :class:`~benchmarks.harness.runner.Runner` and leave the
same rows in the same ``results.csv``: finished cells are skipped, every row is appended
as soon as it exists, and each finished cell prints the run's rate and ETA.

With Ray, each cell is one task. It runs ``Runner.run_cell`` in a worker process
with a list as its sink; the task returns those rows (per-epoch rows included)
and the *driver* appends them as tasks finish
(``ray.wait``), so workers never need the driver's file system; the cell's test predictions
travel back with its final row and the driver writes them (:mod:`benchmarks.harness.predictions`). A worker that
dies mid-cell loses nothing already written: Ray retries the task
(``max_retries``) and, once retries are spent, the driver records the cell as
``failed`` with Ray's error. Exceptions raised by a cell are recorded by the
runner as usual and are not retried. Extracted features are shared through the
``--cache-dir`` folder (and each worker's memory), which all workers must see
for a multi-machine cluster to reuse them.

Trainers checkpoint each epoch in ``OUT/checkpoints/<cell_key>/`` and a cell stopped mid-way
resumes from its last epoch (:mod:`benchmarks.core.checkpoint`). A Ray worker checkpoints only where it
sees that folder (this machine's workers, or a shared file system); elsewhere its cells restart.

Ray is imported here only, and only when the Ray executor is built.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from benchmarks.core import checkpoint as ckpt
from benchmarks.harness import results as res
from benchmarks.harness.resultsfile import ResultsFile
from benchmarks.harness.metadata import write_metadata
from benchmarks.harness.cells import Cell, describe, validate
from benchmarks.core.data import open_dataset
from benchmarks.harness.predictions import ROW_KEY, KeepPredictions
from benchmarks.harness.loadavg import busy_cells
from benchmarks.harness.runner import DataChanged, Runner, failed_row, folder_fingerprints

RAY_INSTALL_HINT = "pip install 'gradfree[ray]'"


class _Progress:
    """One line per finished cell: its place, what it is, and the run's rate and ETA so far. Printed
    with or without ``--no-progress`` (which turns off the bars only): a log keeps its ETA.

    The ETA weighs each cell by its dry-run estimate (:func:`benchmarks.harness.estimate.estimate`, the
    rates measured in the folder): a suite of one-minute ridges and hour-long trainings is not a count of
    cells. The seconds still to go are the estimate of the cells left, scaled by how the finished cells'
    elapsed time compares with their estimate. A cell resumed from a checkpoint ran only its last epochs: it
    is left out of that scale (its time since the cell before it, and its estimate), else the first cell of
    a resumed suite would make the ETA a fraction of the plan; until a whole cell has finished the ETA is the
    plan itself."""

    def __init__(self, cells: list[Cell], rates: dict | None = None):
        self.total, self.start, self.done = len(cells), time.perf_counter(), 0
        self.weights = {c.key(): _planned_s(c, rates) for c in cells}
        self.planned_left, self.planned_done = sum(self.weights.values()), 0.0
        self.last, self.resumed_s = self.start, 0.0  # the previous finish; the time resumed cells took

    def finished(self, n_done: int, line: str, cell: Cell | None = None, row: dict | None = None) -> None:
        self.done += 1
        now = time.perf_counter()
        elapsed, since = now - self.start, now - self.last
        self.last = now
        weight = self.weights.get(cell.key(), 0.0) if cell is not None else 0.0
        self.planned_left = max(self.planned_left - weight, 0.0)
        if ckpt.was_resumed((row or {}).get("extra")):
            self.resumed_s += since
        else:
            self.planned_done += weight
        left = self.total - n_done
        if not left:
            eta = ""
        elif self.planned_done > 0:
            eta = f", ETA {_fmt_s((elapsed - self.resumed_s) / self.planned_done * self.planned_left)}"
        elif self.planned_left > 0:
            eta = f", ETA {_fmt_s(self.planned_left)} (planned)"
        else:
            eta = f", ETA {_fmt_s(elapsed / self.done * left)}"
        print(f"[{n_done}/{self.total}] {line} ({_fmt_s(elapsed)} elapsed, "
              f"{self.done / elapsed * 60:.2g} cells/min{eta})")


def _planned_s(cell: Cell, rates: dict | None) -> float:
    """The cell's estimated counted seconds (at least 1: evaluation and loading come on top); 0 when it
    cannot be estimated (the ETA then counts cells)."""
    from benchmarks.harness.estimate import estimate

    try:
        return max(float(estimate(cell, rates)["time_s"]), 1.0)
    except Exception:  # an estimate is a help, never a reason to stop
        return 0.0


def _rates(results) -> dict:
    """The rates measured by the rows already in the results file (empty where it has none, or on error)."""
    from benchmarks.harness.estimate import measured_rates

    try:
        return measured_rates(results.path)
    except Exception:  # (a help for the ETA only)
        return {}


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


class LocalExecutor:
    """Cells one after the other in this process."""

    name = "local"

    def run(self, runner: Runner, cells: list[Cell], results: "ResultsFile") -> list[dict]:
        """Run the cells without a successful final row in ``results`` one after the other, appending each
        row as it comes; return the cells' final (or failed) rows."""
        done = results.finished_keys()
        todo = [c for c in cells if c.key() not in done]
        if len(todo) < len(cells):
            print(f"{len(cells) - len(todo)} cell(s) done before, skipped")
        progress = _Progress(todo, _rates(results))
        rows = []
        for i, cell in enumerate(todo, 1):
            if runner.progress:
                print(f"[{i}/{len(todo)}] {describe(cell)}")
            row = runner.run_cell(cell, results.append)
            rows.append(row)
            status = row["status"] if row["status"] == "ok" else f"FAILED: {row.get('error')}"
            progress.finished(i, f"{describe(cell)}: {status}", cell, row)
        return rows


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from err
    return ray


# Per worker process: one runner (its data and in-memory features) per cache folder, reused across tasks.
_WORKER_RUNNERS: dict[str | None, Runner] = {}


def run_cell_in_worker(cell: Cell, run_id: str, cache_dir: str | None,
                       fingerprints: dict[tuple, str] | None = None, checkpoint_dir: str | None = None) -> list[dict]:
    """Run one cell in this (worker) process; return its rows for the driver to write.
    ``fingerprints``: the driver's :attr:`Runner.fingerprints` (the data the folder's rows saw);
    ``checkpoint_dir``: the driver's, used only if this worker sees it (:func:`benchmarks.core.checkpoint.reachable`)."""
    from benchmarks.core.features import FeatureCache

    runner = _WORKER_RUNNERS.get(cache_dir)
    if runner is None:
        runner = Runner(progress=False, feature_cache=FeatureCache(cache_dir))
        _WORKER_RUNNERS[cache_dir] = runner
    runner.run_id = run_id
    runner.fingerprints = dict(fingerprints or {})
    folder = Path(checkpoint_dir) if checkpoint_dir else None
    runner.checkpoint_dir = folder if folder is not None and ckpt.reachable(folder, run_id) else None
    rows: list[dict] = []
    runner.run_cell(cell, rows.extend)
    # the predictions travel back beside the normalised row, for the driver to write
    return [{**res.normalise_row({k: v for k, v in r.items() if k != ROW_KEY}),
             **({ROW_KEY: r[ROW_KEY]} if ROW_KEY in r else {})} for r in rows]


class RayExecutor:
    """Cells as Ray tasks; the driver appends their rows as they finish.

    ``address``: an existing cluster (``"auto"``, ``"host:6379"``, ``"ray://..."``);
    None starts a local instance. A Ray already initialised in this process is used as is.
    ``num_cpus``: CPUs per cell (Ray then sets the worker's thread count);
    ``num_gpus``: GPUs per cell, None = one for cells on ``cuda``/``auto`` when the cluster has GPUs.
    """

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = 2, num_cpus: float = 1,
                 num_gpus: float | None = None):
        self.address = address
        self.max_retries = max_retries
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus

    def _gpus_for(self, ray, cell: Cell) -> float:
        if self.num_gpus is not None:
            return self.num_gpus
        if cell.device.startswith("cuda"):
            return 1
        if cell.device == "auto":
            return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        return 0

    def run(self, runner: Runner, cells: list[Cell], results: "ResultsFile") -> list[dict]:
        """Run the cells without a successful final row in ``results`` as Ray tasks (a Ray started here is
        shut down after), appending each cell's rows as it finishes; return their final (or failed) rows. A
        task that fails beyond its retries gives a failed row; Ctrl-C or :class:`DataChanged` cancels the
        pending tasks and is raised."""
        ray = _import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            kwargs = {"include_dashboard": False} if self.address is None else {}
            ray.init(address=self.address, log_to_driver=runner.progress, **kwargs)
        try:
            return self._run(ray, runner, cells, results)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray, runner: Runner, cells: list[Cell], results) -> list[dict]:
        done = results.finished_keys()
        todo = [c for c in cells if c.key() not in done]
        if len(todo) < len(cells):
            print(f"{len(cells) - len(todo)} cell(s) done before, skipped")
        cache = runner.feature_cache
        cache_dir = str(cache.folder.resolve()) if cache is not None and cache.folder is not None else None
        checkpoints = str(runner.checkpoint_dir.resolve()) if runner.checkpoint_dir is not None else None
        task = ray.remote(run_cell_in_worker)
        pending = {}
        for cell in todo:
            opts = {"num_cpus": cell.threads or self.num_cpus, "num_gpus": self._gpus_for(ray, cell),
                    "max_retries": self.max_retries, "retry_exceptions": False}
            pending[task.options(**opts).remote(cell, runner.run_id, cache_dir, runner.fingerprints,
                                                  checkpoints)] = cell
        progress = _Progress(todo, _rates(results))
        finals = []
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    cell = pending.pop(ref)
                    try:
                        rows = ray.get(ref)
                    except DataChanged:
                        raise  # (Ray's error is an instance of the cause) stops the run, as in-process
                    except Exception as err:  # worker died beyond its retries, task cancelled, ...
                        rows = [failed_row(runner.run_id, cell, err, extra={"executor": "ray"})]
                    results.append(rows)
                    final = next((r for r in rows if r["row_type"] in ("final", "failed")), rows[-1])
                    finals.append(final)
                    status = final["status"] if final["status"] == "ok" else f"FAILED: {final.get('error')}"
                    progress.finished(len(todo) - len(pending), f"{describe(cell)}: {status}", cell, final)
        except (KeyboardInterrupt, DataChanged):
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return finals


EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str = "local", address: str | None = None, **kwargs):
    """The executor called ``name``: ``local``, or ``ray`` (``address`` and ``kwargs`` go to
    :class:`RayExecutor`). A ``ValueError`` for another name or for ``address`` without Ray; an
    ``ImportError`` with the install hint when Ray is not installed."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
    if name == "ray":
        _import_ray()  # fail early, with the install hint
        return RayExecutor(address=address, **kwargs)
    if address is not None:
        raise ValueError("--address only applies to --executor ray.")
    return LocalExecutor()


def preflight(cells: list[Cell], out_dir: str | Path) -> list[Exception | None]:
    """What a run checks before any work, cell by cell: the error that refuses each cell, or None.

    Every cell is validated (:func:`benchmarks.harness.cells.validate`: names, sizes, options, memory), and the
    dataset of every cell still to run must be there (or download): a missing ``--data-dir`` is found
    once, before anything is written. ``gradfree run --dry-run`` shows the same verdicts."""
    with warnings.catch_warnings():  # a torn file is repaired, and told of, when a run claims the folder
        warnings.simplefilter("ignore", res.ResultsWarning)
        done = res.finished_keys(Path(out_dir) / res.RESULTS_FILE)
    errors: list[Exception | None] = []
    opened: dict[tuple, Exception | None] = {}
    for cell in cells:
        try:
            validate(cell)
            if cell.key() not in done:
                where = (cell.dataset, cell.data_dir)
                if where not in opened:
                    try:
                        open_dataset(*where)
                        opened[where] = None
                    except (ValueError, RuntimeError, OSError, ImportError) as err:
                        opened[where] = err
                if opened[where] is not None:
                    raise opened[where]
            errors.append(None)
        except (ValueError, RuntimeError, OSError, ImportError) as err:
            errors.append(err)
    return errors


def retime_keys(cells: list[Cell], results_path: str | Path) -> set[str]:
    """The keys of the finished cells of ``cells`` in ``results_path`` that were timed beside other work."""
    earlier = res.read_rows(Path(results_path).parent / res.INTERRUPTED_FILE)
    return busy_cells(res.read_rows(results_path), earlier) & {c.key() for c in cells}


def run_cells(cells: list[Cell], out_dir: str | Path, runner: Runner | None = None, executor=None,
              metadata: dict | None = None, set_aside_others: bool = False, retime_busy: bool = False) -> list[dict]:
    """Validate every cell, check that the data of every cell not done yet is there, claim
    ``out_dir``'s results file, write the run's metadata, run the cells not done yet; return their
    final rows. The one entry point of the CLI and of suites.
    ``set_aside_others``: first move the rows of cells not in ``cells`` to ``results.superseded.csv``.
    ``retime_busy``: first move there the rows of the finished cells of ``cells`` that were timed beside other
    work (:func:`benchmarks.harness.loadavg.busy_cells`), so that they run again.
    Unless ``runner.checkpoint_dir`` is set, the trainers checkpoint in ``out_dir/checkpoints/``
    (:mod:`benchmarks.core.checkpoint`); what finished cells left there is deleted."""
    import dataclasses

    runner = runner or Runner()
    executor = executor or LocalExecutor()
    for error in preflight(cells, out_dir):
        if error is not None:
            raise error
    with ResultsFile(Path(out_dir)) as results:
        if set_aside_others:
            results.set_aside_cells({c.key() for c in cells})
        if retime_busy:
            results.set_aside_to_retime(retime_keys(cells, results.path))  # before the finished keys are read
        for notice in results.notices:
            print(f"note: {notice}")
        runner.fingerprints = folder_fingerprints(res.read_rows(results.path))
        write_metadata(out_dir, runner.run_id, {
            **(metadata or {}), "executor": executor.name,
            "cells": [dataclasses.asdict(c) | {"cell_key": c.key()} for c in cells]})
        own = runner.checkpoint_dir is None  # this folder's, for this call only
        if own:
            runner.checkpoint_dir = Path(out_dir) / ckpt.FOLDER
        try:  # (a claim that fails, e.g. on a full disk, leaves no empty checkpoints/ behind either)
            ckpt.claim(runner.checkpoint_dir, runner.run_id, done=results.finished_keys())
            return executor.run(runner, cells, KeepPredictions(results, out_dir))
        finally:
            ckpt.release(runner.checkpoint_dir)
            if own:
                runner.checkpoint_dir = None
