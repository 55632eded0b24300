"""STL-10's labelled part: 5,000 training and 8,000 test images of 96 px, 10 classes (the seeds'
dataset). A ``train/`` + ``test/`` image folder, or torchvision's download."""

from __future__ import annotations

from pathlib import Path

from benchmarks.core.datasets.sources import (Dataset, array_source, default_data_root, torchvision_download,
                                              train_test_folders)


def read(data_dir: Path | None):
    """(train, test) ``Source``: ``data_dir``'s ``train/`` and ``test/`` image folders when it has
    ``train/``, else torchvision's STL-10 labelled splits in ``data_dir`` (default: the data root),
    downloaded there when missing."""
    from torchvision.datasets import STL10

    root = data_dir or default_data_root()
    if data_dir is not None and (data_dir / "train").exists():
        return train_test_folders(data_dir, "")
    out = []
    for split in ("train", "test"):
        s = torchvision_download(lambda download, sp=split: STL10(str(root), split=sp, download=download),
                                 root, "STL-10")
        out.append(array_source(s.classes, s.data.transpose(0, 2, 3, 1), s.labels, f"torchvision:{root}"))
    return tuple(out)


DATASET = Dataset("stl10", read, n_classes=10, full_sizes=(5_000, 8_000),
                  about="STL-10 (96 px, 10 classes, labelled part): a train/ + test/ folder, or torchvision's")
