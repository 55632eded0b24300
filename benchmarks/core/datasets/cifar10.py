"""CIFAR-10: 50,000 training and 10,000 test images of 32 px, 10 classes. A folder of
``train/<class>/*`` and ``test/<class>/*`` images (e.g. the JPEG copy), torchvision's
``cifar-10-batches-py``, or torchvision's download."""

from __future__ import annotations

from pathlib import Path

from benchmarks.core.datasets.sources import (Dataset, DatasetError, array_source, default_data_root,
                                              torchvision_download, train_test_folders)


def read(data_dir: Path | None):
    """(train, test) ``Source``: ``data_dir``'s ``train/`` and ``test/`` image folders when it has
    ``train/``, else torchvision's ``cifar-10-batches-py`` in ``data_dir`` (default: the data root,
    downloaded there when missing). A ``data_dir`` holding neither is a :class:`DatasetError`."""
    hint = ("Give --data-dir a folder with train/<class>/*.png|jpg and test/<class>/*, or omit "
            "--data-dir to let torchvision download CIFAR-10.")
    if data_dir is not None and (data_dir / "train").exists():
        return train_test_folders(data_dir, hint)
    from torchvision.datasets import CIFAR10

    root = data_dir or default_data_root()
    if data_dir is not None and not (root / "cifar-10-batches-py").exists():
        raise DatasetError(f"no CIFAR-10 in {root}: expected {root}/train and {root}/test, or "
                           f"{root}/cifar-10-batches-py. {hint}")
    sets = [torchvision_download(lambda download, t=t: CIFAR10(str(root), train=t, download=download),
                                 root, "CIFAR-10") for t in (True, False)]
    return tuple(array_source(s.classes, s.data, s.targets, f"torchvision:{root}") for s in sets)


DATASET = Dataset("cifar10", read, n_classes=10, full_sizes=(50_000, 10_000),
                  about="CIFAR-10 (32 px, 10 classes): a train/ + test/ folder, or torchvision's download")
