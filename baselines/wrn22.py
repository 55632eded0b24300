"""fastai's one-cycle WideResNet-22: the DAWNBench CIFAR-10 recipe, trained by a real fastai Learner.

fast.ai's DAWNBench entry (fastai v1, ``examples/train_cifar.py``) trains
``wrn_22()`` with ``Learner(data, wrn_22(), metrics=accuracy).to_fp16()`` and
``learn.fit_one_cycle(30 or 35, 3e-3, wd=0.4)`` on batches of 512, with
``rand_pad(4, 32)`` (reflect padding then a random 32 px crop) and
``flip_lr`` augmentation, normalised with CIFAR's channel statistics.
fastai 2.8.12 no longer ships ``fastai.vision.models.wrn``, so the network is
rebuilt here layer for layer (:class:`WideResNet`), and trained with
fastai 2's ``Learner.fit_one_cycle`` and its default optimiser, Adam with
decoupled ("true") weight decay, i.e. AdamW. The one-cycle shape is fastai 2's
default (25 % warm-up from ``lr_max / 25``, cosine, momentum 0.95 -> 0.85 -> 0.95).

fastai is imported only when a run starts (``pip install 'gradfree[fastai]'``).
A fastai callback ties its loop to the runner's clock: the training batches of
each epoch run in a counted ``train_s`` phase, fastai's validation (on our
validation split) in ``eval_s`` (not counted), and each epoch emits a row.
With ``ctx.checkpoint`` the callback saves each epoch (model, fastai's optimiser, its loader's
shuffling state, random states, clock) and a stopped cell resumes with ``fit_one_cycle(...,
start_epoch=)`` after its last saved epoch (:mod:`benchmarks.core.checkpoint`).
fastai's progress bars and printed logs are switched off; ours is a tqdm bar.

One-cycle is not early-stopped: the schedule only ends at its last epoch, so
the final epoch is the model scored on test (``best_epoch == epochs``); the
validation accuracy of every epoch is in the epoch rows. A loss or weight that
stops being finite ends the fit after that epoch (``TrainingDiverged``: the cell fails).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from baselines import _training, _tuning
from baselines._divergence import TrainingDiverged, non_finite
from baselines._scratch import FromScratch
from benchmarks.core import checkpoint as ckpt

FASTAI_VERSION = "2.8.12"


def _import_fastai():
    """fastai's training modules, or an ImportError that says how to install them."""
    try:
        import fastai
        import fastai.callback.fp16  # noqa: F401  (adds Learner.to_fp16)
        import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
        from fastai.callback.core import Callback
        from fastai.callback.progress import ProgressCallback
        from fastai.data.core import DataLoaders
        from fastai.data.load import DataLoader
        from fastai.learner import Learner
    except ImportError as err:
        raise ImportError(
            f"fastai is not installed: pip install 'gradfree[fastai]' (fastai=={FASTAI_VERSION})"
        ) from err
    if fastai.__version__ != FASTAI_VERSION:
        warnings.warn(f"the wrn22 baseline is pinned to fastai {FASTAI_VERSION}; found {fastai.__version__}",
                      stacklevel=3)
    return Callback, ProgressCallback, DataLoaders, DataLoader, Learner


# ----------------------------------------------------------------------------
# The network (fastai v1's fastai.vision.models.wrn, rebuilt)
# ----------------------------------------------------------------------------


def _conv(ni: int, nf: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    # fastai v1's conv2d: same padding, no bias, Kaiming-normal weights.
    conv = nn.Conv2d(ni, nf, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight)
    return conv


class BasicBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU, conv 3x3 (stride), BN-ReLU, conv 3x3, x 0.2, + shortcut.

    As in fastai v1, the shortcut reads the pre-activated input (a 1x1 conv
    when the width or stride changes) and the residual branch is scaled by 0.2.
    """

    def __init__(self, ni: int, nf: int, stride: int = 1):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = ni, nf, stride
        self.bn = nn.BatchNorm2d(ni)
        self.conv1 = _conv(ni, nf, 3, stride)
        self.conv2 = nn.Sequential(nn.BatchNorm2d(nf), nn.ReLU(inplace=True), _conv(nf, nf, 3))
        self.shortcut = _conv(ni, nf, 1, stride) if (ni != nf or stride != 1) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(x))
        return self.conv2(self.conv1(x)) * 0.2 + self.shortcut(x)


class WideResNet(nn.Module):
    """``forward(x: (n, 3, H, W)) -> (n, n_classes)``: a 16-channel 3x3 stem, ``n_groups`` groups of
    ``blocks_per_group`` :class:`BasicBlock`, BN-ReLU, global average pool, linear.

    Group ``g`` (0-based) has ``16 * 2**g * width`` channels (96, 192, 384 for
    width 6) and halves the image at its first block when ``g > 0``.
    WRN-22 is ``n_groups=3, blocks_per_group=3, width=6``.
    """

    def __init__(self, n_classes: int, n_groups: int = 3, blocks_per_group: int = 3, width: int = 6,
                 stem_channels: int = 16):
        super().__init__()
        self.stem = _conv(3, stem_channels, 3)
        groups, ni = [], stem_channels
        for g in range(n_groups):
            nf = stem_channels * 2**g * width
            blocks = [BasicBlock(ni if i == 0 else nf, nf, stride=2 if (g > 0 and i == 0) else 1)
                      for i in range(blocks_per_group)]
            groups.append(nn.Sequential(*blocks))
            ni = nf
        self.groups = nn.Sequential(*groups)
        self.head = nn.Sequential(nn.BatchNorm2d(ni), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(ni, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.groups(self.stem(x)))


def wrn_22(n_classes: int = 10) -> WideResNet:
    """WRN-22 (width 6: groups of 96, 192 and 384 channels) for ``n_classes``."""
    return WideResNet(n_classes, n_groups=3, blocks_per_group=3, width=6)


# ----------------------------------------------------------------------------
# fastai glue
# ----------------------------------------------------------------------------


def _split_loader(DataLoader, split, batch_size: int, shuffle: bool, device):
    """A fastai DataLoader of ``(images uint8, labels)`` batches, gathered by index (no per-item collate)."""
    images, labels = split.images, split.labels
    n = len(split)
    return DataLoader(
        n=n, indexed=True, bs=batch_size, shuffle=shuffle, device=device,
        # BatchNorm cannot train on a trailing batch of one image.
        drop_last=shuffle and n > batch_size and n % batch_size == 1,
        create_item=lambda i: i,
        create_batch=lambda idx: (images[torch.as_tensor(idx)], labels[torch.as_tensor(idx)]),
        retain=lambda res, b: res,
    )


class _Stateful:
    """``state_dict()`` / ``load_state_dict()`` made of two functions, for what has none of its own."""

    def __init__(self, get, put):
        self.state_dict, self.load_state_dict = get, put


def _plain(value):
    return value.item() if hasattr(value, "item") and not isinstance(value, torch.Tensor) else value


def _opt_state(opt) -> dict:
    sd = opt.state_dict()  # hypers: an L of dicts holding NumPy numbers; weights_only files take plain ones
    return {"state": list(sd["state"]), "hypers": [{k: _plain(v) for k, v in h.items()} for h in sd["hypers"]]}


def _opt_load(sd: dict) -> dict:
    from fastcore.foundation import L

    return {"state": sd["state"], "hypers": L(sd["hypers"])}


def _runner_callback(Callback):
    """The class of the fastai callback that puts fastai's loop on the runner's clock."""

    class RunnerClock(Callback):
        """uint8 batches -> augmented, normalised floats; train/eval phases; epoch rows; a tqdm bar."""

        order = 5  # after TrainEvalCallback (-10), before MixedPrecision (10) and Recorder (50)

        def __init__(self, ctx, feed: _training.Feed, generator: torch.Generator, bar, saved: dict | None = None):
            self.ctx, self.feed, self.generator, self.bar = ctx, feed, generator, bar
            self._phase = None
            self.val_accs: list[float] = []
            self.rows: list[dict] = []
            self.saved = saved  # the checkpoint resumed from (fit_one_cycle's start_epoch skips its epochs)
            self.start_epoch = saved["epoch"] if saved is not None else 0

        def _modules(self) -> dict:
            # What fastai keeps outside state dicts: its optimiser's hypers (an L), its loader's Random,
            # the GradScaler its MixedPrecision callback makes in before_fit (after this callback).
            learn, rng = self.learn, self.learn.dls.train.rng
            return {"model": learn.model, "optimizer": _Stateful(lambda: _opt_state(learn.opt),
                                                                 lambda sd: learn.opt.load_state_dict(_opt_load(sd))),
                    "loader_rng": _Stateful(lambda: {"state": rng.getstate()},
                                            lambda sd: rng.setstate(ckpt.python_random_state(sd["state"])))}

        def before_fit(self):
            if self.saved is not None:  # before any epoch: model, optimiser, loader order, clock, random states
                ckpt.restore_training(self.saved, self.ctx.clock, self.generator, self._modules())
                self.rows = self.saved["rows"]
                for row in self.rows:
                    self.ctx.emit(row)
                self.val_accs = [row["val_acc"] for row in self.rows]
                self.bar.update(self.start_epoch * len(self.learn.dls.train))

        def _save(self) -> None:
            modules = self._modules()
            scaler = getattr(self.learn, "scaler", None)
            if scaler is not None:
                modules["scaler"] = scaler
            ckpt.save_training(self.ctx.checkpoint, self.ctx.clock, self.generator, modules,
                               epoch=self.learn.epoch + 1, epochs=self.learn.n_epoch, rows=self.rows)

        def _open(self, name: str, counted: bool) -> None:
            self.close_phase()
            self._phase = self.ctx.clock.phase(name, counted=counted)
            self._phase.__enter__()

        def close_phase(self) -> None:
            if self._phase is not None:
                phase, self._phase = self._phase, None
                phase.__exit__(None, None, None)

        def before_train(self):
            if self.saved is not None and "scaler" in self.saved["modules"]:
                self.learn.scaler.load_state_dict(self.saved["modules"].pop("scaler"))
            self._open("train_s", counted=True)
            self._loss_sum = torch.zeros((), device=self.feed.device)
            self._n_train = 0

        def after_train(self):
            self.close_phase()

        def before_validate(self):
            self._open("eval_s", counted=False)
            self._correct = torch.zeros((), dtype=torch.int64, device=self.feed.device)
            self._n_val = 0

        def after_validate(self):
            self.close_phase()

        def before_batch(self):
            (x,) = self.learn.xb
            self.learn.xb = (self.feed.inputs(x, self.generator if self.learn.training else None),)

        def after_batch(self):
            y = self.learn.yb[0]
            if self.learn.training:
                self._loss_sum += self.learn.loss.detach().float() * len(y)
                self._n_train += len(y)
                self.bar.update(1)
            else:
                self._correct += (self.learn.pred.argmax(dim=1) == y).sum()
                self._n_val += len(y)

        def after_epoch(self):
            if self.learn.epoch < self.start_epoch:  # an epoch skipped on resuming (fastai calls after_epoch still)
                return
            train_loss = float(self._loss_sum) / max(self._n_train, 1)
            diverged = non_finite(train_loss, self.learn.model)
            if diverged is not None:  # out of fastai's loop: the rest of the cycle would only train NaNs
                raise TrainingDiverged(self.learn.epoch + 1, diverged)
            val_acc = int(self._correct) / max(self._n_val, 1)
            self.val_accs.append(val_acc)
            self.bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val_acc:.3f}")
            self.rows.append({"row_type": "epoch", "epoch": self.learn.epoch + 1,
                              "train_time_s": self.ctx.clock.counted_s, "train_loss": train_loss, "val_acc": val_acc})
            self.ctx.emit(self.rows[-1])
            if self.ctx.checkpoint is not None:
                self._save()

    return RunnerClock


# ----------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WRN22Config:
    """The settings of :class:`WRN22OneCycle` (the DAWNBench recipe by default), each explained beside it; a
    value out of range is a ``ValueError``."""

    epochs: int = 24  # DAWNBench entries ran 24-35 epochs of one cycle
    lr_max: float = 3e-3  # peak learning rate of the cycle (fastai DAWNBench: 3e-3)
    weight_decay: float = 0.4  # decoupled weight decay of fastai's Adam (DAWNBench: wd=0.4)
    batch_size: int | None = 512  # DAWNBench: 512; None = the cell's batch size (ctx.batch_size)
    pct_start: float = 0.25  # fraction of the cycle spent warming up (fastai 2 default)
    div: float = 25.0  # the cycle starts at lr_max / div (fastai default)
    augment: bool = True  # random crop (pad image_size/8, reflect; 4 px at 32 px) + horizontal flip
    width: int = 6  # width factor k: groups of 16k, 32k, 64k channels (96, 192, 384)
    blocks_per_group: int = 3  # 3 -> WRN-22
    amp: bool = True  # fastai to_fp16() on CUDA (DAWNBench); ignored on CPU

    def __post_init__(self):
        _tuning.check_epochs(self.epochs)
        _tuning.check_ranges(self)
        if self.width < 1 or self.blocks_per_group < 1:
            raise ValueError("width and blocks_per_group must be >= 1, "
                             f"got {self.width} and {self.blocks_per_group}")


class WRN22OneCycle(FromScratch):
    """fastai ``Learner.fit_one_cycle`` on a WideResNet-22 from scratch (DAWNBench CIFAR-10 recipe)."""

    name = "wrn22"
    Config = WRN22Config

    @classmethod
    def network(cls, config: WRN22Config, shape) -> nn.Module:
        """The network a cell of ``shape`` trains (:meth:`build`)."""
        return cls(config).build(shape.n_classes)

    def __init__(self, config: WRN22Config | None = None):
        self.config = config or WRN22Config()

    def build(self, n_classes: int) -> WideResNet:
        """A new three-group :class:`WideResNet` (the Config's width and blocks per group) for ``n_classes``."""
        cfg = self.config
        return WideResNet(n_classes, n_groups=3, blocks_per_group=cfg.blocks_per_group, width=cfg.width)

    def run(self, ctx) -> dict:
        from tqdm.auto import tqdm

        Callback, ProgressCallback, DataLoaders, DataLoader, Learner = _import_fastai()
        cfg = self.config
        _training.seed_everything(ctx.seed)  # also seeds fastai's shuffling (Python's random)
        data = ctx.data
        device = torch.device(ctx.device)
        model = self.build(data.n_classes).to(device)
        mean, std = data.channel_stats()
        feed = _training.Feed(
            mean=mean, std=std, device=device, batch_size=cfg.batch_size or ctx.batch_size,
            amp_dtype=_training.amp_dtype(device, cfg.amp),  # fp16; the precision axis is the backbone's
            pad_px=_training.default_pad_px(data.image_size) if cfg.augment else 0, flip=cfg.augment,
        )
        loss_fn = nn.CrossEntropyLoss()
        with ctx.clock.phase("warmup_s", counted=False):
            _training.warmup_step(model, data.train, feed, loss_fn)

        dls = DataLoaders(_split_loader(DataLoader, data.train, feed.batch_size, True, device),
                          _split_loader(DataLoader, data.val, feed.batch_size, False, device),
                          device=device)
        bar = tqdm(total=cfg.epochs * len(dls.train), desc=self.name, unit="batch",
                   disable=not ctx.progress, leave=False)
        saved = ctx.checkpoint.load(epochs=cfg.epochs) if ctx.checkpoint is not None else None
        clock_cb = _runner_callback(Callback)(ctx, feed, torch.Generator().manual_seed(ctx.seed), bar, saved)
        learn = Learner(dls, model, loss_func=loss_fn, cbs=[clock_cb])  # opt_func: fastai's Adam (AdamW)
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *args, **kwargs: None  # Recorder prints each epoch otherwise
        if feed.amp_dtype is not None:
            learn.to_fp16()  # autocast + GradScaler, as amp_dtype says (fp16)
        try:
            learn.fit_one_cycle(cfg.epochs, cfg.lr_max, wd=cfg.weight_decay, pct_start=cfg.pct_start,
                                div=cfg.div, start_epoch=clock_cb.start_epoch)
        except TrainingDiverged as err:  # fastai rewrote its message: say it again, with lr_max
            raise err.at_lr(cfg.lr_max) from None
        finally:
            clock_cb.close_phase()
            bar.close()
        self.learner_ = learn
        self.model_ = learn.model

        # One-cycle ends at its last epoch: that model is the one scored.
        with ctx.clock.phase("eval_s", counted=False):
            train_acc = _training.evaluate(learn.model, data.train, feed)
        with ctx.clock.phase("predict_s", counted=False):
            test = _training.score_test(learn.model, data.test, feed)
        return {"train_acc": train_acc, "val_acc": clock_cb.val_accs[-1], **test,
                "best_epoch": cfg.epochs, "epochs": cfg.epochs, **_training.model_size(learn.model),
                "train_precision": _training.precision_label(feed.amp_dtype)}
