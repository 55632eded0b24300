"""The registry of datasets: one record (:class:`Dataset`) per dataset, each declared in its own file.

A new dataset is a file here declaring ``DATASET = Dataset(name, read, n_classes, full_sizes)`` and one
line in :data:`DATASETS`; from outside the package, an entry point in the group ``gradfree.datasets``
(or ``--dataset module:NAME`` / ``path/to/file.py:NAME``) naming such a record. ``imagefolder:PATH``
takes any folder of class folders. Nothing else in gradfree keeps a list of dataset names.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.core.datasets import animals10, cifar10, fashion_mnist, imagefolder, stl10
from benchmarks.core.datasets.sources import (IMAGE_SUFFIXES, Dataset, DatasetError, Source, folder_identity,
                                              remembered_identities, to_rgb)
from benchmarks.core.plugins import Group, PluginError

__all__ = ["DATASETS", "IMAGE_SUFFIXES", "IMAGEFOLDER", "PLUGINS", "Dataset", "DatasetError", "Source",
           "dataset_names", "folder_identity", "get_dataset", "read_dataset", "remembered_identities", "to_rgb"]

#: name -> record, the built-in datasets.
DATASETS: dict[str, Dataset] = {d.DATASET.name: d.DATASET for d in (cifar10, stl10, animals10, fashion_mnist)}
IMAGEFOLDER = imagefolder.PREFIX


def _check(obj, where: str) -> Dataset:
    if not (callable(getattr(obj, "read", None)) and isinstance(getattr(obj, "n_classes", None), int)
            and callable(getattr(obj, "sizes", None)) and isinstance(getattr(obj, "name", None), str)):
        raise PluginError(f"{where} is not a gradfree dataset: give a benchmarks.core.datasets.Dataset record "
                          "(name, read(data_dir) -> (train, test) Source, n_classes, full_sizes).")
    return obj


#: Datasets from outside the package: ``gradfree.datasets`` entry points, ``module:NAME``, ``file.py:NAME``.
PLUGINS = Group("gradfree.datasets", "--dataset", _check)


def dataset_names() -> list[str]:
    """The names ``--dataset`` takes: the built-ins, the installed plugins, ``imagefolder:PATH``."""
    return [*DATASETS, *PLUGINS.names(), f"{IMAGEFOLDER}PATH"]


def get_dataset(name: str) -> Dataset:
    """The record of dataset ``name`` (a :class:`DatasetError` naming the choices for an unknown one)."""
    if name.startswith(IMAGEFOLDER) and name not in DATASETS:
        return imagefolder.record(name)
    if (found := PLUGINS.find(name, DATASETS, DatasetError)) is not None:
        return found
    raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}, or name a "
                       "record: module:NAME or path/to/file.py:NAME.")


def read_dataset(name: str, data_dir: Path | None):
    """(train, test) :class:`Source` of dataset ``name``; a :class:`DatasetError` when its reader (a
    plugin's, say) gives anything else, or sources whose classes differ."""
    got = get_dataset(name).read(data_dir)
    if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(s, Source) for s in got)):
        raise DatasetError(f"dataset {name!r}: its reader returned {type(got).__name__}, not a (train, test) pair of "
                           "benchmarks.core.datasets.Source; fix the dataset's read().")
    train, test = got
    if list(train.classes) != list(test.classes) or len(train.labels) == 0:
        raise DatasetError(f"dataset {name!r}: its training and test sources must hold images of the same classes "
                           f"(got {len(train.classes)} and {len(test.classes)} classes, {len(train.labels)} "
                           "training images).")
    return got
