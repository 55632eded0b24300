"""Re-keying a results folder: the cell keys an older gradfree wrote, mapped onto today's.

A cell's key (:meth:`benchmarks.harness.cells.Cell.key`) is how a run knows a cell is done. When what the
key hashes changes, every finished row is orphaned: a resumed run would redo it, and a report
would count it twice. Keys changed once so far: they stopped spelling ``--data-dir`` (a trailing
slash or another path made a new key) and started naming the weights actually loaded
(``DEFAULT``, ``IMAGENET1K_V1`` and ``MobileNet_V2_Weights.IMAGENET1K_V1`` were three keys for one
network).

Each run's ``runs/<id>/metadata.json`` lists its cells, every field and the key each had. The
key of each is computed again from those fields, with the weights its rows say were loaded (the
``weights`` column), and ``cell_key`` is rewritten in ``results.csv``, ``results.interrupted.csv``
and ``results.superseded.csv`` (each through a temporary file and a rename: a crash leaves the old
file or the new one) and in the metadata, where each cell keeps its former key as ``rekeyed_from``.
Nothing else in a row changes, byte for byte. Rows whose key no metadata names are left as they
are and counted. Re-keying a folder already current changes nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.core.atomic import atomic_write_bytes, atomic_write_text
from benchmarks.harness.cells import Cell
from benchmarks.harness.results import INTERRUPTED_FILE, RESULTS_FILE, SUPERSEDED_FILE, ResultsError, read_rows
from benchmarks.harness.resultsfile import ResultsFile

_CELL_FIELDS = {f.name for f in dataclasses.fields(Cell)}


@dataclass
class Rekeyed:
    """What :func:`rekey` did (or would do, with ``dry_run``)."""

    mapping: dict[str, str] = field(default_factory=dict)  # former key -> today's key (changed keys only)
    rows_changed: int = 0
    rows_current: int = 0
    unknown_keys: set[str] = field(default_factory=set)  # keys of rows no metadata names

    def summary(self) -> str:
        """One line: rows re-keyed (and cells), rows already current, and the keys no metadata names (the
        first five)."""
        text = (f"{self.rows_changed} row(s) re-keyed ({len(self.mapping)} cell(s)), "
                f"{self.rows_current} already current")
        if self.unknown_keys:
            text += (f"; {len(self.unknown_keys)} key(s) named by no runs/*/metadata.json left as they are: "
                     f"{', '.join(sorted(self.unknown_keys)[:5])}{' ...' if len(self.unknown_keys) > 5 else ''}")
        return text


def cell_from_record(record: dict, weights_loaded: str = "") -> Cell:
    """The :class:`Cell` a metadata record describes; ``weights_loaded``: the ``weights`` column of its
    rows (what the run loaded), which replaces a spelling such as ``DEFAULT``."""
    fields = {k: v for k, v in record.items() if k in _CELL_FIELDS}
    fields["options"] = tuple(tuple(o) for o in fields.get("options", ()))
    if weights_loaded:
        fields["weights"] = weights_loaded
    return Cell(**fields)


def _metadata_files(out_dir: Path) -> list[Path]:
    return sorted((out_dir / "runs").glob("*/metadata.json"))


def key_mapping(out_dir: str | Path) -> dict[str, str]:
    """``{key in a metadata file: today's key}`` for every cell the folder's runs recorded."""
    out_dir = Path(out_dir)
    weights = {}
    for name in (RESULTS_FILE, SUPERSEDED_FILE, INTERRUPTED_FILE):
        for row in read_rows(out_dir / name):
            if row.get("weights"):
                weights.setdefault(row.get("cell_key", ""), row["weights"])
    mapping: dict[str, str] = {}
    for path in _metadata_files(out_dir):
        for record in json.loads(path.read_text()).get("config", {}).get("cells", []):
            old = record.get("cell_key")
            if old:
                _check_folder_present(record, path)
                mapping[old] = cell_from_record(record, weights.get(old, "")).key()
    return mapping


def _check_folder_present(record: dict, path: Path) -> None:
    dataset = record.get("dataset") or ""
    if dataset.startswith("imagefolder:") and not Path(dataset.split(":", 1)[1]).expanduser().is_dir():
        raise ResultsError(f"{path} names the image folder {dataset.split(':', 1)[1]}, which is not here: an "
                           "image folder's key is made from its files, so re-keying needs it. Run "
                           "`gradfree rekey` where the folder is (at the path the run used).")


def _rewrite_keys(path: Path, mapping: dict[str, str], result: Rekeyed, dry_run: bool) -> None:
    """``cell_key`` of every row of the CSV at ``path`` through ``mapping``; every other byte as it was."""
    if not path.exists():
        return
    text = path.read_bytes().decode()
    newline = "\r\n" if text.split("\n", 1)[0].endswith("\r") else "\n"
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        return
    column = records[0].index("cell_key") if "cell_key" in records[0] else None
    if column is None:
        raise ResultsError(f"{path} has no cell_key column: it is not a gradfree results file.")
    changed = 0
    for record in records[1:]:
        key = record[column] if len(record) > column else ""
        if key in mapping and mapping[key] != key:
            record[column] = mapping[key]
            changed += 1
        elif key in mapping:
            result.rows_current += 1
        else:
            result.unknown_keys.add(key)
    result.rows_changed += changed
    if changed and not dry_run:
        buf = io.StringIO()
        csv.writer(buf, lineterminator=newline).writerows(records)
        atomic_write_bytes(path, buf.getvalue().encode(), mode=path.stat().st_mode & 0o777)


def rekey(out_dir: str | Path, dry_run: bool = False) -> Rekeyed:
    """Rewrite the cell keys of the results folder ``out_dir`` as today's gradfree makes them (module
    docstring). Under the folder's claim, so no run writes meanwhile; ``dry_run`` only counts."""
    out_dir = Path(out_dir)
    if not (out_dir / RESULTS_FILE).exists():
        raise ResultsError(f"{out_dir} holds no {RESULTS_FILE}: give the results folder of a run.")
    result = Rekeyed()
    with ResultsFile(out_dir):
        mapping = key_mapping(out_dir)
        result.mapping = {old: new for old, new in mapping.items() if old != new}
        everything = {**mapping, **{new: new for new in mapping.values()}}
        for name in (RESULTS_FILE, SUPERSEDED_FILE, INTERRUPTED_FILE):
            _rewrite_keys(out_dir / name, everything, result, dry_run)
        if not dry_run and result.mapping:
            for path in _metadata_files(out_dir):
                _rewrite_metadata(path, result.mapping)
    return result


def _rewrite_metadata(path: Path, mapping: dict[str, str]) -> None:
    meta = json.loads(path.read_text())
    cells = meta.get("config", {}).get("cells", [])
    touched = False
    for record in cells:
        old = record.get("cell_key")
        if old in mapping:
            record["rekeyed_from"] = old
            record["cell_key"] = mapping[old]
            touched = True
    if touched:
        atomic_write_text(path, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
