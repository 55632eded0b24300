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
* **The next run into the folder** (``ResultsFile``) repairs before it trusts:
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

Below this module: :mod:`benchmarks.atomic` (fsynced temporary files, renames and links)
and :mod:`benchmarks.csvscan` (the strict reader). Each run's ``metadata.json`` is written
by :mod:`benchmarks.metadata`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import platform
import stat
import sys
import threading
import warnings
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.atomic import (atomic_write_bytes, create_exclusive, create_new, not_writable, read_fd, same_file,
                               write_failure)
from benchmarks.csvscan import ROW_TYPES, Scan, describe_bad, scan_rows  # noqa: F401 (ROW_TYPES: public)

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


# ----------------------------------------------------------------------------
# The results file of a run: claimed, repaired, appended to
# ----------------------------------------------------------------------------

# Folders this process has claimed: resolved path -> [lock fd, depth]. A nested
# ResultsFile on a claimed folder shares the claim (a second flock on another
# descriptor would refuse this very process) and repairs nothing.
_CLAIMS: dict[str, list[int]] = {}
_CLAIMS_LOCK = threading.Lock()


class ResultsFile:
    """The ``results.csv`` of one out folder, opened for a run: claimed (locked), repaired, appended to.

    ``with ResultsFile(out) as results:`` checks the folder, claims it (or
    raises ``ResultsError`` naming the run that holds it), deletes temporary
    files left by a killed writer, sets aside torn or malformed bytes and the
    epoch rows of interrupted cells; ``notices`` then says, one message each,
    what was repaired (nothing is printed). The claim is released on exit.
    Nested ``with`` blocks on one folder in one process share the claim.
    """

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RESULTS_FILE
        self.notices: list[str] = []
        self._claim_key: str | None = None

    def __enter__(self) -> "ResultsFile":
        if self._claim_key is not None:
            raise RuntimeError(f"{self.path} is already open through this ResultsFile; open another one to nest.")
        self._check_folder()
        first = self._claim()
        try:
            self._check_file()
            if first:
                self._remove_stale_tmp()
                if self.path.exists():
                    self._repair()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    open = __enter__

    def close(self) -> None:
        self._release()

    def append(self, rows: list[dict]) -> None:
        """Append ``rows`` (normalised onto the schema) with one ``os.write``, then fsync."""
        _append_bytes(self.path, rows)

    def rows(self) -> list[dict[str, str]]:
        return read_rows(self.path)

    def finished_keys(self) -> set[str]:
        """Cell keys that already have a successful ``final`` row."""
        return finished_keys(self.path)

    def set_aside_cells(self, keep: set[str]) -> list[str]:
        """Move every row (final, epoch, failed) of a cell whose key is not in ``keep`` to
        :data:`SUPERSEDED_FILE`, side file first; return the cell keys moved. Under the claim only."""
        if self._claim_key is None:
            raise RuntimeError("set_aside_cells needs the folder's claim: use it inside `with ResultsFile(...)`.")
        if not self.path.exists():
            return []
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = read_fd(fd)
            scan = scan_rows(data)
            if scan.bad:
                raise ResultsError(f"{self.path} has malformed bytes; open it for a run first (it repairs them).")
            move = [(s, e, r) for s, e, r in scan.rows if r.get("cell_key", "") not in keep]
            if not move:
                return []
            kept = [(s, e, r) for s, e, r in scan.rows if r.get("cell_key", "") in keep]
            new = data[:scan.body_start] + b"".join(data[s:e] for s, e, _ in kept)
            after = scan_rows(new)
            if after.bad or [r for _, _, r in after.rows] != [r for _, _, r in kept]:
                raise ResultsError("internal error: setting rows aside would lose rows; the file was left as "
                                   "it is. Please report this, with the file.")
            side = self.out_dir / SUPERSEDED_FILE
            self._set_aside_rows(side, [data[s:e] for s, e, _ in move])
            self._rewrite(fd, new)
        finally:
            os.close(fd)
        cells = sorted({r.get("cell_key", "") for _, _, r in move})
        self.notices.append(f"{self.path}: moved {len(move)} row(s) of {len(cells)} cell(s) that this suite no "
                            f"longer has to {side}")
        return cells

    # -- checks and the claim ------------------------------------------------

    def _check_folder(self) -> None:
        out = self.out_dir
        check_out_folder(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ResultsError(write_failure(out, err, out.parent, "create the results folder")) from err
        if not_writable(out.stat(), out) or not os.access(out, os.X_OK):
            raise ResultsError(f"the results folder {out} is not writable; make it writable "
                               f"(chmod u+w {out}) or give this run another --out folder.")

    def _check_file(self) -> None:
        if self.path.is_symlink() and not self.path.exists():
            raise ResultsError(_dangling_message(self.path))
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise ResultsError(f"{self.path} is not a file; move it away or give this run another --out folder.")
        if not_writable(self.path.stat(), self.path):
            raise ResultsError(_read_only_message(self.path))

    def _claim(self) -> bool:
        key = str(self.out_dir.resolve())
        with _CLAIMS_LOCK:
            if key in _CLAIMS:
                _CLAIMS[key][1] += 1
                self._claim_key = key
                return False
            lock_path = self.out_dir / LOCK_FILE
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as err:
                raise ResultsError(write_failure(lock_path, err, self.out_dir)) from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe_holder(read_fd(fd))
                os.close(fd)
                raise ResultsError(f"{self.out_dir} is in use by another gradfree run ({holder}); "
                                   "wait for it to finish, or give this run another --out folder.") from None
            except OSError as err:
                os.close(fd)
                raise ResultsError(f"cannot lock {lock_path} ({err.strerror or err}); this file system "
                                   "has no file locks: give this run a --out folder on a local disk.") from err
            owner = {"pid": os.getpid(), "host": platform.node(), "command_line": list(sys.argv),
                     "started_at": now()}
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
            except OSError as err:  # a full disk: nothing else can be written either
                os.close(fd)
                raise ResultsError(write_failure(lock_path, err, self.out_dir)) from err
            _CLAIMS[key] = [fd, 1]
            self._claim_key = key
            return True

    def _release(self) -> None:
        key, self._claim_key = self._claim_key, None
        if key is None:
            return
        with _CLAIMS_LOCK:
            claim = _CLAIMS[key]
            claim[1] -= 1
            if claim[1] == 0:
                del _CLAIMS[key]
                with contextlib.suppress(OSError):
                    os.ftruncate(claim[0], 0)  # before unlocking: the next holder writes its own name
                os.close(claim[0])

    # -- repairs (under the claim) ---------------------------------------------

    def _remove_stale_tmp(self) -> None:
        # Under the claim no other run writes here: every temporary file is a killed writer's.
        for pattern in (f".{RESULTS_FILE}.*.tmp", f".{INTERRUPTED_FILE}.*.tmp", "runs/*/.metadata.json.*.tmp"):
            for tmp in sorted(self.out_dir.glob(pattern)):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    self.notices.append(f"removed {tmp}, a temporary file left by a killed writer")

    def _repair(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # appenders outside the claim (a Ray driver, old code) wait
            data = read_fd(fd)
            scan = scan_rows(data)
            if scan.header is not None and scan.header != list(SCHEMA):
                raise ResultsError(_foreign_message(self.path))
            if scan.header is None and not data:
                self.notices.append(f"{self.path} was empty; wrote its header")
                self._rewrite(fd, _HEADER)
                return
            orphans = _orphan_epochs(scan)
            if not scan.bad and not orphans:
                return
            moved = {s for s, _, _ in orphans}
            keep = [(s, e, r) for s, e, r in scan.rows if s not in moved]
            # Not even a complete header: every byte is set aside and the file starts again.
            new = _HEADER if scan.header is None else (
                data[:scan.body_start] + b"".join(data[s:e] for s, e, _ in keep))
            _check_rewrite(scan, keep, new)
            # The side files first: a crash before the main file changes loses nothing.
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            for start, end in scan.bad:
                side = create_new(self.out_dir / f"{RESULTS_FILE}.torn-{stamp}-at{start}", data[start:end])
                self.notices.append(f"{self.path}: set aside {end - start} malformed byte(s) at byte {start} "
                                    f"(a row torn by a crash, or garbage) in {side}; its cell runs again")
            if orphans:
                side = self.out_dir / INTERRUPTED_FILE
                self._set_aside_rows(side, [data[s:e] for s, e, _ in orphans])
                cells = sorted({r.get("cell_key", "") for _, _, r in orphans})
                self.notices.append(f"{self.path}: moved {len(orphans)} epoch row(s) of interrupted cell(s) "
                                    f"{', '.join(cells)} to {side}")
            if scan.header is not None and not orphans and len(scan.bad) == 1 and scan.bad[0][0] == len(new):
                os.ftruncate(fd, len(new))  # only a torn tail: cut it off in place
                os.fsync(fd)
            else:
                self._rewrite(fd, new)
        finally:
            os.close(fd)

    def _rewrite(self, fd: int, new: bytes) -> None:
        """Replace the file open as ``fd`` by ``new``, atomically, keeping its mode (and a symbolic link)."""
        try:
            atomic_write_bytes(self.path, new, stat.S_IMODE(os.fstat(fd).st_mode))
        except OSError as err:
            raise ResultsError(f"{write_failure(Path(os.path.realpath(self.path)), err, self.out_dir)} "
                               f"{self.path} was left as it was.") from err

    def _set_aside_rows(self, side: Path, lines: list[bytes]) -> None:
        # A crash between this append and the rewrite would set the rows aside twice: skip duplicates.
        if side.exists():
            old = side.read_bytes()
            seen = {old[s:e] for s, e, _ in scan_rows(old).rows}
            lines = [line for line in lines if line not in seen]
        _append_bytes(side, b"".join(lines))


def _orphan_epochs(scan: Scan) -> list[tuple[int, int, dict[str, str]]]:
    """Epoch rows whose (cell_key, run_id) has no final or failed row: an interrupted attempt."""
    ended = {(r.get("cell_key"), r.get("run_id")) for _, _, r in scan.rows if r.get("row_type") in ("final", "failed")}
    return [(s, e, r) for s, e, r in scan.rows
            if r.get("row_type") == "epoch" and (r.get("cell_key"), r.get("run_id")) not in ended]


def _check_rewrite(scan: Scan, keep: list, new: bytes) -> None:
    """Refuse a rewrite that would lose a final or failed row (it never should)."""
    after = scan_rows(new)
    ended = [r for _, _, r in scan.rows if r.get("row_type") != "epoch"]
    ended_after = [r for _, _, r in after.rows if r.get("row_type") != "epoch"]
    if after.bad or len(after.rows) != len(keep) or ended_after != ended:
        raise ResultsError("internal error: repairing results.csv would lose rows; the file was left as "
                           "it is. Please report this, with the file.")


def _describe_holder(blob: bytes) -> str:
    try:
        owner = json.loads(blob.decode())
        command = " ".join(owner["command_line"])
        return f"pid {owner['pid']} on {owner['host']}, since {owner['started_at']}: {command}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its pid yet"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
