"""Each cell's test predictions, kept beside ``results.csv`` so that comparisons can be paired.

A method's ``run`` returns its predicted test labels as ``test_pred`` (``(n_test,)``, in the order
of ``ctx.data.test``); the runner pops it from the metrics and attaches, to the cell's final row,
a :class:`Predictions` under :data:`ROW_KEY` (never a column of ``results.csv``). With Ray the row
travels back to the driver with it. Only the driver writes: :class:`KeepPredictions` wraps the
results file's ``append`` and, before appending a final row, writes
``OUT/predictions/<cell_key>.npz`` atomically (:func:`benchmarks.core.atomic.atomic_write_bytes`:
a reader sees the old file or the new one, never half of one): ``pred`` and ``labels`` (int16),
``ids`` (int64: each test image's index in the dataset's test source, :class:`benchmarks.core.data.ImageSplit`)
and ``run_id`` (which run's row they belong to; a file left by another run of the cell is not
read as this row's).

:func:`read_predictions` reads them back for :mod:`benchmarks.report.verdict`.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.core.atomic import atomic_write_bytes

#: The folder, beside ``results.csv``, and the private row key the predictions travel under.
FOLDER = "predictions"
ROW_KEY = "_test_predictions"


@dataclass
class Predictions:
    """One cell's test predictions: ``pred``, ``labels`` and ``ids``, each ``(n_test,)``."""

    pred: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    run_id: str = ""

    @classmethod
    def of(cls, pred, split, run_id: str = "") -> "Predictions":
        """From a method's predicted labels for ``split`` (a :class:`benchmarks.core.data.ImageSplit`)."""
        pred = np.asarray(pred.cpu() if hasattr(pred, "cpu") else pred).reshape(-1)
        if len(pred) != len(split):
            raise ValueError(f"{len(pred)} test predictions for {len(split)} test images: a method must "
                             "predict every test image once, in the split's order.")
        return cls(pred.astype(np.int16), split.labels.numpy().astype(np.int16),
                   split.ids.numpy().astype(np.int64), run_id)

    @property
    def correct(self) -> np.ndarray:
        """``(n_test,)`` bool: whether each prediction is the label."""
        return self.pred == self.labels

    def to_bytes(self) -> bytes:
        """A compressed ``.npz`` of ``pred``, ``labels``, ``ids`` and ``run_id``."""
        buf = io.BytesIO()
        np.savez_compressed(buf, pred=self.pred, labels=self.labels, ids=self.ids, run_id=np.array(self.run_id))
        return buf.getvalue()


def path_of(out_dir: str | Path, cell_key: str) -> Path:
    """``OUT/predictions/<cell_key>.npz``."""
    return Path(out_dir) / FOLDER / f"{cell_key}.npz"


def write_predictions(out_dir: str | Path, cell_key: str, predictions: Predictions) -> Path:
    """Write ``OUT/predictions/<cell_key>.npz`` atomically; return its path."""
    path = path_of(out_dir, cell_key)
    atomic_write_bytes(path, predictions.to_bytes())
    return path


def move_aside_predictions(out_dir: str | Path, cell_key: str) -> Path | None:
    """Move ``OUT/predictions/<cell_key>.npz`` into ``OUT/predictions/superseded/`` (named by the run that wrote
    it, never over another file): the predictions of a cell whose rows were set aside to run again. Return
    where it went; None when the cell kept none."""
    path = path_of(out_dir, cell_key)
    if not path.is_file():
        return None
    old = read_predictions(out_dir, cell_key)
    folder = path.parent / "superseded"
    folder.mkdir(exist_ok=True)
    stem = f"{cell_key}.{old.run_id if old is not None and old.run_id else 'unknown-run'}"
    target, n = folder / f"{stem}.npz", 1
    while target.exists():
        target, n = folder / f"{stem}.{n}.npz", n + 1
    os.replace(path, target)  # same folder tree: atomic, the file whole in one place or the other
    return target


def read_predictions(out_dir: str | Path, cell_key: str, run_id: str | None = None) -> Predictions | None:
    """The kept predictions of ``cell_key`` (of ``run_id``'s row when given), or None when there are none,
    they belong to another run, or the file cannot be read."""
    path = path_of(out_dir, cell_key)
    try:
        with np.load(path, allow_pickle=False) as f:
            p = Predictions(f["pred"], f["labels"], f["ids"], str(f["run_id"]))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    if run_id is not None and p.run_id != run_id:
        return None
    if not len(p.pred) == len(p.labels) == len(p.ids):
        return None
    return p


class KeepPredictions:
    """A results file whose ``append`` first writes the predictions its final rows carry (driver side);
    every other attribute is the results file's."""

    def __init__(self, results, out_dir: str | Path):
        self._results, self._out_dir = results, Path(out_dir)

    def append(self, rows: list[dict]) -> None:
        """Write the predictions ``rows`` carry (taking them out of the rows), then append the rows to the
        results file."""
        for row in rows:
            predictions = row.pop(ROW_KEY, None)
            if predictions is not None:
                write_predictions(self._out_dir, row["cell_key"], predictions)
        self._results.append(rows)

    def __getattr__(self, name):
        return getattr(self._results, name)
