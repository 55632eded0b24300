"""airbench94 on tiny CPU data: the runner's path, the published architecture and recipe, learning, whitening."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from baselines import airbench
from baselines.airbench import Airbench, AirbenchConfig, AirbenchNet, Lookahead, whitening_filters
from benchmarks.core.data import ImageSplit, synthetic_bundle
from benchmarks.core.protocol import CellShape, RunContext
from benchmarks.harness.results import read_rows
from benchmarks.core.timing import Clock
from tiny_data import restore_torch_threads, tiny_cifar10  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCH_KEYS = {"row_type", "epoch", "train_time_s", "train_loss", "val_acc"}
SMALL = dict(block1=8, block2=16, block3=16)  # a narrow network: seconds on one core


def run_small(data, rows: list | None = None, clock: Clock | None = None, **overrides):
    method = Airbench(AirbenchConfig(**{**SMALL, **overrides}))
    rows = [] if rows is None else rows
    ctx = RunContext(data=data, clock=clock or Clock("cpu"), device=torch.device("cpu"), seed=0,
                     progress=False, emit=rows.append)
    return method, ctx, method.run(ctx)


# ----------------------------------------------------------------------------
# The runner's path
# ----------------------------------------------------------------------------


def test_one_epoch_through_the_command_line_within_its_memory_plan(cifar10_dir, tmp_path):
    # In a child process, so that the peak is the cell's own, not memory this process already holds: airbench
    # infers in batches of 2,000 images, whose activations at 32 px (~1 GB) outweigh a small training batch's;
    # a plan counting training only ran 3x under the peaks of curve-cifar10's cells.
    data_dir = tiny_cifar10(cifar10_dir, tmp_path / "cifar10", train_per_class=5, test_per_class=200)
    out = tmp_path / "out"
    repo = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "benchmarks.cli", "run", "--method", "airbench", "--dataset", "cifar10",
                    "--data-dir", str(data_dir), "--image-size", "32", "--train-per-class", "5",
                    "--test-per-class", "200", "--epochs", "1", "--batch-size", "1024", "--set", "tta_level=0",
                    "--device", "cpu", "--threads", "2", "--no-progress", "--out", str(out)],
                   cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, check=True, capture_output=True, timeout=300)
    rows = read_rows(out / "results.csv")
    epochs = [r for r in rows if r["row_type"] == "epoch"]
    (final,) = [r for r in rows if r["row_type"] == "final"]
    assert len(epochs) == 1 and epochs[0]["epoch"] == "1"
    assert all(epochs[0][k] != "" for k in EPOCH_KEYS)
    assert (final["method"], final["status"], final["dataset"]) == ("airbench", "ok", "cifar10")
    assert (final["n_train"], final["n_val"], final["n_test"]) == ("40", "10", "2000")
    assert final["backbone"] == final["cut"] == "" and final["best_epoch"] == "1"
    assert int(final["model_param_count"]) == 1972792
    assert float(epochs[0]["train_time_s"]) == pytest.approx(float(final["train_total_s"]), abs=1e-5)
    assert float(final["train_total_s"]) == pytest.approx(float(final["train_s"]), abs=1e-5)
    assert float(final["warmup_s"]) > 0 and float(final["eval_s"]) > 0
    for key in ("train_acc", "val_acc", "test_acc"):
        assert 0.0 <= float(final[key]) <= 1.0
    extra = json.loads(final["extra"])
    # 40 images < 1024: one batch of all of them per epoch; the final scores at the TTA level set.
    assert (extra["batch_size"], extra["train_steps"], extra["tta_level"]) == (40, 1, 0)
    assert extra["train_precision"] == "fp32"
    assert json.loads(final["method_config"])["lr"] == 11.5
    assert 0 < int(final["peak_memory_bytes"]) <= extra["estimate"]["memory_bytes"]


# ----------------------------------------------------------------------------
# The published network
# ----------------------------------------------------------------------------


def test_architecture_is_airbench94():
    net = AirbenchNet(10)
    assert (net.whiten.in_channels, net.whiten.out_channels, net.whiten.kernel_size) == (3, 24, (2, 2))
    assert net.whiten.padding == (0, 0) and not net.whiten.weight.requires_grad and net.whiten.bias.requires_grad
    widths = [(g.conv1.in_channels, g.conv1.out_channels, g.conv2.out_channels) for g in net.groups]
    assert widths == [(24, 64, 64), (64, 256, 256), (256, 256, 256)]
    for g in net.groups:
        for conv in (g.conv1, g.conv2):
            assert conv.kernel_size == (3, 3) and conv.bias is None
        for bn in (g.norm1, g.norm2):
            assert bn.eps == 1e-12 and bn.momentum == pytest.approx(0.4)  # airbench's 0.6, PyTorch's convention
            assert not bn.weight.requires_grad and bn.bias.requires_grad
    assert net.head.bias is None and net.head.in_features == 256 and net.logit_scale == pytest.approx(1 / 9)
    # Parameter count as published: 1,972,792, of which the frozen whitening weight and BN scales are 1,440.
    assert sum(p.numel() for p in net.parameters()) == 1972792
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 1972792 - 288 - 2 * (64 + 256 + 256)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_training_flops_match_the_paper():
    # The paper: 3.6e14 FLOPs for airbench94 (9.9 epochs of 50,000 images, forward + backward).
    shape = CellShape(image_size=32, n_classes=10, n_train=50000)
    flops, info = Airbench.flops(Airbench.Config(), shape)
    assert flops["train"] == pytest.approx(3.6e14, rel=0.05) and info["params"] == 1972792


def test_convolutions_start_as_partial_identities():
    group = AirbenchNet(10).groups[1]  # 64 -> 256 -> 256
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        assert torch.allclose(group.conv1(x)[:, :64], x)  # the first 64 filters pass their input through
        y = torch.randn(2, 256, 4, 4)
        assert torch.allclose(group.conv2(y), y)


def test_optimiser_and_schedule_as_published():
    cfg = AirbenchConfig()
    net = AirbenchNet(10)
    opt = airbench.make_optimizer(net, cfg, batch_size=1024)
    biases, others = opt.param_groups
    lr = 11.5 / (1024 * (1 + 1 / (1 - 0.85)))
    assert others["lr"] == pytest.approx(lr) and biases["lr"] == pytest.approx(64 * lr)
    # Decay per step: lr * weight_decay = 0.0153 * batch / kilostep, the same in both groups.
    assert others["lr"] * others["weight_decay"] == pytest.approx(0.0153 * 1024 / (1024 * (1 + 1 / 0.15)))
    assert biases["lr"] * biases["weight_decay"] == pytest.approx(others["lr"] * others["weight_decay"])
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.85
    assert len(biases["params"]) == 6 and all(p.ndim == 1 for p in biases["params"])  # the BN biases
    total = 476  # ceil(48 steps x 9.9 epochs) on 50,000 images
    assert airbench.lr_factor(0, total) == pytest.approx(0.2)
    assert airbench.lr_factor(int(0.23 * total), total) == pytest.approx(1.0)
    assert airbench.lr_factor(total, total) == pytest.approx(0.07)
    assert airbench.lookahead_decay(total, total) == pytest.approx(0.95**5)


def test_lookahead_averages_floats_and_leaves_the_model_at_the_average():
    net = torch.nn.BatchNorm2d(3)
    avg = Lookahead(net)
    with torch.no_grad():
        net.bias.fill_(1.0)
        net.num_batches_tracked.fill_(7)
    avg.update(net, decay=0.75)
    assert torch.allclose(net.bias, torch.full((3,), 0.25)) and int(net.num_batches_tracked) == 7
    with torch.no_grad():
        net.bias.fill_(5.0)
    avg.update(net, decay=1.0)  # the last step: the model takes the average as it is
    assert torch.allclose(net.bias, torch.full((3,), 0.25))


def test_alternating_flip():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(100, generator=g) < 0.5
    cfg = AirbenchConfig()
    e0, e1, e2 = (airbench.epoch_flips(base, e, cfg, g) for e in range(3))
    assert torch.equal(e0, base) and torch.equal(e1, ~base) and torch.equal(e2, base)
    assert not airbench.epoch_flips(base, 1, AirbenchConfig(augment=False), g).any()


def test_test_time_augmentation_views():
    seen = []

    def model(x):
        seen.append(x.clone())
        return x.flatten(1)[:, :4]

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    airbench.tta_logits(model, x, 2)
    assert len(seen) == 6
    up_left, down_right = seen[2], seen[4]
    assert torch.equal(seen[0], x) and torch.equal(seen[1], x.flip(-1)) and torch.equal(seen[3], up_left.flip(-1))
    assert torch.equal(up_left[..., 1:, 1:], x[..., :3, :3]) and torch.equal(down_right[..., :3, :3], x[..., 1:, 1:])
    logits = airbench.tta_logits(model, x, 1)
    assert torch.allclose(logits, 0.5 * model(x) + 0.5 * model(x.flip(-1)))


# ----------------------------------------------------------------------------
# Whitening
# ----------------------------------------------------------------------------


def test_whitening_filters_whiten_the_patches():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(3, 3, generator=g)
    images = torch.einsum("dc,nchw->ndhw", mix, torch.randn(64, 3, 8, 8, generator=g))  # correlated channels
    w = whitening_filters(images, eps=1e-8)
    assert w.shape == (24, 3, 2, 2) and torch.allclose(w[12:], -w[:12])
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    out = patches @ w[:12].reshape(12, -1).T
    cov = out.T @ out / len(out)
    assert torch.allclose(cov, torch.eye(12), atol=1e-3)
    eigenvalues = torch.linalg.eigvalsh(patches.T.double() @ patches.double() / len(patches))
    norms = w[:12].reshape(12, -1).norm(dim=1)  # 1 / sqrt(eigenvalue), largest eigenvalue first
    assert torch.allclose(norms.double(), eigenvalues.flip(0).rsqrt(), rtol=1e-3)


def test_whitening_comes_from_training_patches_only():
    data = synthetic_bundle(n_per_class=8, image_size=16, n_classes=2)
    method, _, _ = run_small(data, epochs=1, batch_size=8, whiten_images=10)
    weight = method.model_.whiten.weight.detach().clone()
    index = method.whiten_index_
    assert len(index) == 10 and int(index.max()) < len(data.train)
    mean, std = data.channel_stats()
    from benchmarks.core.data import to_float

    expected = whitening_filters(to_float(data.train.images[index], mean, std))
    assert torch.allclose(weight, expected)  # frozen: training and the weight average leave it as it was

    # Other validation and test images change nothing in the whitening layer.
    g = torch.Generator().manual_seed(1)
    for split in ("val", "test"):
        s = getattr(data, split)
        setattr(data, split, ImageSplit(torch.randint(0, 256, s.images.shape, generator=g, dtype=torch.uint8),
                                        s.labels))
    other, _, _ = run_small(data, epochs=1, batch_size=8, whiten_images=10)
    assert torch.equal(other.model_.whiten.weight, weight)


# ----------------------------------------------------------------------------
# Learning and the clock
# ----------------------------------------------------------------------------


def test_learns_easy_task():
    data = synthetic_bundle(n_per_class=12, image_size=32, n_classes=3)
    rows: list[dict] = []
    _, _, out = run_small(data, rows, epochs=6, batch_size=12)
    assert out["val_acc"] > 0.8 and out["test_acc"] > 0.8, (out, rows)
    assert [r["epoch"] for r in rows] == list(range(1, 7)) and all(set(r) == EPOCH_KEYS for r in rows)
    times = [r["train_time_s"] for r in rows]
    assert times == sorted(times) and times[0] > 0
    assert out["best_epoch"] == 6 and out["train_steps"] == 6 * 3  # 36 images in batches of 12
    assert rows[-1]["val_acc"] == out["val_acc_no_tta"]


def test_fractional_epochs_cut_the_last_one_short_and_runs_repeat():
    data = synthetic_bundle(n_per_class=8, image_size=16, n_classes=2)  # 16 images, 4 steps of 4 per epoch
    rows_a: list[dict] = []
    _, _, out = run_small(data, rows_a, epochs=1.5, batch_size=4)
    assert out["train_steps"] == 6 and out["best_epoch"] == 2 and len(rows_a) == 2
    rows_b: list[dict] = []
    _, _, out_b = run_small(data, rows_b, epochs=1.5, batch_size=4)
    assert out.pop("test_pred").equal(out_b.pop("test_pred"))  # (a tensor: compared on its own)
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b] and out == out_b


def test_validation_every_few_epochs_and_after_the_last():
    data = synthetic_bundle(n_per_class=8, image_size=16, n_classes=2)
    rows: list[dict] = []
    _, _, out = run_small(data, rows, epochs=5, batch_size=8, eval_every=2)
    assert [r["epoch"] for r in rows] == [2, 4, 5] and out["train_steps"] == 10
    with pytest.raises(ValueError, match="eval_every"):
        AirbenchConfig(eval_every=0)


def test_clock_excludes_evaluation(monkeypatch):
    """Every evaluation "takes" 1,000 s on a timer the test advances: none of it reaches the training time."""
    offset = [0.0]
    predict = airbench.predict  # what every evaluation (validation, train, test) runs

    def slow_predict(*args, **kwargs):
        offset[0] += 1000.0
        return predict(*args, **kwargs)

    monkeypatch.setattr(airbench, "predict", slow_predict)
    data = synthetic_bundle(n_per_class=4, image_size=16, n_classes=2)
    rows: list[dict] = []
    clock = Clock("cpu", timer=lambda: time.perf_counter() + offset[0])
    _, ctx, _ = run_small(data, rows, clock=clock, epochs=2, batch_size=4)
    assert ctx.clock.totals["eval_s"] >= 4 * 1000.0  # 2 epochs of validation, then val and train
    assert 1000.0 <= ctx.clock.totals["predict_s"] < 2000.0  # the test split, once: the inference time
    assert ctx.clock.counted_s < 1000.0 and all(r["train_time_s"] < 1000.0 for r in rows)
    assert ctx.clock.uncounted == {"warmup_s", "eval_s", "predict_s"}


def test_a_label_never_names_the_published_recipe_where_another_batch_ran():
    from baselines.small_cnn import SmallCNN
    from baselines.wrn22 import WRN22OneCycle

    assert Airbench.label(AirbenchConfig()) == "airbench94"
    assert Airbench.label(AirbenchConfig(batch_size=128)) == "airbench94, batch 128"
    assert Airbench.label(AirbenchConfig(epochs=48, batch_size=512)) == "airbench94 48 epochs, batch 512"
    assert Airbench.label(AirbenchConfig(batch_size=None)) == "airbench94, the cell's batch"
    assert WRN22OneCycle.label(WRN22OneCycle.Config()) == "wrn22"
    assert WRN22OneCycle.label(WRN22OneCycle.Config(batch_size=128)) == "wrn22, batch 128"
    assert SmallCNN.label(SmallCNN.Config(batch_size=128)) == "small_cnn"  # its default is the cell's batch
