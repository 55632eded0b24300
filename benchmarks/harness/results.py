"""Tidy results: one fixed schema, crash-safe appends, one run per folder.

``results.csv`` holds one row per (cell, row type): ``final`` rows carry a
cell's scores, times and sizes; ``epoch`` rows carry the time-to-accuracy curve
of the backprop trainers; ``failed`` rows record a cell that raised, with its
error. Columns outside the schema go into the ``extra`` JSON column rather than
being dropped.

What survives what:

* **A crash** (SIGKILL, power loss) while appending: every append is one
  ``os.write`` of complete lines to the file opened ``O_APPEND``, then
  ``fsync``; the file is never rewritten to append. So every earlier row is
  intact and at most the last line is partial. The header is written once, when
  the file is created (a temporary file linked into place: never half a header).
* **The next run into the folder** (:class:`benchmarks.harness.resultsfile.ResultsFile`) repairs before it trusts:
  malformed bytes (a last line without newline, a row with the wrong number of
  fields, broken or unterminated quoting, a torn header) are moved, byte for
  byte, to ``results.csv.torn-<UTC time>-at<byte offset>`` beside it, and the
  file keeps only its good rows; a torn row's cell is then not done and runs
  again. Epoch rows of an interrupted cell (no final or failed row of the same
  cell and run id) are moved to ``results.interrupted.csv``, so no reader sees
  a curve twice. Temporary files left by a killed writer are deleted.
* **Two runs into one folder**: a run holds an exclusive ``flock`` on
  ``OUT/.gradfree.lock`` (which names its pid, host and command line) for its
  whole life; a second run refuses at once, naming the holder. The kernel
  releases the lock when the holder exits, however it dies.
* **A full disk**: a short or failed write is cut back off the file and raises
  ``ResultsError``; if even that fails, the partial line is repaired as above.
* **Readers** (``read_rows``, ``finished_keys``) never glue or mis-parse rows:
  malformed bytes are skipped with a ``ResultsWarning`` and the file is left as
  it is. A row appended after a torn line starts on a line of its own.

A file of another column layout (an older gradfree) is never modified: it is an
error that asks for another ``--out``. A read-only ``results.csv`` is refused. A file
with Windows line endings (CRLF: the header line ends ``\r\n``) is the same layout: rows
are appended with its own line ending, and its bytes are never rewritten to convert it.
A ``results.csv`` that is a symbolic link is written through (a repair replaces the file it
points to, the link stays); one that points nowhere is refused. An ``--out`` that is a file,
or lies below one, is refused before anything is read or written.

Below this module: :mod:`benchmarks.core.atomic` (fsynced temporary files, renames and links)
and :mod:`benchmarks.harness.csvscan` (the strict reader). Each run's ``metadata.json`` is written
by :mod:`benchmarks.harness.metadata`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import stat
import warnings
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.core.atomic import create_exclusive, not_writable, same_file, write_failure
from benchmarks.harness.csvscan import ROW_TYPES, describe_bad, scan_rows  # noqa: F401 (ROW_TYPES: public)

RESULTS_FILE = "results.csv"
INTERRUPTED_FILE = "results.interrupted.csv"
#: Rows of cells that a suite no longer has (``gradfree run --suite ... --set-aside-others``).
SUPERSEDED_FILE = "results.superseded.csv"
LOCK_FILE = ".gradfree.lock"

SCHEMA = (
    # identity
    "run_id", "cell_key", "row_type", "status", "error", "finished_at", "suite",
    # axes
    "method", "dataset", "backbone", "cut", "weights", "precision", "encoder", "projection",
    "n_components", "seed", "image_size", "n_classes", "n_train", "n_val", "n_test",
    "data_fingerprint", "device", "device_name", "threads",
    # scores (hyperparameters chosen on the validation split; test is scored once)
    "epoch", "train_loss", "train_acc", "val_acc", "test_acc", "best_epoch", "epochs",
    "alpha", "selection",
    # times, seconds (train_total_s: the counted phases only)
    "warmup_s", "extract_s", "encode_s", "project_s", "fit_s", "train_s", "predict_s", "eval_s",
    "train_total_s", "train_time_s",
    # sizes
    "feature_dim", "backbone_param_count", "backbone_bytes", "projection_bytes",
    "projection_matrix_bytes", "ridge_weight_bytes", "model_param_count", "trainable_param_count",
    "model_bytes", "peak_memory_bytes",
    # the rest
    "method_config", "extra",
)

_HEADER = (",".join(SCHEMA) + "\n").encode()
_HEADER_CRLF = _HEADER[:-1] + b"\r\n"  # the same layout, saved with Windows line endings


class ResultsError(ValueError):
    """A results folder or file that cannot be used as asked; the message says why and what to do."""


class ResultsWarning(UserWarning):
    """Malformed bytes in a results file that a reader skipped."""


# ----------------------------------------------------------------------------
# Rows: encoding, and a parser that knows the byte range of every row
# ----------------------------------------------------------------------------

def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, 8))
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def normalise_row(row: dict) -> dict[str, str]:
    """Map a row onto the schema; unknown keys go to ``extra``."""
    extra = {k: v for k, v in row.items() if k not in SCHEMA}
    if row.get("extra"):
        extra.update(row["extra"] if isinstance(row["extra"], dict) else json.loads(row["extra"]))
    out = {k: _cell(row.get(k)) for k in SCHEMA if k != "extra"}
    out["extra"] = json.dumps(extra, sort_keys=True, default=str) if extra else ""
    return out


def _encode(rows: list[dict], newline: bytes = b"\n") -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SCHEMA, lineterminator=newline.decode())
    for row in rows:
        writer.writerow(normalise_row(row))
    return buf.getvalue().encode()


# ----------------------------------------------------------------------------
# Low-level writes
# ----------------------------------------------------------------------------

def _append_bytes(path: Path, lines: bytes | list[dict]) -> None:
    """Append complete CSV lines to ``path``: one ``os.write`` to the file opened ``O_APPEND``, then fsync.

    ``lines``: rows, encoded with the file's own line ending, or lines (bytes) appended as
    they are. The file (created with its header if missing) is flocked during the write,
    so a repair that replaces it cannot lose the rows: a writer that waited on
    the replaced file sees it is gone and writes to the new one.
    """
    if not lines:
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            if path.is_symlink():  # a link that points nowhere: creating it would never succeed
                raise ResultsError(_dangling_message(path)) from None
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                create_exclusive(path, _HEADER)  # whoever links it first wins; the others append
            except OSError as err:
                raise ResultsError(write_failure(path, err)) from err
            continue
        except PermissionError as err:
            raise ResultsError(_read_only_message(path)) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not same_file(fd, path):
                continue  # replaced (repaired) while we waited: append to the new file
            st = os.fstat(fd)
            if not_writable(st, path):
                raise ResultsError(_read_only_message(path))
            newline = _newline(os.pread(fd, len(_HEADER_CRLF), 0)) if st.st_size else b"\n"
            if newline is None:
                raise ResultsError(_foreign_message(path))
            data = lines if isinstance(lines, bytes) else _encode(lines, newline)
            if st.st_size == 0:
                payload = _HEADER + data
            else:
                # After a torn last line, start a line of our own: the torn bytes stay one bad line.
                torn = os.pread(fd, 1, st.st_size - 1) != b"\n"
                payload = newline + data if torn else data
            _write_all(fd, path, payload, st.st_size)
            return
        finally:
            os.close(fd)  # also releases the flock


def _newline(head: bytes) -> bytes | None:
    """The line ending of a results file that starts with ``head``; None: another column layout."""
    return b"\n" if head.startswith(_HEADER) else b"\r\n" if head.startswith(_HEADER_CRLF) else None


def _write_all(fd: int, path: Path, data: bytes, size_before: int) -> None:
    written = 0
    try:
        while written < len(data):  # one write, unless the disk fills up in the middle
            n = os.write(fd, data[written:])
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written += n
        os.fsync(fd)
    except OSError as err:
        undone = False
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_size == size_before + written:
                os.ftruncate(fd, size_before)
                os.fsync(fd)
                undone = True
        fate = ("nothing of it was kept" if undone
                else "the partial row is set aside when the folder is next opened for a run")
        raise ResultsError(f"could not append {len(data)} bytes to {path} ({err.strerror or err}); "
                           f"{fate}. Free some disk space (or fix the file system) and run again: "
                           "finished cells are kept.") from err


def _read_only_message(path: Path) -> str:
    mode = stat.filemode(path.stat().st_mode) if path.exists() else "?"
    return (f"{path} is read-only ({mode}); gradfree only appends to it. Make it writable "
            f"(chmod u+w {path}) to add to it, or give this run another --out folder.")


def _dangling_message(path: Path) -> str:
    return (f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; create that file (empty), "
            "point the link at a results file, or give this run another --out folder.")


def check_out_folder(out: str | Path) -> None:
    """Refuse an ``--out`` that is a file, or lies below one (``ResultsError``); a missing folder is fine."""
    out = Path(out)
    for folder in (out, *out.parents):
        if folder.is_dir():
            return
        if os.path.lexists(folder):
            if folder == out:
                raise ResultsError(f"--out {out} is a file, not a folder; give a folder (it is created if missing).")
            raise ResultsError(f"cannot create the results folder {out}: {folder} is a file, not a folder; give "
                               "--out a folder path (it is created if missing).")


def _foreign_message(path: Path) -> str:
    return (f"{path} has another column layout than this gradfree version writes; "
            "write to a new --out folder (or move the old file away).")


# ----------------------------------------------------------------------------
# Module-level helpers (no folder lock: for scratch files and readers)
# ----------------------------------------------------------------------------

def append_rows(path: str | Path, rows: list[dict]) -> None:
    """Append ``rows`` to the CSV at ``path`` (created with its header if missing), crash-safely.

    One ``os.write`` of the complete lines to the file opened ``O_APPEND``, then
    fsync: a crash leaves at most a partial last line, which ``ResultsFile``
    sets aside. Raises ``ResultsError`` for a read-only file, another column
    layout or a full disk.
    """
    _append_bytes(Path(path), rows)


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Every well-formed row of the CSV at ``path``; malformed bytes are skipped with a ``ResultsWarning``.

    The file is not modified: the next run into its folder repairs it.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # below a file: no such file either
        return []
    scan = scan_rows(data)
    if scan.bad:
        warnings.warn(f"{path}: skipped {describe_bad(scan)}, e.g. a row torn by a crash; the file is "
                      "left as it is (the next run into its folder sets them aside).", ResultsWarning,
                      stacklevel=2)
    return [row for _, _, row in scan.rows]


def finished_keys(path: str | Path) -> set[str]:
    """Cell keys that already have a successful ``final`` row."""
    return {r.get("cell_key", "") for r in read_rows(path)
            if r.get("row_type") == "final" and r.get("status") == "ok"}


def now() -> str:
    """The time now, UTC, in ISO 8601 to the second (``2026-01-31T12:00:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
