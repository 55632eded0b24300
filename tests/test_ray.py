"""The Ray executor on a local Ray instance gives the in-process runner's results."""

from __future__ import annotations

import textwrap

import pytest

from benchmarks.cli import main
from benchmarks.harness.executors import RayExecutor, make_executor
from benchmarks.harness.results import read_rows
from tiny_data import restore_torch_threads, tiny_cifar10, tiny_settings  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.slow

# Random features + ridge are deterministic given the seed: the same cells must give the same accuracies.
SUITE = tiny_settings("ray equivalence", seed="[0, 1]") + """
    [[grid]]
    method = "random-features"
    n_components = [128, 256]
    [[grid]]
    method = "random-features"
    encoder = "none"
    projection = "none"
    seed = 0
"""


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _finals(path):
    return {r["cell_key"]: r for r in read_rows(path) if r["row_type"] in ("final", "failed")}


def test_ray_executor_matches_the_local_run(tmp_path, cifar10_dir, mobilenet_weights, ray_local):
    suite = tmp_path / "tiny.toml"
    suite.write_text(textwrap.dedent(SUITE))
    data = tiny_cifar10(cifar10_dir, tmp_path / "cifar10-tiny")
    common = ["run", "--suite", str(suite), "--data-dir", str(data), "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    local, remote = _finals(tmp_path / "local" / "results.csv"), _finals(tmp_path / "ray" / "results.csv")
    assert len(local) == 5 and set(local) == set(remote)
    for key, row in local.items():
        other = remote[key]
        assert other["status"] == "ok"
        for col in ("test_acc", "val_acc", "train_acc", "alpha", "n_components", "feature_dim", "model_bytes",
                    "data_fingerprint"):
            assert other[col] == row[col], (key, col)
    # Features went through the shared disk cache, so a later run (any executor) reuses them.
    assert list((tmp_path / "ray" / "cache").glob("*.pt"))
    # Resuming with Ray skips everything.
    n_rows = len(read_rows(tmp_path / "ray" / "results.csv"))
    assert main([*common, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert len(read_rows(tmp_path / "ray" / "results.csv")) == n_rows


def test_a_dying_worker_is_retried_then_recorded_as_failed(tmp_path, cifar10_dir, mobilenet_weights, ray_local,
                                                            monkeypatch):
    import benchmarks.harness.executors as executors
    from benchmarks.harness.cells import Cell
    from benchmarks.harness.executors import run_cells
    from benchmarks.core.features import FeatureCache
    from benchmarks.harness.runner import Runner

    data = tiny_cifar10(cifar10_dir, tmp_path / "cifar10-tiny")
    cells = [Cell(method="small_cnn", dataset="cifar10", data_dir=str(data), image_size=32, train_per_class=10,
                  test_per_class=5, device="cpu", seed=s, options=(("epochs", 1), ("width", 4))) for s in (0, 1)]
    marker = tmp_path / "crashed-once"

    # Defined here so that Ray ships it by value: the worker process dies on the first try of seed 0.
    def flaky(cell, run_id, cache_dir, fingerprints=None, checkpoint_dir=None, _marker=str(marker)):
        import os
        import pathlib

        from benchmarks.harness.executors import run_cell_in_worker

        if cell.seed == 0 and not pathlib.Path(_marker).exists():
            pathlib.Path(_marker).touch()
            os._exit(1)
        return run_cell_in_worker(cell, run_id, cache_dir, fingerprints, checkpoint_dir)

    def always_dies(cell, run_id, cache_dir, fingerprints=None, checkpoint_dir=None):
        import os

        os._exit(1)

    monkeypatch.setattr(executors, "run_cell_in_worker", flaky)
    runner = Runner(progress=False, feature_cache=FeatureCache(None))
    rows = run_cells(cells, tmp_path / "out", runner, RayExecutor(max_retries=1))
    assert marker.exists() and [r["status"] for r in rows] == ["ok", "ok"]

    monkeypatch.setattr(executors, "run_cell_in_worker", always_dies)
    runner = Runner(progress=False, feature_cache=FeatureCache(None))
    rows = run_cells(cells[:1], tmp_path / "out2", runner, RayExecutor(max_retries=1))
    assert rows[0]["status"] == "failed" and rows[0]["error"]
    written = read_rows(tmp_path / "out2" / "results.csv")
    assert len(written) == 1 and written[0]["row_type"] == "failed"


def test_missing_ray_gives_the_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'gradfree\[ray\]'"):
        make_executor("ray")
    assert isinstance(make_executor("local"), object)


def test_cells_ask_for_gpus_only_when_they_need_them():
    from benchmarks.harness.cells import Cell

    class FakeRay:
        def cluster_resources(self):
            return {"CPU": 2.0}

    ex = RayExecutor()
    assert ex._gpus_for(FakeRay(), Cell(device="cpu")) == 0
    assert ex._gpus_for(FakeRay(), Cell(device="auto")) == 0
    assert ex._gpus_for(FakeRay(), Cell(device="cuda")) == 1
