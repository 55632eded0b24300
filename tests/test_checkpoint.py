"""A cell stopped mid-training resumes from its last epoch's checkpoint and draws the curve an
uninterrupted run draws (issue 23, item 9: cells longer than a working session).

Each test runs the public command (``gradfree run``, in-process) on tiny real CIFAR-10 on one CPU
thread: once uninterrupted, once stopped (a :class:`benchmarks.cli.Terminated`, what SIGTERM raises,
thrown in the middle of the run), then the same command again. On one thread the CPU kernels are
deterministic, so the curves must agree bitwise (the CSV's text).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from benchmarks.core import checkpoint as ckpt
from benchmarks.harness import results as res
from benchmarks.harness.resultsfile import ResultsFile
from benchmarks.cli import Terminated, main
from benchmarks.harness.results import read_rows
from benchmarks.core.timing import Clock
from tiny_data import restore_torch_threads, tiny_cifar10  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

CURVE = ("epoch", "train_loss", "val_acc")
FINAL = ("train_acc", "val_acc", "test_acc", "best_epoch", "epochs")


@pytest.fixture(scope="module")
def data_dir(cifar10_dir, tmp_path_factory):
    return tiny_cifar10(cifar10_dir, tmp_path_factory.mktemp("cifar10"), train_per_class=10, test_per_class=5)


def command(data_dir, out, method: str, *options: str) -> list[str]:
    return ["run", "--method", method, "--dataset", "cifar10", "--data-dir", str(data_dir),
            "--image-size", "32", "--train-per-class", "10", "--test-per-class", "5", "--batch-size", "16",
            "--device", "cpu", "--threads", "1", "--seed", "3", "--no-progress", "--out", str(out), *options]


def run(data_dir, out, method: str, *options: str) -> int:
    return main(command(data_dir, out, method, *options))


def rows_of(out, name=res.RESULTS_FILE):
    path = out / name
    return read_rows(path) if path.exists() else []


def curve(rows):
    return [tuple(r[k] for k in CURVE) for r in rows if r["row_type"] == "epoch"]


def final(out):
    (row,) = [r for r in rows_of(out) if r["row_type"] == "final"]
    return row


def outcome(out) -> tuple:
    """What a cell's final row says of its training: scores, best epoch, and its ``extra`` (epochs run,
    learning rate, the grid's scores) but where it resumed, the grid's time and the machine's load."""
    row = final(out)
    extra = json.loads(row["extra"] or "{}")
    for measured in ("resumed_from", "tune_s", "load_at_start", "load_at_row"):  # times and loads: measured
        extra.pop(measured, None)
    return tuple(row[k] for k in FINAL), extra


def stop_after_save(monkeypatch, stage: str, epoch: int):
    """SIGTERM's exception right after ``stage``'s checkpoint of ``epoch`` is written."""
    save = ckpt.CellCheckpoint.save

    def save_then_stop(self, state):
        save(self, state)
        if (self.name, state["epoch"]) == (stage, epoch):
            raise Terminated()
    monkeypatch.setattr(ckpt.CellCheckpoint, "save", save_then_stop)


def stop_at_row(monkeypatch, epoch: int):
    """SIGTERM's exception when epoch ``epoch``'s row is about to be written: that epoch is trained but not
    checkpointed, so the resumed run trains it again."""
    append = ResultsFile.append

    def append_or_stop(self, rows):
        if any(r.get("row_type") == "epoch" and r.get("epoch") == epoch for r in rows):
            raise Terminated()
        append(self, rows)
    monkeypatch.setattr(ResultsFile, "append", append_or_stop)


def check_same_run(whole, resumed, stopped_epochs: int):
    """``resumed``'s folder holds ``whole``'s curve and final scores, each epoch row once, the
    epochs before the stop carried over with the time they were measured with."""
    rows = rows_of(resumed)
    assert curve(rows) == curve(rows_of(whole))
    assert outcome(resumed) == outcome(whole)
    epochs = [r for r in rows if r["row_type"] == "epoch"]
    assert len({r["run_id"] for r in rows}) == 1  # the resumed run's rows only
    first = [r for r in rows_of(resumed, res.INTERRUPTED_FILE) if r["row_type"] == "epoch"]
    assert [r["epoch"] for r in first] == [str(e) for e in range(1, stopped_epochs + 1)]
    # the epochs before the stop were not trained again: their counted time is the stopped run's
    assert [r["train_time_s"] for r in epochs[:stopped_epochs]] == [r["train_time_s"] for r in first]
    times = [float(r["train_time_s"]) for r in epochs]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert not (resumed / ckpt.FOLDER).exists()  # deleted once the cell finished


def test_small_cnn_stopped_mid_epoch_resumes_to_the_same_curve(data_dir, tmp_path, monkeypatch):
    options = ("--epochs", "4", "--lr", "0.05")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run(data_dir, whole, "small_cnn", *options) == 0
    with monkeypatch.context() as m:
        stop_at_row(m, epoch=3)
        assert run(data_dir, resumed, "small_cnn", *options) == 143
    (folder,) = [p for p in (resumed / ckpt.FOLDER).iterdir() if p.is_dir()]
    assert [p.name for p in folder.iterdir()] == ["main.pt"]
    assert run(data_dir, resumed, "small_cnn", *options) == 0
    check_same_run(whole, resumed, stopped_epochs=2)
    row = final(resumed)
    assert json.loads(row["extra"])["resumed_from"] == ["main@2"]
    # every counted second is the training's: the last epoch's cumulative time is the cell's
    last = [r for r in rows_of(resumed) if r["row_type"] == "epoch"][-1]
    assert float(row["train_total_s"]) == pytest.approx(float(last["train_time_s"]), abs=1e-5)


def test_a_sigterm_whenever_it_comes_then_the_same_command_gives_the_same_curve(data_dir, tmp_path):
    """``gradfree run`` in a process of its own, sent SIGTERM once its first checkpoint is written (whatever
    epoch it has reached by then, mid-epoch or mid-write), then run again to the end."""
    options = ("--epochs", "6", "--lr", "0.05")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run(data_dir, whole, "small_cnn", *options) == 0
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.cli", *command(data_dir, resumed, "small_cnn",
                                                                              *options)],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and not list(resumed.glob("checkpoints/*/main.pt")):
            assert time.monotonic() < deadline, "no checkpoint written in 10 minutes"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=300)
        assert code in (143, 0)  # 0: it had finished before the signal came
    finally:
        proc.kill()
    assert run(data_dir, resumed, "small_cnn", *options) == 0
    rows = rows_of(resumed)
    assert curve(rows) == curve(rows_of(whole))
    assert outcome(resumed) == outcome(whole)
    assert len({r["run_id"] for r in rows if r["row_type"] in ("epoch", "final")}) == 1
    assert not (resumed / ckpt.FOLDER).exists()


def test_small_cnn_learning_rate_grid_resumes_inside_the_grid(data_dir, tmp_path, monkeypatch):
    # two rates tried for 2 epochs each, the better one retrained for 3; stopped inside the second try
    options = ("--epochs", "3", "--lr-grid", "0.01,0.05", "--tune-epochs", "2", "--patience", "2")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run(data_dir, whole, "small_cnn", *options) == 0
    with monkeypatch.context() as m:
        stop_after_save(m, "grid1", 1)
        assert run(data_dir, resumed, "small_cnn", *options) == 143
    assert run(data_dir, resumed, "small_cnn", *options) == 0
    check_same_run(whole, resumed, stopped_epochs=0)
    row = final(resumed)
    assert len(outcome(resumed)[1]["grid_val_acc"]) == 2
    assert json.loads(row["extra"])["resumed_from"] == ["grid0@2", "grid1@1"]


def test_airbench_resumes_to_the_same_curve(data_dir, tmp_path, monkeypatch):
    options = ("--epochs", "3", "--batch-size", "32")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run(data_dir, whole, "airbench", *options) == 0
    with monkeypatch.context() as m:
        stop_at_row(m, epoch=2)
        assert run(data_dir, resumed, "airbench", *options) == 143
    assert run(data_dir, resumed, "airbench", *options) == 0
    check_same_run(whole, resumed, stopped_epochs=1)


def test_an_unreadable_or_foreign_checkpoint_is_discarded(data_dir, tmp_path, monkeypatch):
    options = ("--epochs", "2", "--lr", "0.05")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run(data_dir, whole, "small_cnn", *options) == 0
    with monkeypatch.context() as m:
        stop_after_save(m, "main", 1)
        assert run(data_dir, resumed, "small_cnn", *options) == 143
    (folder,) = [p for p in (resumed / ckpt.FOLDER).iterdir() if p.is_dir()]
    (folder / "main.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(ckpt.CheckpointWarning, match="unreadable"):
        assert run(data_dir, resumed, "small_cnn", *options) == 0
    assert curve(rows_of(resumed)) == curve(rows_of(whole))  # trained again from its first epoch
    assert "resumed_from" not in json.loads(final(resumed)["extra"] or "{}")

    # another cell's, or another configuration's, file is never trusted either
    state = {"epoch": 1}
    ckpt.CellCheckpoint(tmp_path / "c", "key-a", "config-a").save(state)
    for key, config, why in (("key-b", "config-a", "another cell"), ("key-a", "config-b", "another config")):
        if not (tmp_path / "c" / "main.pt").exists():
            ckpt.CellCheckpoint(tmp_path / "c", "key-a", "config-a").save(state)
        with pytest.warns(ckpt.CheckpointWarning, match=why):
            assert ckpt.CellCheckpoint(tmp_path / "c", key, config).load() is None
    ckpt.CellCheckpoint(tmp_path / "c", "key-a", "config-a").save(state)
    with pytest.warns(ckpt.CheckpointWarning, match="other settings"):
        assert ckpt.CellCheckpoint(tmp_path / "c", "key-a", "config-a").load(epochs=5) is None
    ckpt.CellCheckpoint(tmp_path / "c", "key-a", "config-a").save(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ckpt.CellCheckpoint(tmp_path / "c", "key-a", "config-a").load() == state


def test_a_refused_checkpoint_names_what_changed(tmp_path):
    # Seen: a cell's checkpoint from a commit before its trainer had eval_every was refused as "another
    # configuration, data, device or torch version", with nothing to tell which.
    parts = dict(config={"epochs": 48, "eval_every": None}, data="abc", device="cpu", torch="2.14.1")
    ckpt.CellCheckpoint(tmp_path / "a", "k", ckpt.config_hash(**parts), made_with=parts).stage("lr=0.1").save({})
    now = {**parts, "config": {"epochs": 48, "eval_every": 4}, "torch": "2.15.0"}
    later = ckpt.CellCheckpoint(tmp_path / "a", "k", ckpt.config_hash(**now), made_with=now).stage("lr=0.1")
    with pytest.warns(ckpt.CheckpointWarning) as seen:
        assert later.load() is None
    assert "(config.eval_every: 4, the checkpoint's None; torch: '2.15.0', the checkpoint's '2.14.1')" in \
        str(seen[0].message)
    ckpt.CellCheckpoint(tmp_path / "b", "k", "old-hash").save({})  # written before the parts were kept
    with pytest.warns(ckpt.CheckpointWarning, match=r"torch version; discarded"):
        assert ckpt.CellCheckpoint(tmp_path / "b", "k", ckpt.config_hash(**now), made_with=now).load() is None


def test_a_restored_clock_counts_the_time_before_and_after_once():
    now = [0.0]
    clock = Clock("cpu", timer=lambda: now[0])
    with clock.phase("warmup_s", counted=False):
        now[0] += 1.0
    with clock.phase("train_s"):
        now[0] += 10.0
    saved = clock.state()
    with clock.phase("train_s"):  # an epoch cut short by the stop: lost, not counted
        now[0] += 4.0
    resumed = Clock("cpu", timer=lambda: now[0])
    with resumed.phase("warmup_s", counted=False):  # the resumed process's own warm-up: replaced
        now[0] += 2.0
    resumed.restore(saved)
    with resumed.phase("train_s"):
        now[0] += 5.0
    assert resumed.counted_s == 15.0
    assert resumed.columns() == {"warmup_s": 1.0, "train_s": 15.0, "train_total_s": 15.0}
    with resumed.phase("eval_s", counted=False), pytest.raises(RuntimeError):
        resumed.state()


def test_random_states_round_trip_through_a_weights_only_file(tmp_path):
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(5)
    state = ckpt.rng_state(generator)
    target = ckpt.CellCheckpoint(tmp_path, "k", "c")
    target.save({"epoch": 1, "rng": state})
    draws = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=generator))
    ckpt.set_rng_state(target.load()["rng"], generator)
    again = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=generator))
    assert torch.equal(draws[0], again[0]) and (draws[1] == again[1]).all()
    assert draws[2] == again[2] and torch.equal(draws[3], again[3])


def test_wrn22_fastai_resumes_to_the_same_curve(data_dir, tmp_path, monkeypatch):
    pytest.importorskip("fastai")
    options = ("--epochs", "3", "--width", "1", "--batch-size", "32")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run(data_dir, whole, "wrn22", *options) == 0
    with monkeypatch.context() as m:
        stop_at_row(m, epoch=3)
        assert run(data_dir, resumed, "wrn22", *options) == 143
    assert run(data_dir, resumed, "wrn22", *options) == 0
    check_same_run(whole, resumed, stopped_epochs=2)
    assert json.loads(final(resumed)["extra"])["resumed_from"] == ["main@2"]


def test_finetune_with_early_stopping_resumes_to_the_same_curve(data_dir, tmp_path, monkeypatch):
    # the backbone's last blocks trained (random weights: no download), augmentation on, patience kept
    options = ("--backbone", "mobilenet_v2", "--weights", "none", "--mode", "unfreeze", "--unfreeze-blocks", "1",
               "--epochs", "4", "--patience", "3", "--lr", "0.01")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run(data_dir, whole, "finetune", *options) == 0
    with monkeypatch.context() as m:
        stop_after_save(m, "main", 2)
        assert run(data_dir, resumed, "finetune", *options) == 143
    assert run(data_dir, resumed, "finetune", *options) == 0
    check_same_run(whole, resumed, stopped_epochs=2)
    assert json.loads(final(resumed)["extra"])["resumed_from"] == ["main@2"]


def test_a_ray_worker_that_dies_mid_cell_is_retried_from_its_checkpoint(data_dir, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from benchmarks.harness import executors
    from benchmarks.harness.cells import Cell
    from benchmarks.core.features import FeatureCache
    from benchmarks.harness.runner import Runner

    cell = Cell(method="small_cnn", dataset="cifar10", data_dir=str(data_dir), image_size=32, train_per_class=10,
                test_per_class=5, device="cpu", seed=3, threads=1, options=(("epochs", 3), ("width", 4)))
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    executors.run_cells([cell], whole, Runner(progress=False, feature_cache=FeatureCache(None)))
    marker = tmp_path / "died-once"

    # Shipped to the worker by value: on its first try the worker process dies right after epoch 1's checkpoint.
    def dies_after_epoch_1(cell, run_id, cache_dir, fingerprints=None, checkpoint_dir=None, _marker=str(marker)):
        import os
        import pathlib

        from benchmarks.core import checkpoint
        from benchmarks.harness.executors import run_cell_in_worker

        if not pathlib.Path(_marker).exists():
            save = checkpoint.CellCheckpoint.save

            def save_then_die(self, state):
                save(self, state)
                if state["epoch"] == 1:
                    pathlib.Path(_marker).touch()
                    os._exit(1)
            checkpoint.CellCheckpoint.save = save_then_die
        return run_cell_in_worker(cell, run_id, cache_dir, fingerprints, checkpoint_dir)

    monkeypatch.setattr(executors, "run_cell_in_worker", dies_after_epoch_1)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        (row,) = executors.run_cells([cell], resumed, Runner(progress=False, feature_cache=FeatureCache(None)),
                                     executors.RayExecutor(max_retries=1))
    finally:
        ray.shutdown()
    assert marker.exists() and row["status"] == "ok"
    assert json.loads(final(resumed)["extra"])["resumed_from"] == ["main@1"]
    assert curve(rows_of(resumed)) == curve(rows_of(whole)) and outcome(resumed) == outcome(whole)
    assert not (resumed / ckpt.FOLDER).exists()


def test_a_worker_that_does_not_see_the_folder_does_not_checkpoint(data_dir, tmp_path):
    from benchmarks.harness.cells import Cell
    from benchmarks.harness.executors import _WORKER_RUNNERS, run_cell_in_worker

    cell = Cell(method="small_cnn", dataset="cifar10", data_dir=str(data_dir), image_size=32, train_per_class=10,
                test_per_class=5, device="cpu", seed=3, threads=1, options=(("epochs", 1), ("width", 4)))
    elsewhere = tmp_path / "driver-disk" / ckpt.FOLDER  # the driver's path, absent here
    rows = run_cell_in_worker(cell, "run-1", None, None, str(elsewhere))
    assert rows[-1]["status"] == "ok" and _WORKER_RUNNERS[None].checkpoint_dir is None
    seen = ckpt.claim(tmp_path / "shared" / ckpt.FOLDER, "run-2")  # the driver's folder, seen from here
    run_cell_in_worker(cell, "run-2", None, None, str(seen))
    assert _WORKER_RUNNERS[None].checkpoint_dir == seen
    _WORKER_RUNNERS.pop(None)
