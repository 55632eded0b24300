"""Datasets, looked up by name, behind one loader interface.

Every dataset becomes a :class:`DataBundle`: three :class:`ImageSplit` (train,
validation, test) of decoded ``uint8`` images ``(n, 3, H, W)`` resized to one
square size, with ``int64`` labels. Images are decoded once and kept as
``uint8`` (a quarter of float32 memory); methods convert batches to float and
normalise on the device with :func:`to_float`. Files of any PIL mode are decoded
to 8-bit RGB by :func:`to_rgb`, each scaled from its own range (16-bit grey by 255/65535,
not clipped to white) and transparent pixels composited onto white.

Subsets are deterministic and stratified: ``train_per_class`` images of each
class are drawn from the training set with a fixed data seed, and the
validation split is carved out of them (``val_fraction`` per class, in [0, 1);
0 leaves the validation split empty). The test set is only ever used for the final
score. For the named datasets a class short of ``train_per_class`` or
``test_per_class`` images is an error naming the class; for ``imagefolder:PATH`` (a
user's own folder) the sizes are upper bounds: such a class gives all its images and
one notice says so (``clamp_per_class`` of :func:`load_dataset` overrides either).

Names: ``cifar10``, ``stl10``, ``animals10``, ``fashion-mnist`` and
``imagefolder:PATH``. See :func:`load_dataset`.
"""

from __future__ import annotations

import gzip
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
# Debian's package `dataset-fashion-mnist` installs the original idx files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATASET_NAMES = ("cifar10", "stl10", "animals10", "fashion-mnist", "imagefolder:PATH")


class DatasetError(RuntimeError):
    """A dataset is missing or malformed; the message says where we looked and what to do."""


@dataclass
class ImageSplit:
    images: torch.Tensor  # (n, 3, H, W) uint8
    labels: torch.Tensor  # (n,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> "ImageSplit":
        return ImageSplit(self.images[index], self.labels[index])


@dataclass
class DataBundle:
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
        return len(self.classes)

    def split(self, name: str) -> ImageSplit:
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
        }

    def fingerprint(self) -> str:
        """A short hash of the labels and a sample of pixels of every split."""
        import hashlib

        h = hashlib.sha1()
        for s in (self.train, self.val, self.test):
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
# Raw sources: each returns (classes, train_items, test_items) where items are
# a list of labels plus a way to fetch image i as an HxWxC uint8 array.
# ----------------------------------------------------------------------------


@dataclass
class _Source:
    classes: list[str]
    labels: np.ndarray  # (n,) int64
    get: object  # callable(i) -> PIL.Image
    origin: str
    where: object = None  # callable(i) -> str naming image i in messages (its file), or None


def _array_source(classes, data: np.ndarray, labels, origin: str) -> _Source:
    from PIL import Image

    data = np.asarray(data)
    return _Source(list(classes), np.asarray(labels, dtype=np.int64),
                   lambda i: Image.fromarray(data[i]), origin)


# Transparent pixels are composited onto this background, so that what is hidden under
# alpha = 0 (often black, sometimes anything) does not leak into the features.
ALPHA_BACKGROUND = (255, 255, 255)


def _scale_16_to_8(x: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded to the nearest (65535 -> 255, 32896 -> 128)."""
    x = np.clip(x.astype(np.int64), 0, 65535)
    return ((x * 255 + 32767) // 65535).astype(np.uint8)


def to_rgb(img):
    """Any PIL image as 8-bit ``RGB``, every mode scaled to its own range.

    * ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` (16-bit grey: PNG, TIFF): scaled by 255/65535.
      PIL's own ``convert("RGB")`` clips them at 255, which turns almost every pixel white.
    * ``I`` (32-bit integers: 16-bit PGM, integer TIFF): as 8-bit when every value is in
      0..255, else clipped to 0..65535 and scaled as 16-bit.
    * ``F`` (floats): as [0, 1] when every value is, else as 0..255; clipped, NaN as 0.
    * ``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, and ``P``, ``L`` or ``RGB`` with a
      transparent colour: composited onto :data:`ALPHA_BACKGROUND` (white).
    * ``CMYK``, ``YCbCr``, ``HSV``, ``1``, ``L``, ``P``: PIL's conversion (Adobe's inverted
      CMYK JPEGs are undone by PIL when it reads them).
    """
    from PIL import Image

    mode = img.mode
    keyed = mode in ("P", "L", "RGB") and "transparency" in img.info  # a transparent colour (PNG tRNS)
    if mode == "RGB" and not keyed:
        return img
    if mode.startswith("I;16") or mode == "I":
        x = np.asarray(img)
        grey = x.astype(np.uint8) if mode == "I" and x.size and 0 <= x.min() and x.max() <= 255 \
            else _scale_16_to_8(x)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        x = np.nan_to_num(np.asarray(img, dtype=np.float64))
        if x.size and x.min() >= 0.0 and x.max() <= 1.0:
            x = x * 255.0
        return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or keyed:
        background = Image.new("RGBA", img.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")


def _file_source(classes, paths: list[Path], labels, origin: str) -> _Source:
    from PIL import Image, UnidentifiedImageError

    def get(i):
        try:
            img = Image.open(paths[i])
            img.load()
            return img
        except (UnidentifiedImageError, OSError) as err:
            raise DatasetError(
                f"cannot read {paths[i]} as an image ({err.__class__.__name__}). "
                "Remove or convert that file: every file under a class folder must be an image."
            ) from err

    return _Source(list(classes), np.asarray(labels, dtype=np.int64), get, origin,
                   where=lambda i: str(paths[i]))


def _scan_class_folders(root: Path) -> tuple[list[str], list[Path], list[int]]:
    """An ImageFolder tree: root/<class>/<file>. Non-image files are an error."""
    if not root.is_dir():
        raise DatasetError(
            f"image folder {root} does not exist: point it at a folder of <class name>/<image files> "
            "(imagefolder:PATH takes train/ and test/ below PATH, or one such folder split by gradfree)."
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(
            f"no class sub-folders in {root}: expected {root}/<class name>/<image files>."
        )
    paths, labels = [], []
    for c, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and not p.name.startswith("."))
        bad = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if bad:
            raise DatasetError(
                f"{bad[0]} is not an image file (suffix {bad[0].suffix or 'none'!r}; "
                f"{len(bad)} such file(s) under {root / name}). Every file under a class "
                f"folder must be an image ({', '.join(sorted(IMAGE_SUFFIXES))}): move the others out."
            )
        if not files:
            raise DatasetError(f"class folder {root / name} holds no images.")
        paths += files
        labels += [c] * len(files)
    return classes, paths, labels


def _split_folder(root: Path, train_fraction: float = 0.8):
    """One class-folder tree, split per class by sorted file name (first 80 % train)."""
    classes, paths, labels = _scan_class_folders(root)
    labels = np.asarray(labels)
    tr, te = [], []
    for c in range(len(classes)):
        idx = np.flatnonzero(labels == c)  # already in sorted-name order
        n_train = int(round(train_fraction * len(idx)))
        tr += idx[:n_train].tolist()
        te += idx[n_train:].tolist()
    origin = str(root)
    return (_file_source(classes, [paths[i] for i in tr], labels[tr], origin),
            _file_source(classes, [paths[i] for i in te], labels[te], origin))


def _train_test_folders(root: Path, hint: str):
    train, test = root / "train", root / "test"
    if not train.is_dir() or not test.is_dir():
        raise DatasetError(
            f"{root} is not an image-folder dataset: expected {train}/<class>/* and "
            f"{test}/<class>/*. {hint}"
        )
    c1, p1, l1 = _scan_class_folders(train)
    c2, p2, l2 = _scan_class_folders(test)
    if c1 != c2:
        raise DatasetError(f"class folders differ between {train} ({c1}) and {test} ({c2}).")
    return _file_source(c1, p1, l1, str(root)), _file_source(c2, p2, l2, str(root))


def default_data_root() -> Path:
    return Path(os.environ.get("GRADFREE_DATA", Path.home() / ".cache" / "gradfree" / "data"))


def _torchvision(make, root: Path, what: str):
    try:
        return make(download=True)
    except Exception as err:  # network errors come in many classes
        raise DatasetError(
            f"{what} is not in {root} and could not be downloaded ({err.__class__.__name__}: "
            f"{str(err)[:200]}). Connect to the internet once, or pass --data-dir pointing "
            "at a local copy (see `gradfree run --help`)."
        ) from err


def _cifar10(data_dir: Path | None):
    hint = ("Give --data-dir a folder with train/<class>/*.png|jpg and test/<class>/*, or omit "
            "--data-dir to let torchvision download CIFAR-10.")
    if data_dir is not None and (data_dir / "train").exists():
        return _train_test_folders(data_dir, hint)
    from torchvision.datasets import CIFAR10

    root = data_dir or default_data_root()
    if data_dir is not None and not (root / "cifar-10-batches-py").exists():
        raise DatasetError(f"no CIFAR-10 in {root}: expected {root}/train and {root}/test, or "
                           f"{root}/cifar-10-batches-py. {hint}")
    sets = [_torchvision(lambda download, t=t: CIFAR10(str(root), train=t, download=download),
                         root, "CIFAR-10") for t in (True, False)]
    return tuple(_array_source(s.classes, s.data, s.targets, f"torchvision:{root}") for s in sets)


def _stl10(data_dir: Path | None):
    from torchvision.datasets import STL10

    root = data_dir or default_data_root()
    if data_dir is not None and (data_dir / "train").exists():
        return _train_test_folders(data_dir, "")
    out = []
    for split in ("train", "test"):
        s = _torchvision(lambda download, sp=split: STL10(str(root), split=sp, download=download),
                         root, "STL-10")
        out.append(_array_source(s.classes, s.data.transpose(0, 2, 3, 1), s.labels, f"torchvision:{root}"))
    return tuple(out)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _fashion_mnist(data_dir: Path | None):
    for folder in [data_dir] if data_dir is not None else [DEBIAN_FASHION_MNIST]:
        files = {k: folder / f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz"
                 for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
        if all(p.exists() for p in files.values()):
            return (_array_source(FASHION_CLASSES, _read_idx(files["train-images"]),
                                  _read_idx(files["train-labels"]), str(folder)),
                    _array_source(FASHION_CLASSES, _read_idx(files["t10k-images"]),
                                  _read_idx(files["t10k-labels"]), str(folder)))
        if data_dir is not None:
            raise DatasetError(
                f"no Fashion-MNIST idx files in {folder}: expected {', '.join(p.name for p in files.values())}. "
                "On Debian: `apt-get install dataset-fashion-mnist` (files land in "
                f"{DEBIAN_FASHION_MNIST}); or omit --data-dir to let torchvision download it."
            )
    from torchvision.datasets import FashionMNIST

    root = default_data_root()
    sets = [_torchvision(lambda download, t=t: FashionMNIST(str(root), train=t, download=download),
                         root, f"Fashion-MNIST (looked in {DEBIAN_FASHION_MNIST} and {root})")
            for t in (True, False)]
    return tuple(_array_source(FASHION_CLASSES, s.data.numpy(), s.targets.numpy(), f"torchvision:{root}")
                 for s in sets)


def _animals10(data_dir: Path | None):
    if data_dir is None:
        raise DatasetError(
            "animals10 has no torchvision download: get the Kaggle 'Animals-10' archive, unpack it "
            "and pass --data-dir pointing at the folder of its 10 class folders (raw-img/)."
        )
    return _split_folder(data_dir)


def _imagefolder(path: Path):
    if (path / "train").is_dir() and (path / "test").is_dir():
        return _train_test_folders(path, "")
    return _split_folder(path)


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


def _decode(source: _Source, index: np.ndarray, image_size: int, desc: str, progress: bool) -> ImageSplit:
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
    return ImageSplit(images, torch.from_numpy(source.labels[index].copy()))


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    image_size: int = 96,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    val_fraction: float = 0.2,
    data_seed: int = 0,
    progress: bool = True,
    clamp_per_class: bool | None = None,
) -> DataBundle:
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
    """
    _check_sizes(train_per_class, test_per_class, val_fraction)
    if clamp_per_class is None:
        clamp_per_class = name.startswith("imagefolder:")
    data_dir = Path(data_dir).expanduser() if data_dir else None
    if data_dir is not None and not data_dir.exists():
        raise DatasetError(
            f"--data-dir {data_dir} does not exist: fix the path, or leave --data-dir out to use "
            "torchvision's copy under the default data folder (downloaded when online)."
        )
    if name == "cifar10":
        train, test = _cifar10(data_dir)
    elif name == "stl10":
        train, test = _stl10(data_dir)
    elif name == "fashion-mnist":
        train, test = _fashion_mnist(data_dir)
    elif name == "animals10":
        train, test = _animals10(data_dir)
    elif name.startswith("imagefolder:"):
        train, test = _imagefolder(Path(name.split(":", 1)[1]).expanduser())
    else:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")

    rng = np.random.default_rng(data_seed)
    tr_idx, va_idx, short_train, short_test = [], [], [], []
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
    te_idx = _stratified(test.labels, test_per_class, rng, test.classes, "test", clamp_per_class, short_test)
    for split, asked, short in (("training", train_per_class, short_train), ("test", test_per_class, short_test)):
        if short:
            _notice_once(f"{name}: {len(short)} class(es) have fewer {split} images than the {asked} per class "
                         f"asked; using all of theirs: {', '.join(short)}.")
    splits = {}
    for split, source, idx in (("train", train, tr_idx), ("val", train, va_idx), ("test", test, te_idx)):
        idx = np.sort(np.concatenate(idx)) if idx else np.zeros(0, dtype=np.int64)
        splits[split] = _decode(source, idx, image_size, f"decode {name} {split}", progress)
    return DataBundle(
        name=name,
        classes=train.classes,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        image_size=image_size,
        source=train.origin,
        info={"data_seed": data_seed, "val_fraction": val_fraction,
              "train_per_class": train_per_class, "test_per_class": test_per_class,
              "clamped_classes": {"train": short_train, "test": short_test}},
    )


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
