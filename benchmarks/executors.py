"""Where cells run: in this process (default) or as tasks on a Ray cluster.

Both executors take the same :class:`~benchmarks.runner.Runner` and list of
cells and leave the same rows in the same ``results.csv``: finished cells are
skipped, every row is appended atomically as soon as its cell ends.

With Ray, each cell is one task. It runs ``Runner.run_cell`` in a worker
process, writing into a private scratch file there; the task returns those rows
(per-epoch rows included) and the *driver* appends them as tasks finish
(``ray.wait``), so workers never need the driver's file system. A worker that
dies mid-cell loses nothing already written: Ray retries the task
(``max_retries``) and, once retries are spent, the driver records the cell as
``failed`` with Ray's error. Exceptions raised by a cell are recorded by the
runner as usual and are not retried. Extracted features are shared through the
``--cache-dir`` folder (and each worker's memory), which all workers must see
for a multi-machine cluster to reuse them.

Ray is imported here only, and only when the Ray executor is built.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import results as res
from benchmarks.runner import Cell, FeatureCache, Runner, describe, validate

RAY_INSTALL_HINT = "pip install 'gradfree[ray]'"


class LocalExecutor:
    """Cells one after the other in this process."""

    name = "local"

    def run(self, runner: Runner, cells: list[Cell]) -> list[dict]:
        return runner.run(cells)


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from err
    return ray


# Per worker process: one runner (its data and in-memory features) per cache folder, reused across tasks.
_WORKER_RUNNERS: dict[str | None, Runner] = {}


def run_cell_in_worker(cell: Cell, run_id: str, cache_dir: str | None) -> list[dict]:
    """Run one cell in this (worker) process; return its rows instead of writing the driver's file."""
    runner = _WORKER_RUNNERS.get(cache_dir)
    if runner is None:
        scratch = Path(tempfile.mkdtemp(prefix="gradfree-worker-"))
        runner = Runner(scratch, progress=False, feature_cache=FeatureCache(cache_dir))
        _WORKER_RUNNERS[cache_dir] = runner
    runner.run_id = run_id
    runner.results_path.unlink(missing_ok=True)
    runner.run_cell(cell)
    rows = res.read_rows(runner.results_path)
    runner.results_path.unlink(missing_ok=True)
    return rows


def _failed_row(runner: Runner, cell: Cell, error: BaseException) -> dict:
    return {"run_id": runner.run_id, "cell_key": cell.key(), "suite": cell.suite, "method": cell.method,
            "dataset": cell.dataset, "backbone": cell.backbone, "cut": cell.cut, "weights": cell.weights,
            "precision": cell.precision, "seed": cell.seed, "image_size": cell.image_size,
            "row_type": "failed", "status": "failed", "finished_at": res.now(),
            "error": f"{error.__class__.__name__}: {str(error)[:1500]}",
            "extra": {"executor": "ray"}}


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

    def run(self, runner: Runner, cells: list[Cell]) -> list[dict]:
        ray = _import_ray()
        for cell in cells:
            validate(cell)
        started_here = not ray.is_initialized()
        if started_here:
            kwargs = {"include_dashboard": False} if self.address is None else {}
            ray.init(address=self.address, log_to_driver=runner.progress, **kwargs)
        try:
            return self._run(ray, runner, cells)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray, runner: Runner, cells: list[Cell]) -> list[dict]:
        done = res.finished_keys(runner.results_path)
        todo = [c for c in cells if c.key() not in done]
        if runner.progress and len(todo) < len(cells):
            print(f"{len(cells) - len(todo)} cell(s) done before, skipped")
        cache = runner.feature_cache
        cache_dir = str(cache.folder.resolve()) if cache is not None and cache.folder is not None else None
        task = ray.remote(run_cell_in_worker)
        pending = {}
        for cell in todo:
            opts = {"num_cpus": cell.threads or self.num_cpus, "num_gpus": self._gpus_for(ray, cell),
                    "max_retries": self.max_retries, "retry_exceptions": False}
            pending[task.options(**opts).remote(cell, runner.run_id, cache_dir)] = cell
        finals = []
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    cell = pending.pop(ref)
                    try:
                        rows = ray.get(ref)
                    except Exception as err:  # worker died beyond its retries, task cancelled, ...
                        rows = [_failed_row(runner, cell, err)]
                    res.append_rows(runner.results_path, rows)
                    final = next((r for r in rows if r["row_type"] in ("final", "failed")), rows[-1])
                    finals.append(final)
                    if runner.progress:
                        n = len(cells) - len(pending)
                        status = final["status"] if final["status"] == "ok" else f"FAILED: {final.get('error')}"
                        print(f"[{n}/{len(cells)}] {describe(cell)}: {status}")
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return finals


EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str = "local", address: str | None = None, **kwargs):
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
    if name == "ray":
        _import_ray()  # fail early, with the install hint
        return RayExecutor(address=address, **kwargs)
    if address is not None:
        raise ValueError("--address only applies to --executor ray.")
    return LocalExecutor()
