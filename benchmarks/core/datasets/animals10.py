"""Animals-10 (Kaggle): 26,179 photographs in 10 class folders, split 80/20 per class by sorted file
name. No download: ``--data-dir`` names the unpacked archive's ``raw-img/``."""

from __future__ import annotations

from pathlib import Path

from benchmarks.core.datasets.sources import Dataset, DatasetError, split_folder


def read(data_dir: Path | None):
    """(train, test) ``Source`` of ``data_dir``, the archive's ``raw-img/`` folder, split 80/20 per class; a
    :class:`DatasetError` without ``data_dir`` (there is no download)."""
    if data_dir is None:
        raise DatasetError(
            "animals10 has no torchvision download: get the Kaggle 'Animals-10' archive, unpack it "
            "and pass --data-dir pointing at the folder of its 10 class folders (raw-img/)."
        )
    return split_folder(data_dir)


DATASET = Dataset("animals10", read, n_classes=10, full_sizes=(20_943, 5_236),
                  about="Animals-10 (Kaggle photographs, 10 classes): --data-dir names its raw-img/ folder")
