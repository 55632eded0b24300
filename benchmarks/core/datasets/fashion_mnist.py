"""Fashion-MNIST: 60,000 training and 10,000 test greyscale images of 28 px, 10 classes. The
original idx files (Debian's ``dataset-fashion-mnist`` installs them in
:data:`DEBIAN_FASHION_MNIST`), a folder holding them, or torchvision's download."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from benchmarks.core.datasets.sources import (Dataset, DatasetError, array_source, default_data_root,
                                              torchvision_download)

# Debian's package `dataset-fashion-mnist` installs the original idx files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzipped when its name ends in ``.gz``) as a uint8 array of the shape its header gives."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read(data_dir: Path | None):
    """(train, test) ``Source`` from the four gzipped idx files in ``data_dir``; without ``data_dir``, from
    those in :data:`DEBIAN_FASHION_MNIST`, else from torchvision's download into the data root. A
    ``data_dir`` without them is a :class:`DatasetError`."""
    for folder in [data_dir] if data_dir is not None else [DEBIAN_FASHION_MNIST]:
        files = {k: folder / f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz"
                 for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
        if all(p.exists() for p in files.values()):
            return (array_source(FASHION_CLASSES, read_idx(files["train-images"]),
                                 read_idx(files["train-labels"]), str(folder)),
                    array_source(FASHION_CLASSES, read_idx(files["t10k-images"]),
                                 read_idx(files["t10k-labels"]), str(folder)))
        if data_dir is not None:
            raise DatasetError(
                f"no Fashion-MNIST idx files in {folder}: expected {', '.join(p.name for p in files.values())}. "
                "On Debian: `apt-get install dataset-fashion-mnist` (files land in "
                f"{DEBIAN_FASHION_MNIST}); or omit --data-dir to let torchvision download it."
            )
    from torchvision.datasets import FashionMNIST

    root = default_data_root()
    sets = [torchvision_download(lambda download, t=t: FashionMNIST(str(root), train=t, download=download),
                                 root, f"Fashion-MNIST (looked in {DEBIAN_FASHION_MNIST} and {root})")
            for t in (True, False)]
    return tuple(array_source(FASHION_CLASSES, s.data.numpy(), s.targets.numpy(), f"torchvision:{root}")
                 for s in sets)


DATASET = Dataset("fashion-mnist", read, n_classes=10, full_sizes=(60_000, 10_000),
                  about=f"Fashion-MNIST (28 px grey, 10 classes): Debian's idx files in {DEBIAN_FASHION_MNIST}, "
                        "a folder of them, or torchvision's download")
