"""What every dataset is read into, and the pieces its reader is made of: a :class:`Source` (classes,
labels, a way to fetch image i as a PIL image, decoded to 8-bit RGB by :func:`to_rgb`), the
:class:`Dataset` record each dataset file declares, image folders (scanned, split, identified by
their files) and torchvision's downloads with a clear error offline.

Loading, stratified subsets and decoding into tensors are :mod:`benchmarks.core.data`'s.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


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
# Raw sources: a dataset's read returns (train, test) Sources, each its classes,
# labels and a way to fetch image i as a PIL image.
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """What the harness needs to know about a dataset, declared once in the dataset's own file.

    ``name``: how ``--dataset`` and cell keys name it; ``read(data_dir)``: (train, test)
    :class:`Source` (``data_dir`` None: its default place or torchvision's download);
    ``n_classes`` and ``full_sizes`` (training, test images): for plans made before anything is read;
    ``about``: one line for ``--help``.
    """

    name: str
    read: Callable[[Path | None], tuple["Source", "Source"]]
    n_classes: int
    full_sizes: tuple[int, int]
    about: str = ""

    def sizes(self) -> tuple[int, int, int]:
        """(classes, training images, test images), before anything is decoded."""
        return self.n_classes, self.full_sizes[0], self.full_sizes[1]


@dataclass
class Source:
    """One split as read: class names, ``labels`` (n,) int64, ``get(i)`` giving image i as a PIL image,
    ``origin`` (where it was read from) and optionally ``where(i)``, naming image i in messages."""

    classes: list[str]
    labels: np.ndarray  # (n,) int64
    get: object  # callable(i) -> PIL.Image
    origin: str
    where: object = None  # callable(i) -> str naming image i in messages (its file), or None


def array_source(classes, data: np.ndarray, labels, origin: str) -> Source:
    """A :class:`Source` of images held in an array, ``data`` (n, H, W) or (n, H, W, C) uint8, with
    ``labels`` (n,) class indices."""
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


def file_source(classes, paths: list[Path], labels, origin: str) -> Source:
    """A :class:`Source` of image files, each read when fetched; a file PIL cannot decode, or one too large
    to, is a :class:`DatasetError` naming it."""
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


def scan_class_folders(root: Path) -> tuple[list[str], list[Path], list[int]]:
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


def split_folder(root: Path, train_fraction: float = 0.8):
    """One class-folder tree, split per class by sorted file name (first 80 % train)."""
    classes, paths, labels = scan_class_folders(root)
    labels = np.asarray(labels)
    tr, te = [], []
    for c in range(len(classes)):
        idx = np.flatnonzero(labels == c)  # already in sorted-name order
        n_train = int(round(train_fraction * len(idx)))
        tr += idx[:n_train].tolist()
        te += idx[n_train:].tolist()
    origin = str(root)
    return (file_source(classes, [paths[i] for i in tr], labels[tr], origin),
            file_source(classes, [paths[i] for i in te], labels[te], origin))


def train_test_folders(root: Path, hint: str):
    """(train, test) :class:`Source` of ``root/train/<class>/*`` and ``root/test/<class>/*``. A
    :class:`DatasetError` when either folder is missing (its message ends with ``hint``) or their class
    folders differ."""
    train, test = root / "train", root / "test"
    if not train.is_dir() or not test.is_dir():
        raise DatasetError(
            f"{root} is not an image-folder dataset: expected {train}/<class>/* and "
            f"{test}/<class>/*. {hint}"
        )
    c1, p1, l1 = scan_class_folders(train)
    c2, p2, l2 = scan_class_folders(test)
    if c1 != c2:
        raise DatasetError(f"class folders differ between {train} ({c1}) and {test} ({c2}).")
    return file_source(c1, p1, l1, str(root)), file_source(c2, p2, l2, str(root))


def default_data_root() -> Path:
    """Where torchvision's downloads go: ``$GRADFREE_DATA``, else ``~/.cache/gradfree/data``."""
    return Path(os.environ.get("GRADFREE_DATA", Path.home() / ".cache" / "gradfree" / "data"))


def torchvision_download(make, root: Path, what: str):
    """``make(download=True)``: a torchvision dataset, downloaded into ``root`` unless it is there. Any
    failure is a :class:`DatasetError` saying that ``what`` is missing and how to get it."""
    try:
        return make(download=True)
    except Exception as err:  # network errors come in many classes
        raise DatasetError(
            f"{what} is not in {root} and could not be downloaded ({err.__class__.__name__}: "
            f"{str(err)[:200]}). Connect to the internet once, or pass --data-dir pointing "
            "at a local copy (see `gradfree run --help`)."
        ) from err


