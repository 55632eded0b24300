"""The backprop baselines on tiny CPU data: the runner's contract, learning, the clock, fastai, WRN-22."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from baselines import _training
from baselines.finetune import PRESETS, FineTune, FineTuneConfig, apply_preset
from baselines.small_cnn import SmallCNN
from baselines.wrn22 import WRN22OneCycle, wrn_22
from benchmarks.core.backbones import weights_path
from benchmarks.core.data import synthetic_bundle
from benchmarks.core.protocol import RunContext
from benchmarks.core.timing import Clock

EPOCH_KEYS = {"row_type", "epoch", "train_time_s", "train_loss", "val_acc"}
FINAL_KEYS = {"train_acc", "val_acc", "test_acc", "best_epoch", "epochs", "model_param_count",
              "trainable_param_count", "model_bytes"}
# Pretrained weights when the lead's checkpoint is in the torch hub cache; random otherwise.
WEIGHTS = "DEFAULT" if weights_path("mobilenet_v2", "DEFAULT").exists() else "none"
CUT = "features.6"

# Per method: the class and small options for a fast CPU run (image size, Config overrides).
TINY = {
    "small_cnn": (SmallCNN, 32, dict(width=8)),
    "finetune": (FineTune, 32, dict(head="flatten")),
    "wrn22": (WRN22OneCycle, 16, dict(width=1, batch_size=None, lr_max=1e-2)),
}


def make_ctx(data, rows: list | None = None, **kwargs) -> RunContext:
    rows = [] if rows is None else rows
    opts = dict(device=torch.device("cpu"), seed=0, cut=CUT, weights=WEIGHTS, batch_size=16, progress=False,
                clock=Clock("cpu"))
    opts.update(kwargs)
    return RunContext(data=data, emit=rows.append, **opts)


def run_tiny(name: str, epochs: int, n_per_class: int = 8, n_classes: int = 2, progress: bool = False,
             clock: Clock | None = None, **overrides):
    cls, image_size, options = TINY[name]
    data = synthetic_bundle(n_per_class=n_per_class, image_size=image_size, n_classes=n_classes)
    method = cls(cls.Config(**{**options, "epochs": epochs, **overrides}))
    rows: list[dict] = []
    ctx = make_ctx(data, rows, progress=progress, clock=clock or Clock("cpu"))
    out = method.run(ctx)
    return method, ctx, rows, out


# ----------------------------------------------------------------------------
# The runner's contract
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TINY))
def test_one_epoch_end_to_end(name):
    method, ctx, rows, out = run_tiny(name, epochs=1)
    assert method.name == name
    assert FINAL_KEYS <= set(out)
    assert out["epochs"] == 1 and out["best_epoch"] == 1
    for key in ("train_acc", "val_acc", "test_acc"):
        assert 0.0 <= out[key] <= 1.0
    assert 0 < out["trainable_param_count"] <= out["model_param_count"]
    assert out["model_bytes"] >= 4 * out["model_param_count"]  # fp32 params, plus buffers

    assert len(rows) == 1 and set(rows[0]) == EPOCH_KEYS
    assert rows[0]["row_type"] == "epoch" and rows[0]["epoch"] == 1
    assert rows[0]["val_acc"] == out["val_acc"]

    clock = ctx.clock
    assert {"warmup_s", "train_s", "eval_s", "predict_s"} <= set(clock.totals)
    assert clock.uncounted == {"warmup_s", "eval_s", "predict_s"}
    assert clock.counted_s == pytest.approx(clock.totals["train_s"])
    assert rows[0]["train_time_s"] == pytest.approx(clock.counted_s)


@pytest.mark.parametrize("name", sorted(TINY))
def test_learns_easy_task(name):
    epochs = {"small_cnn": 6, "finetune": 4, "wrn22": 4}[name]
    _, _, rows, out = run_tiny(name, epochs=epochs, n_per_class=12, n_classes=3, progress=True)
    assert out["val_acc"] > 0.8 and out["test_acc"] > 0.8, (out, rows)
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    times = [r["train_time_s"] for r in rows]
    assert times == sorted(times) and times[0] > 0
    if name != "wrn22":  # one-cycle: the final epoch; the others: the best epoch on validation
        assert out["val_acc"] == max(r["val_acc"] for r in rows)
        assert rows[out["best_epoch"] - 1]["val_acc"] == out["val_acc"]


@pytest.mark.parametrize("name", ["small_cnn", "finetune"])
def test_validation_every_few_epochs_decides_the_best_epoch_and_patience_there(name):
    _, _, rows, out = run_tiny(name, epochs=7, eval_every=3)
    assert [r["epoch"] for r in rows] == [3, 6, 7]
    assert out["best_epoch"] in (3, 6, 7) and out["val_acc"] == max(r["val_acc"] for r in rows)
    _, _, rows, out = run_tiny(name, epochs=40, eval_every=5, patience=1, lr=1e-9)  # (almost) no learning
    epochs = [r["epoch"] for r in rows]
    assert epochs == list(range(5, epochs[-1] + 1, 5)) and out["epochs_run"] == epochs[-1] < 40
    assert out["epochs_run"] - out["best_epoch"] >= 1  # stopped at an evaluation with no gain
    with pytest.raises(ValueError, match="eval_every"):
        TINY[name][0].Config(eval_every=0)


def test_same_seed_same_run():
    _, _, rows_a, out_a = run_tiny("small_cnn", epochs=2, augment=True)
    _, _, rows_b, out_b = run_tiny("small_cnn", epochs=2, augment=True)
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]
    assert out_a.pop("test_pred").equal(out_b.pop("test_pred"))  # (a tensor: compared on its own)
    assert out_a == out_b


@pytest.mark.parametrize("name", ["small_cnn", "wrn22"])
def test_clock_excludes_evaluation(name, monkeypatch):
    """A deliberately slow evaluation shows up in eval_s and nowhere in the training time.

    The evaluation "takes" 1,000 s on a timer that the test advances (real time plus what it
    adds), so the check does not depend on the machine's speed: the real run takes seconds."""
    slow_s = 1000.0
    offset = [0.0]

    def timer() -> float:
        return time.perf_counter() + offset[0]

    calls = []
    predict = _training.predict  # what every evaluation (train, validation, test) runs

    def slow_predict(*args, **kwargs):
        calls.append(1)
        offset[0] += slow_s
        return predict(*args, **kwargs)

    monkeypatch.setattr(_training, "predict", slow_predict)
    _, ctx, rows, _ = run_tiny(name, epochs=1, n_per_class=4, clock=Clock("cpu", timer=timer))
    assert len(calls) >= 2  # train and test at the end (and validation in the shared loop)
    clock = ctx.clock
    assert clock.totals["eval_s"] + clock.totals["predict_s"] >= slow_s * len(calls)
    assert slow_s <= clock.totals["predict_s"] < 2 * slow_s  # the test split, scored once
    # Not one slow evaluation reached the training time, nor the epoch rows.
    assert clock.counted_s < slow_s
    assert clock.columns()["train_total_s"] == pytest.approx(clock.counted_s, abs=1e-5)
    assert rows and all(r["train_time_s"] < slow_s for r in rows)


# ----------------------------------------------------------------------------
# Shared loop pieces
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("pad_px,flip", [(4, True), (3, False), (0, True)])
def test_augment_batch_is_pad_then_crop(pad_px, flip):
    x = torch.randint(0, 256, (6, 3, 10, 12), dtype=torch.uint8)
    out = _training.augment_batch(x, pad_px, flip, torch.Generator().manual_seed(5))
    # The same draws, in the same order, applied the textbook way.
    g = torch.Generator().manual_seed(5)
    if pad_px:
        dy = torch.randint(-pad_px, pad_px + 1, (6, 1), generator=g)
        dx = torch.randint(-pad_px, pad_px + 1, (6, 1), generator=g)
    else:
        dy = dx = torch.zeros(6, 1, dtype=torch.int64)
    flips = torch.rand(6, 1, generator=g) < 0.5 if flip else torch.zeros(6, 1, dtype=torch.bool)
    padded = F.pad(x.float(), (pad_px,) * 4, mode="reflect") if pad_px else x.float()
    for i in range(6):
        top, left = pad_px + int(dy[i]), pad_px + int(dx[i])
        ref = padded[i, :, top:top + 10, left:left + 12]
        if flips[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i].float(), ref)
    assert out.dtype == torch.uint8


def test_batches_drop_a_trailing_single_image_in_training_only():
    g = torch.Generator().manual_seed(0)
    train = _training.batch_index(33, 16, g)
    assert [len(b) for b in train] == [16, 16]
    assert _training.n_train_batches(33, 16) == 2 and _training.n_train_batches(34, 16) == 3
    assert [len(b) for b in _training.batch_index(33, 16)] == [16, 16, 1]
    assert torch.equal(torch.cat(_training.batch_index(33, 16)), torch.arange(33))


# ----------------------------------------------------------------------------
# finetune
# ----------------------------------------------------------------------------


def test_seed_paper_preset():
    cfg = apply_preset(FineTuneConfig(preset="seed-paper"))
    assert (cfg.optimizer, cfg.lr, cfg.epochs, cfg.batch_size) == ("adam", 1e-6, 5, 32)
    assert cfg.augment is False and cfg.schedule == "none"
    assert FineTune(FineTuneConfig(preset="seed-paper")).config == cfg
    assert apply_preset(cfg) == cfg
    opt = _training.make_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(2))], cfg.lr,
                                   cfg.weight_decay)
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["lr"] == 1e-6
    assert _training.make_scheduler(cfg.schedule, opt, cfg.lr, 10) is None
    with pytest.warns(UserWarning, match="overrides"):
        FineTune(FineTuneConfig(preset="seed-paper", epochs=3))
    assert set(PRESETS["seed-paper"]) <= set(FineTuneConfig.__dataclass_fields__)


def test_finetune_unfreezes_only_the_last_blocks():
    data = synthetic_bundle(n_per_class=8, image_size=32, n_classes=2)
    method = FineTune(FineTuneConfig(mode="unfreeze", unfreeze_blocks=1, epochs=1))
    _training.seed_everything(0)  # as run() does, so that random weights (weights="none") match too
    before = {k: v.clone() for k, v in method.build(make_ctx(data)).extractor.state_dict().items()}
    out = method.run(make_ctx(data))
    model = method.model_
    blocks = model.extractor.blocks
    assert out["unfrozen_blocks"] == 1
    head_params = sum(p.numel() for p in model.head.parameters())
    assert out["trainable_param_count"] == sum(p.numel() for p in blocks[-1].parameters()) + head_params
    model.train()
    assert blocks[-1].training and not any(b.training for b in blocks[:-1])
    # The frozen blocks (weights and BatchNorm statistics) did not move; the last one did.
    after = model.extractor.state_dict()
    last = f"body.{list(model.extractor.body._modules)[-1]}."
    frozen = [k for k in after if not k.startswith(last)]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(last))


def test_linear_probe_trains_the_head_only():
    _, _, _, out = run_tiny("finetune", epochs=1, head="pool")
    assert out["unfrozen_blocks"] == 0
    assert out["trainable_param_count"] == out["feature_dim"] * 2 + 2  # linear head, 2 classes
    assert out["model_param_count"] == out["backbone_param_count"] + out["trainable_param_count"]


# ----------------------------------------------------------------------------
# wrn22 and fastai
# ----------------------------------------------------------------------------


def test_wrn22_architecture():
    model = wrn_22(n_classes=10).eval()
    assert model.stem.out_channels == 16
    assert len(model.groups) == 3 and all(len(g) == 3 for g in model.groups)
    assert [g[-1].out_channels for g in model.groups] == [96, 192, 384]
    assert [[b.stride for b in g] for g in model.groups] == [[1, 1, 1], [2, 1, 1], [2, 1, 1]]
    shapes = []
    hooks = [g.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for g in model.groups]
    with torch.no_grad():
        y = model(torch.zeros(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert shapes == [(96, 32, 32), (192, 16, 16), (384, 8, 8)]
    assert y.shape == (2, 10)


def test_wrn22_trains_with_a_real_fastai_learner():
    from fastai.callback.progress import ProgressCallback
    from fastai.learner import Learner

    method, _, _, out = run_tiny("wrn22", epochs=2, batch_size=8)
    learn = method.learner_
    assert isinstance(learn, Learner)
    assert learn.model is method.model_
    assert not any(isinstance(cb, ProgressCallback) for cb in learn.cbs)
    # fit_one_cycle ran: the learning rate rose from lr_max / div to lr_max and fell again.
    lrs = learn.recorder.lrs
    assert len(lrs) == 2 * 2  # 2 epochs of 2 batches
    assert lrs[0] == pytest.approx(1e-2 / 25, rel=1e-3)
    assert max(lrs) > 3 * lrs[0] and lrs[-1] < max(lrs) / 3
    assert out["best_epoch"] == out["epochs"] == 2


def test_wrn22_without_fastai_says_how_to_install():
    code = (
        "import sys; sys.modules['fastai'] = None\n"
        "import baselines.wrn22 as w\n"  # importing must work without fastai
        "try:\n"
        "    w._import_fastai()\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "fastai is not installed: pip install 'gradfree[fastai]' (fastai==2.8.12)" in out


# ----------------------------------------------------------------------------
# Early stopping and the learning-rate grid chosen on validation
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["small_cnn", "finetune"])
def test_patience_stops_when_validation_stops_improving(name):
    # A learning rate of 1e-12 leaves the weights as they are: validation never improves after epoch 1.
    _, ctx, rows, out = run_tiny(name, epochs=20, lr=1e-12, patience=2)
    assert out["best_epoch"] == 1 and out["epochs_run"] == 3 and out["epochs"] == 20
    assert [r["epoch"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("tune_epochs", [None, 1])
@pytest.mark.parametrize("name", ["small_cnn", "finetune"])
def test_lr_grid_is_chosen_on_validation_its_cost_reported_and_test_scored_once(name, tune_epochs, monkeypatch):
    test_calls = []
    predict = _training.predict  # what every evaluation (train, validation, test) runs

    def counting(model, split, feed):
        if split is ctx_holder[0].data.test:
            test_calls.append(1)
        return predict(model, split, feed)

    ctx_holder = []
    cls, image_size, options = TINY[name]
    data = synthetic_bundle(n_per_class=12, image_size=image_size, n_classes=3)
    method = cls(cls.Config(**{**options, "epochs": 3, "lr_grid": (1e-12, 0.05), "tune_epochs": tune_epochs}))
    rows: list[dict] = []
    ctx = make_ctx(data, rows)
    ctx_holder.append(ctx)
    monkeypatch.setattr(_training, "predict", counting)
    out = method.run(ctx)
    assert out["lr"] == 0.05 and out["grid_val_acc"]["1e-12"] < out["grid_val_acc"]["0.05"]
    assert len(test_calls) == 1  # the chosen model only
    clock = ctx.clock
    # The chosen run is the cell's training time and curve; the other run is tune_s, not counted.
    assert clock.totals["tune_s"] > 0 and "tune_s" in clock.uncounted
    assert out["tune_s"] == clock.totals["tune_s"]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["train_time_s"] == pytest.approx(clock.counted_s)
