"""Every committed measurement within today's memory plan: each final row's measured peak (``peak_memory_bytes``,
the cell's own) against what the planner says now for the cell of the suite that made it, process allowance
included, planned for the machine the suites ran on (24 GB: ~22 GiB free, which decides whether random features
hold or stream their features). A plan under a peak it has seen would let a run pass the check and then run out of
memory; this is how the airbench94 (inference batches) and WRN-22 (activations) plans were found 1.7-3.9x under."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from benchmarks.core.protocol import planned_memory_bytes
from benchmarks.harness.cells import cell_shape
from benchmarks.harness.registry import get_method
from benchmarks.harness.results import read_rows
from benchmarks.harness.suites import expand, load_suite

RESULTS = Path(__file__).resolve().parent.parent / "results"
FREE = 22 << 30  # MemAvailable of the 24 GB machines the suites ran on
# The suites whose committed rows measure each cell's own peak (results/quick predates that: its rows carry the
# process's high-water mark, shared by consecutive cells). The learning curves join as they are committed.
SUITES = ["study-cifar10", "study-fashion-mnist", "study-densenet-cuts", "precision", "airbench-full-cpu",
          "airbench-vs-wrn22", "curve-effnet-cifar10", "logit-iters", "curve-cifar10", "curve-fashion-mnist"]


def _measured(suite: str):
    rows = {r["cell_key"]: r for r in read_rows(RESULTS / suite / "results.csv")
            if r["row_type"] == "final" and r["status"] == "ok" and r["peak_memory_bytes"]}
    for cell in expand(load_suite(suite)):
        row = rows.get(cell.key())
        if row is not None:
            yield cell, int(float(row["peak_memory_bytes"]))


@pytest.mark.parametrize("suite", [s for s in SUITES if (RESULTS / s / "results.csv").exists()])
def test_every_committed_peak_is_within_its_plan(suite):
    import torch

    checked, over = 0, []
    for cell, peak in _measured(suite):
        shape = dataclasses.replace(cell_shape(cell, torch.device("cpu")), free_bytes=FREE)
        plan = planned_memory_bytes(get_method(cell.method), cell.config, shape)
        checked += 1
        if peak > plan:
            over.append(f"{cell.key()} {cell.method} n_train={shape.n_train}: peak {peak / 1e9:.2f} GB, "
                        f"plan {plan / 1e9:.2f} GB")
    assert checked, f"{suite}: no committed row matched a cell of the suite"
    assert not over, "\n".join(over)


def test_a_training_batch_is_planned_from_every_layer_output():
    from torch import nn

    from benchmarks.core.flops import activation_elements

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    assert activation_elements(net, 8) == 4 * 64 + 4 * 64 + 4 * 16 + 64 + 10  # conv, relu, pool, flatten, linear
    assert next(net.parameters()).device.type == "cpu"  # counted on a meta copy


def test_fine_tuning_plans_the_activations_of_the_blocks_that_train():
    # Kept for the backward pass: every layer output of the trained blocks; the frozen ones run without
    # gradients. The nominal allowance this replaced planned every mode of every network alike (~3.5 GB here),
    # under what whole-network fine-tuning of DenseNet169 at 224 px keeps.
    from baselines.finetune import FineTune, FineTuneConfig
    from benchmarks.core.protocol import CellShape

    shape = CellShape(backbone="densenet169", image_size=224, n_train=800, n_val=200, n_test=2000)
    probe, last_two, whole = (FineTune.memory_bytes(FineTuneConfig(mode=mode, unfreeze_blocks=n, batch_size=64),
                                                    shape)
                              for mode, n in (("linear-probe", 2), ("unfreeze", 2), ("unfreeze", 100)))
    assert probe < last_two < whole and whole > 8e9 and probe < 2e9
