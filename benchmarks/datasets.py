"""The datasets gradfree knows, by name, and how each is read: its classes, its labels, and a way to
fetch image i as a PIL image (decoded to 8-bit RGB by :func:`to_rgb`).

Loading, stratified subsets and decoding into tensors are :mod:`benchmarks.data`'s.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
# Debian's package `dataset-fashion-mnist` installs the original idx files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATASET_NAMES = ("cifar10", "stl10", "animals10", "fashion-mnist", "imagefolder:PATH")


class DatasetError(RuntimeError):
    """A dataset is missing or malformed; the message says where we looked and what to do."""


#: Identities already computed, by folder, while :func:`remembered_identities` is in force (one
#: suite's expansion builds many cells of one folder); None: every call lists the folder again.
_IDENTITIES: dict[str, str] | None = None


@contextlib.contextmanager
def remembered_identities():
    """Within this block :func:`folder_identity` lists each folder once (a suite's cells of one folder)."""
    global _IDENTITIES
    outer = _IDENTITIES
    _IDENTITIES = {} if outer is None else outer
    try:
        yield
    finally:
        _IDENTITIES = outer


def folder_identity(root: Path) -> str:
    """A short hash naming an image folder by what it holds: every image file's path below ``root``
    and its size in bytes (hidden files and folders skipped), not by where the folder lies. The
    same folder copied, moved, linked or spelled with a trailing slash has one identity; a file
    added, removed, renamed or re-encoded changes it. A missing folder is ``missing`` (validation
    refuses it). Reading every file would cost a pass over a large folder for every cell; the decoded
    images' ``data_fingerprint``, checked against the folder's rows when a cell loads them, catches
    an edit that keeps a file's size. Listing 60,000 files takes about half a second."""
    import hashlib

    root = Path(root).expanduser().resolve()
    if _IDENTITIES is not None and str(root) in _IDENTITIES:
        return _IDENTITIES[str(root)]
    if not root.is_dir():
        return "missing"
    h = hashlib.sha1()
    for dirpath, _, filenames in _walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                h.update(f"{rel}/{name}\0{os.path.getsize(os.path.join(dirpath, name))}\n".encode())
    identity = h.hexdigest()[:16]
    if _IDENTITIES is not None:
        _IDENTITIES[str(root)] = identity
    return identity


def _walk(root: Path):
    """``os.walk`` in sorted order, hidden folders skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield dirpath, dirnames, filenames


# ----------------------------------------------------------------------------
# Raw sources: each returns (classes, train_items, test_items) where items are
# a list of labels plus a way to fetch image i as an HxWxC uint8 array.
# ----------------------------------------------------------------------------


@dataclass
class Source:
    classes: list[str]
    labels: np.ndarray  # (n,) int64
    get: object  # callable(i) -> PIL.Image
    origin: str
    where: object = None  # callable(i) -> str naming image i in messages (its file), or None


def _array_source(classes, data: np.ndarray, labels, origin: str) -> Source:
    from PIL import Image

    data = np.asarray(data)
    return Source(list(classes), np.asarray(labels, dtype=np.int64),
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


def _file_source(classes, paths: list[Path], labels, origin: str) -> Source:
    from PIL import Image, UnidentifiedImageError

    def get(i):
        try:
            img = Image.open(paths[i])
            img.load()
            return img
        except Image.DecompressionBombError as err:  # its header declares more pixels than PIL will decode
            raise DatasetError(
                f"{paths[i]} is too large to decode: {err} Resize it (gradfree scales every image to "
                "--image-size anyway) or remove it."
            ) from err
        except (UnidentifiedImageError, OSError) as err:
            raise DatasetError(
                f"cannot read {paths[i]} as an image ({err.__class__.__name__}). "
                "Remove or convert that file: every file under a class folder must be an image."
            ) from err

    return Source(list(classes), np.asarray(labels, dtype=np.int64), get, origin,
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


#: name -> reader(data_dir) -> (train Source, test Source); ``imagefolder:PATH`` is read by path.
READERS = {"cifar10": _cifar10, "stl10": _stl10, "fashion-mnist": _fashion_mnist, "animals10": _animals10}
#: Full (training, test) sizes and numbers of classes, for plans made before anything is read.
FULL_SIZES = {"cifar10": (50000, 10000), "stl10": (5000, 8000), "fashion-mnist": (60000, 10000),
              "animals10": (20943, 5236)}
N_CLASSES = {"cifar10": 10, "stl10": 10, "fashion-mnist": 10, "animals10": 10}


def read_dataset(name: str, data_dir: Path | None):
    """(train, test) :class:`Source` of dataset ``name``."""
    if name.startswith("imagefolder:"):
        return _imagefolder(Path(name.split(":", 1)[1]).expanduser())
    if name not in READERS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    return READERS[name](data_dir)
