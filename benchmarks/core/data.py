"""Loading a dataset by name: stratified subsets, decoded once, behind one interface.

Every dataset becomes a :class:`DataBundle`: three :class:`ImageSplit` (train,
validation, test) of decoded ``uint8`` images ``(n, 3, H, W)`` resized to one
square size, with ``int64`` labels. Images are decoded once and kept as
``uint8`` (a quarter of float32 memory); methods convert batches to float and
normalise on the device with :func:`to_float`. How each dataset is read is
:mod:`benchmarks.core.datasets`'s; files of any PIL mode are decoded
to 8-bit RGB by its :func:`to_rgb`, each scaled from its own range (16-bit grey by 255/65535,
not clipped to white) and transparent pixels composited onto white.

Subsets are deterministic and stratified: ``train_per_class`` images of each
class are drawn from the training set with a fixed data seed (each split keeps the
indices of its images in their source as ``ids``: kept test predictions name their
images by them), and the
validation split is carved out of them (``val_fraction`` per class, in [0, 1);
0 leaves the validation split empty). The test set is only ever used for the final
score. For the named datasets a class short of ``train_per_class`` or
``test_per_class`` images is an error naming the class; for ``imagefolder:PATH`` (a
user's own folder) the sizes are upper bounds: such a class gives all its images and
one notice says so (``clamp_per_class`` of :func:`load_dataset` overrides either).

Names: ``cifar10``, ``stl10``, ``animals10``, ``fashion-mnist`` and
``imagefolder:PATH`` (:data:`benchmarks.core.datasets.DATASETS`). See :func:`load_dataset`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.core.datasets import (  # noqa: F401 (re-exported: the data API's names)
    IMAGE_SUFFIXES, DatasetError, Source, read_dataset, to_rgb)
from benchmarks.core.datasets.fashion_mnist import DEBIAN_FASHION_MNIST  # noqa: F401 (re-exported)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageSplit:
    """One split's images, ``images`` (n, 3, H, W) uint8, with their ``labels`` and ``ids``."""

    images: torch.Tensor  # (n, 3, H, W) uint8
    labels: torch.Tensor  # (n,) int64
    #: (n,) int64: each image's index in the dataset's source it was drawn from (the training source
    #: for train and validation, the test source for test), so that kept predictions name their images;
    #: ``arange(n)`` when not given.
    ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.ids is None:
            self.ids = torch.arange(len(self), dtype=torch.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> "ImageSplit":
        """The images at ``index``, with their labels and ids."""
        return ImageSplit(self.images[index], self.labels[index], self.ids[index])


@dataclass
class DataBundle:
    """A loaded dataset: class names, the train, validation and test :class:`ImageSplit` at ``image_size``
    px, ``source`` (where it was read from), the ``mean`` and ``std`` inputs are normalised with, and
    ``info`` (how the subsets were drawn)."""

    name: str
    classes: list[str]
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    image_size: int
    source: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    info: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def split(self, name: str) -> ImageSplit:
        """The split called ``name`` (``train``, ``val`` or ``test``); another name is a ``ValueError``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; expected train, val or test")
        return getattr(self, name)

    def describe(self) -> dict:
        """Columns that prove two methods saw the same data."""
        return {
            "dataset": self.name,
            "image_size": self.image_size,
            "n_classes": self.n_classes,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "data_fingerprint": self.fingerprint(),
            # (not schema columns: they go to the row's extra) which images, exactly, and how drawn
            "split_hash": self.info.get("split_hash"),
            **({"val_per_class": self.info["val_per_class"], "subset_seed": self.info["subset_seed"]}
               if self.info.get("val_per_class") is not None else {}),
        }

    def fingerprint(self) -> str:
        """A short hash of the labels and a sample of pixels of every split. With a fixed validation
        split (``info["val_per_class"]``), of the validation and test splits and the training pool's
        size instead: every training-set size and seed drawn from one pool shares it."""
        import hashlib

        h = hashlib.sha1()
        splits = (self.train, self.val, self.test)
        if self.info.get("val_per_class") is not None:
            splits = (self.val, self.test)
            h.update(f"pool {self.info.get('pool_size')}".encode())
        for s in splits:
            h.update(s.labels.numpy().tobytes())
            if len(s) == 0:  # an empty split (val_fraction 0): no pixels to sample
                continue
            flat = s.images.reshape(len(s), -1)
            h.update(flat[:, :: max(1, flat.shape[1] // 64)].numpy().tobytes())
        return h.hexdigest()[:12]

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images, in [0, 1] units."""
        x = self.train.images.float().div_(255)
        return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())


def to_float(
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 ``(n, 3, H, W)`` -> normalised float ``(n, 3, H, W)`` on ``device``."""
    x = images.to(device, non_blocking=True).to(torch.float32).div_(255)
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s).to(dtype)


# ----------------------------------------------------------------------------


def _stratified(labels: np.ndarray, per_class: int | None, rng: np.random.Generator, classes: list[str],
                split: str, clamp: bool, short: list[str]) -> list[np.ndarray]:
    """Per class: a seeded permutation of its indices, cut to ``per_class``.

    A class with fewer images than ``per_class`` is an error, or with ``clamp`` keeps all of
    them and is listed in ``short`` (as ``'name' (n)``) for the caller's notice.
    """
    option = "--train-per-class" if split == "training" else "--test-per-class"
    out = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if per_class is not None and per_class > len(idx):
            if not clamp:
                raise DatasetError(
                    f"asked for {per_class} {split} images of class {classes[c]!r} but it has only "
                    f"{len(idx)}; lower {option} to at most {len(idx)}."
                )
            short.append(f"{classes[c]!r} ({len(idx)})")
        out.append(idx if per_class is None else idx[:per_class])
    return out


def _check_sizes(train_per_class, test_per_class, val_fraction) -> None:
    """The loader's arguments, checked before any file is read."""
    for option, value in (("--train-per-class", train_per_class), ("--test-per-class", test_per_class)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or value < 1):
            raise DatasetError(f"{option} {value!r}: expected a whole number of images per class, "
                               "at least 1 (or all of them: leave it out / 0 on the command line).")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"--val-fraction {val_fraction!r}: expected a fraction in [0, 1) of each "
                           "class's training images (0: no validation split).")


# Notices already printed in this process: a suite loads the same folder for every cell.
_NOTICES: set[str] = set()


def _notice_once(message: str) -> None:
    if message not in _NOTICES:
        _NOTICES.add(message)
        print(message, file=sys.stderr, flush=True)


def _decode(source: Source, index: np.ndarray, image_size: int, desc: str, progress: bool) -> ImageSplit:
    from PIL import Image
    from tqdm.auto import tqdm

    images = torch.empty((len(index), 3, image_size, image_size), dtype=torch.uint8)
    for j, i in enumerate(tqdm(index, desc=desc, unit="img", disable=not progress, leave=False)):
        try:
            img = to_rgb(source.get(int(i)))
        except ValueError as err:  # a mode PIL cannot convert to RGB (e.g. LAB)
            where = source.where(int(i)) if source.where else f"image {int(i)} of {source.origin}"
            raise DatasetError(f"cannot convert {where} to RGB ({err}); convert it to an 8-bit RGB or "
                               "grey image, or remove it.") from err
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.BILINEAR)
        images[j] = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    return ImageSplit(images, torch.from_numpy(source.labels[index].copy()),
                      torch.from_numpy(np.asarray(index, dtype=np.int64)))


def open_dataset(name: str, data_dir: str | Path | None = None) -> tuple[Source, Source]:
    """The (train, test) sources of ``name``, nothing decoded yet: a local copy is listed, a missing
    one downloaded by torchvision (when online). :class:`DatasetError`, naming the fix, when neither
    works: the cheap check a run makes for every dataset before its first cell starts."""
    data_dir = Path(data_dir).expanduser() if data_dir else None
    if data_dir is not None and not data_dir.exists():
        raise DatasetError(
            f"--data-dir {data_dir} does not exist: fix the path, or leave --data-dir out to use "
            "torchvision's copy under the default data folder (downloaded when online)."
        )
    return read_dataset(name, data_dir)


def load_dataset(name: str, data_dir: str | Path | None = None, image_size: int = 96,
                 train_per_class: int | None = None, test_per_class: int | None = None, val_fraction: float = 0.2,
                 data_seed: int = 0, progress: bool = True, clamp_per_class: bool | None = None,
                 val_per_class: int | None = None, subset_seed: int = 0) -> DataBundle:
    """Load ``name`` as a :class:`DataBundle` of decoded, resized uint8 images.

    ``train_per_class`` images per class are drawn from the training set (all when
    ``None``); ``val_fraction`` (in [0, 1); 0: an empty validation split) of each class's
    draw becomes the validation split. ``test_per_class`` likewise for the test set.
    Sizes must be ``None`` or at least 1, else :class:`DatasetError`.

    ``clamp_per_class``: what a class with fewer images than asked does. ``False``: a
    :class:`DatasetError` naming the class. ``True``: it gives all its images (the classes
    then differ in size) and one notice on stderr lists such classes. ``None`` (default):
    ``True`` for ``imagefolder:PATH`` (a user's own folder: the sizes are upper bounds, so
    the defaults of 500 / 200 work on a folder of 100 images per class), ``False`` for the
    named datasets, whose sizes are known.

    ``val_per_class`` (the learning-curve protocol): a *fixed* validation split of that many images
    per class is held out first from the whole training pool (drawn with ``data_seed``: the same at
    every training-set size and seed), and ``val_fraction`` is unused; ``train_per_class`` images
    per class are then drawn from the rest with ``subset_seed`` (so seeds resample the training
    subset), or all of the rest when ``train_per_class`` is None. The bundle's fingerprint then
    covers the validation and test splits and the pool, not the drawn subset, so every size and
    seed of one dataset shares it; ``info["split_hash"]`` names the exact three index sets.
    """
    _check_sizes(train_per_class, test_per_class, val_fraction)
    if clamp_per_class is None:
        clamp_per_class = name.startswith("imagefolder:")
    train, test = open_dataset(name, data_dir)

    rng = np.random.default_rng(data_seed)
    short_train, short_test = [], []
    if val_per_class is not None:
        tr_idx, va_idx = _fixed_validation(train, val_per_class, train_per_class, rng, subset_seed, clamp_per_class,
                                           short_train)
    else:
        tr_idx, va_idx = _fraction_validation(train, train_per_class, val_fraction, rng, clamp_per_class, short_train)
    te_idx = _stratified(test.labels, test_per_class, rng, test.classes, "test", clamp_per_class, short_test)
    for split, asked, short in (("training", train_per_class, short_train), ("test", test_per_class, short_test)):
        if short:
            _notice_once(f"{name}: {len(short)} class(es) have fewer {split} images than the {asked} per class "
                         f"asked; using all of theirs: {', '.join(short)}.")
    splits, ids = _decode_splits(name, {"train": (train, tr_idx), "val": (train, va_idx), "test": (test, te_idx)},
                                 image_size, progress)
    return DataBundle(
        name=name, classes=train.classes, train=splits["train"], val=splits["val"], test=splits["test"],
        image_size=image_size, source=train.origin,
        info={"data_seed": data_seed, "val_fraction": val_fraction,
              "train_per_class": train_per_class, "test_per_class": test_per_class,
              "clamped_classes": {"train": short_train, "test": short_test},
              "val_per_class": val_per_class, "subset_seed": subset_seed if val_per_class is not None else None,
              "pool_size": len(train.labels), "split_hash": _split_hash(ids)},
    )


def _decode_splits(name: str, chosen: dict, image_size: int, progress: bool) -> tuple[dict, dict]:
    """Each split's images decoded (``chosen``: split -> (source, per-class index lists)), and its sorted
    indices into its source: (splits, ids)."""
    splits, ids = {}, {}
    for split, (source, idx) in chosen.items():
        idx = np.sort(np.concatenate(idx)) if idx else np.zeros(0, dtype=np.int64)
        ids[split] = idx
        splits[split] = _decode(source, idx, image_size, f"decode {name} {split}", progress)
    return splits, ids


def _fraction_validation(train, train_per_class, val_fraction: float, rng, clamp_per_class: bool,
                         short_train: list) -> tuple[list, list]:
    """(training, validation) indices per class: ``val_fraction`` of each class's draw held out."""
    tr_idx, va_idx = [], []
    for idx in _stratified(train.labels, train_per_class, rng, train.classes, "training", clamp_per_class,
                           short_train):
        n_val = int(round(val_fraction * len(idx)))
        if val_fraction > 0 and (n_val == 0 or n_val == len(idx)):
            label = train.classes[int(train.labels[idx[0]])]
            raise DatasetError(
                f"a validation fraction of {val_fraction} of the {len(idx)} training images of class "
                f"{label!r} leaves an empty split; use more images per class or another --val-fraction."
            )
        va_idx.append(idx[:n_val])
        tr_idx.append(idx[n_val:])
    return tr_idx, va_idx


def _split_hash(ids: dict[str, np.ndarray]) -> str:
    """A short hash of the train, validation and test index sets (indices into each split's source)."""
    import hashlib

    h = hashlib.sha1()
    for split in ("train", "val", "test"):
        h.update(split.encode() + np.asarray(ids[split], dtype=np.int64).tobytes())
    return h.hexdigest()[:12]


def _fixed_validation(train: Source, val_per_class: int, train_per_class: int | None, rng: np.random.Generator,
                      subset_seed: int, clamp: bool, short: list[str]) -> tuple[list, list]:
    """Per class: the first ``val_per_class`` of a ``rng`` permutation (the fixed validation split), then
    ``train_per_class`` of the rest drawn with ``subset_seed`` (all of the rest when None)."""
    if isinstance(val_per_class, bool) or not isinstance(val_per_class, (int, np.integer)) or val_per_class < 1:
        raise DatasetError(f"--val-per-class {val_per_class!r}: expected a whole number of images per class, "
                           "at least 1.")
    draw = np.random.default_rng(subset_seed)
    tr_idx, va_idx = [], []
    for idx in _stratified(train.labels, None, rng, train.classes, "training", clamp, short):
        label = train.classes[int(train.labels[idx[0]])]
        if val_per_class >= len(idx):
            raise DatasetError(f"--val-per-class {val_per_class} leaves no training image of class {label!r}, "
                               f"which has {len(idx)}; hold out fewer.")
        pool = idx[val_per_class:]
        if train_per_class is not None and train_per_class > len(pool):
            if not clamp:
                raise DatasetError(f"asked for {train_per_class} training images of class {label!r} besides its "
                                   f"{val_per_class} validation images, but it has {len(idx)}; lower "
                                   f"--train-per-class to at most {len(pool)}.")
            short.append(f"{label!r} ({len(pool)})")
        va_idx.append(idx[:val_per_class])
        tr_idx.append(pool if train_per_class is None else draw.permutation(pool)[:train_per_class])
    return tr_idx, va_idx


def synthetic_bundle(n_per_class: int = 20, image_size: int = 32, n_classes: int = 2, seed: int = 0) -> DataBundle:
    """An easy synthetic task for tests: class c is a bright square in quadrant c."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        x = torch.randint(0, 60, (n * n_classes, 3, image_size, image_size), generator=g, dtype=torch.uint8)
        y = torch.arange(n_classes).repeat_interleave(n)
        h = image_size // 2
        for i, c in enumerate(y.tolist()):
            r, q = divmod(c % 4, 2)
            x[i, c % 3, r * h:(r + 1) * h, q * h:(q + 1) * h] += 180
        return ImageSplit(x, y)

    return DataBundle("synthetic", [f"c{i}" for i in range(n_classes)], make(n_per_class),
                      make(max(2, n_per_class // 4)), make(max(2, n_per_class // 2)), image_size, "synthetic")
