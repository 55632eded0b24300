"""``imagefolder:PATH``: any folder of class folders, the dataset a user brings without code.
``PATH/train/<class>/*`` and ``PATH/test/<class>/*``, or one ``PATH/<class>/*`` tree split 80/20 per
class by sorted file name. Its classes and sizes are counted from the folder; its cell key names
it by its files (:func:`benchmarks.core.datasets.sources.folder_identity`), not by ``PATH``."""

from __future__ import annotations

from pathlib import Path

from benchmarks.core.datasets.sources import IMAGE_SUFFIXES, Dataset, split_folder, train_test_folders

PREFIX = "imagefolder:"


def read_folder(path: Path):
    """(train, test) ``Source`` of ``path``: its ``train/`` and ``test/`` folders when it has both, else its
    one class-folder tree split 80/20 per class."""
    if (path / "train").is_dir() and (path / "test").is_dir():
        return train_test_folders(path, "")
    return split_folder(path)


class ImageFolder(Dataset):
    """The record of one folder: ``read`` ignores ``--data-dir`` (the path is in the name)."""

    def sizes(self) -> tuple[int, int, int]:
        """(classes, training images, test images) counted in the folder (0 test images for one tree,
        split by the loader)."""
        root = self.root()
        counts = {split: _count_images(root / split) for split in ("train", "test")}
        if counts["train"][0]:
            return counts["train"][0], counts["train"][1], counts["test"][1]
        n_classes, total = _count_images(root)
        return max(n_classes, 1), total, 0

    def root(self) -> Path:
        """The folder the name holds (``imagefolder:PATH``, ``~`` expanded)."""
        return Path(self.name[len(PREFIX):]).expanduser()


def record(name: str) -> ImageFolder:
    """The record of ``imagefolder:PATH``."""
    root = Path(name[len(PREFIX):]).expanduser()
    return ImageFolder(name, lambda data_dir: read_folder(root), n_classes=0, full_sizes=(0, 0),
                       about="any folder of class folders: imagefolder:PATH")


def _count_images(folder: Path) -> tuple[int, int]:
    if not folder.is_dir():
        return 0, 0
    classes = [p for p in folder.iterdir() if p.is_dir()]
    total = sum(1 for c in classes for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    return len(classes), total
