"""gradfree's airbench94 against the ``airbench`` package's own ``train94`` on the same images.

The package (PyPI ``airbench``, not a dependency of gradfree: ``pip install airbench==0.1.8``) is
CUDA-only. On a CUDA device both run as published, fp16, on the whole of CIFAR-10: accuracy
within a point, training time within 1.5x (3 runs each). On CPU the package's CUDA-only calls
are redirected to fp32 CPU (:func:`package_on_cpu`: its network's ``.half().cuda()``, its
loader's device, its CUDA-event timer), so the two implementations meet on the same arithmetic
on a subset of CIFAR-10 that fits minutes: one run each, accuracy within 3 points (the noise of
one run on 2,000 test images), time within 1.5x. Both skip when the package is not installed.
"""

from __future__ import annotations

import contextlib
import io
import math
import time

import pytest
import torch

from baselines.airbench import Airbench
from benchmarks.core.protocol import RunContext
from benchmarks.core.timing import Clock

# Per device: images per class (train, test; None = all), runs of each, accuracy tolerance.
SIZES = {"cpu": dict(train_per_class=500, test_per_class=200, runs=1, tolerance=0.03),
         "cuda": dict(train_per_class=None, test_per_class=None, runs=3, tolerance=0.01)}


def package_log(text: str) -> tuple[float, float]:
    """(training seconds, test accuracy with TTA) from the log ``airbench.train94(verbose=True)`` prints.

    Its table has the columns run, epoch, train_loss, train_acc, val_acc, tta_val_acc and
    total_time_seconds, where "val" is the test set; the training time is the package's own clock
    at the last epoch (the final "eval" row adds the TTA evaluation, which gradfree keeps off the
    clock), the accuracy the "eval" row's.
    """
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    epochs = [r for r in rows if len(r) == 7 and r[1].isdigit()]
    final = [r for r in rows if len(r) == 7 and r[1] == "eval"]
    if not epochs or len(final) != 1:
        raise ValueError(f"not an airbench train94 log:\n{text}")
    return float(epochs[-1][6]), float(final[0][5])


def test_package_log_reads_the_training_time_and_the_tta_accuracy():
    log = """----------------------------------------------------------------------------------
|  run     |  epoch  |  train_loss  |  train_acc  |  val_acc  |  tta_val_acc  |  total_time_seconds  |
----------------------------------------------------------------------------------
|       0  |      0  |      1.1012  |     0.6211  |   0.6450  |               |              0.8311  |
|          |      9  |      0.5821  |     0.9502  |   0.9341  |               |              3.4102  |
|          |   eval  |      0.5821  |     0.9502  |   0.9341  |       0.9410  |              3.5523  |
----------------------------------------------------------------------------------"""
    assert package_log(log) == (3.4102, 0.941)
    with pytest.raises(ValueError, match="not an airbench"):
        package_log(log.replace("eval", "   9"))


class _CpuEvent:
    """``torch.cuda.Event(enable_timing=True)`` on the CPU's clock (CPU work is synchronous)."""

    def __init__(self, enable_timing: bool = False):
        self.t = None

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: "_CpuEvent") -> float:
        return (end.t - self.t) * 1000.0  # milliseconds, as CUDA events give them


def package_on_cpu(monkeypatch, package) -> None:
    """Redirect the package's CUDA-only calls to fp32 CPU, for this test only (monkeypatch undoes it)."""
    from airbench import utils

    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.nn.Module, "half", lambda self: self)
    monkeypatch.setattr(torch.Tensor, "half", lambda self, *a, **k: self.float())
    monkeypatch.setattr(torch.cuda, "Event", _CpuEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    init = utils.CifarLoader.__init__  # its last default, gpu=0, is where every loader loads to
    monkeypatch.setattr(init, "__defaults__", init.__defaults__[:-1] + ("cpu",))


@pytest.mark.slow
@pytest.mark.parametrize("device", [pytest.param("cpu"), pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_matches_the_airbench_package(device, cifar10_dir, tmp_path, monkeypatch):
    """Same CIFAR-10 training and test images for both, each timed on its own synchronised clock
    (the package's CUDA events, the runner's Clock): ours within ``tolerance`` of ``train94``'s test
    accuracy with TTA (mean of the runs) and within 1.5x its training time (best of the runs)."""
    package = pytest.importorskip("airbench")
    from benchmarks.core.data import load_dataset

    size = SIZES[device]
    if device == "cpu":
        package_on_cpu(monkeypatch, package)
    data = load_dataset("cifar10", cifar10_dir, 32, size["train_per_class"], size["test_per_class"],
                        val_fraction=0.02, progress=False)
    # The package reads cifar10/{train,test}.pt (HWC uint8) from the working directory.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar10").mkdir()
    for name, split in (("train", data.train), ("test", data.test)):
        torch.save({"images": split.images.permute(0, 2, 3, 1).contiguous(), "labels": split.labels,
                    "classes": data.classes}, tmp_path / "cifar10" / f"{name}.pt")

    def package_run(run: int) -> tuple[float, float]:
        loader = package.CifarLoader("cifar10", train=True, batch_size=1024, aug=dict(flip=True, translate=2),
                                     altflip=True)
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            package.train94(loader, run=run, verbose=True)
        seconds, acc = package_log(log.getvalue())
        return acc, seconds

    with contextlib.redirect_stdout(io.StringIO()):
        package.warmup94()  # one step: CUDA and cuDNN initialised before the timed runs
    theirs = [package_run(run) for run in range(size["runs"])]
    ours = []
    for seed in range(size["runs"]):
        ctx = RunContext(data=data, clock=Clock(torch.device(device)), device=torch.device(device), seed=seed,
                         progress=False)
        out = Airbench().run(ctx)
        assert out["train_precision"] == ("fp16" if device == "cuda" else "fp32")
        ours.append((out["test_acc"], ctx.clock.counted_s))
    acc_ours, acc_theirs = (sum(a for a, _ in r) / len(r) for r in (ours, theirs))
    time_ours, time_theirs = (min(t for _, t in r) for r in (ours, theirs))
    print(f"airbench94 on {device}, {len(data.train)} training images: gradfree {acc_ours:.4f} in {time_ours:.1f} s, "
          f"the package {acc_theirs:.4f} in {time_theirs:.1f} s")
    assert not math.isnan(acc_ours)
    assert abs(acc_ours - acc_theirs) < size["tolerance"], (ours, theirs)
    assert time_ours < 1.5 * time_theirs, (ours, theirs)
