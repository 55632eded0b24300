"""Tidy results: one fixed schema, crash-safe appends, one run per folder, a metadata file per run.

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
error that asks for another ``--out``. A read-only ``results.csv`` is refused.
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
import subprocess
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch

RESULTS_FILE = "results.csv"
INTERRUPTED_FILE = "results.interrupted.csv"
LOCK_FILE = ".gradfree.lock"
ROW_TYPES = ("final", "epoch", "failed")

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


def _encode(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SCHEMA, lineterminator="\n")
    for row in rows:
        writer.writerow(normalise_row(row))
    return buf.getvalue().encode()


@dataclass
class _Scan:
    """A results file parsed with the byte range of each row and of each malformed stretch."""

    header: list[str] | None  # None: not even one complete line
    body_start: int  # the byte after the header line
    rows: list[tuple[int, int, dict[str, str]]] = field(default_factory=list)  # (start, end, row)
    bad: list[tuple[int, int]] = field(default_factory=list)  # (start, end), merged, in file order


def _scan(data: bytes) -> _Scan:
    """Parse ``data`` strictly, one record at a time, resynchronising on the next line after a bad one.

    A record is good when it ends with a newline, its quoting is strict (an
    unterminated quote or text after a closing quote is an error, so an open
    quote cannot silently swallow the rows after it), it has as many fields as
    the header and its ``row_type``/``status`` are ones gradfree writes.
    """
    first = data.find(b"\n")
    if first < 0:
        return _Scan(None, 0, bad=[(0, len(data))] if data else [])
    try:
        header = next(csv.reader([data[:first + 1].decode()], strict=True))
    except (csv.Error, UnicodeDecodeError, StopIteration):
        header = []
    scan = _Scan(header, first + 1)
    starts, ends = [], []
    pos = first + 1
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        starts.append(pos)
        ends.append(end)
        pos = end
    i = 0
    while i < len(starts):
        j, row = _parse_record(data, starts, ends, i, header)
        if row is not None:
            scan.rows.append((starts[i], ends[j - 1], row))
            i = j
            continue
        if scan.bad and scan.bad[-1][1] == starts[i]:
            scan.bad[-1] = (scan.bad[-1][0], ends[i])
        else:
            scan.bad.append((starts[i], ends[i]))
        i += 1
    return scan


def _parse_record(data: bytes, starts: list[int], ends: list[int], i: int,
                  header: list[str]) -> tuple[int, dict[str, str] | None]:
    consumed = i

    def lines():
        nonlocal consumed
        for k in range(i, len(starts)):
            consumed = k + 1
            yield data[starts[k]:ends[k]].decode()

    try:
        fields = next(csv.reader(lines(), strict=True))
    except (csv.Error, UnicodeDecodeError, StopIteration):
        return i + 1, None
    if data[ends[consumed - 1] - 1:ends[consumed - 1]] != b"\n" or len(fields) != len(header):
        return i + 1, None
    row = dict(zip(header, fields))
    if row.get("row_type", "") not in (*ROW_TYPES, "") or row.get("status", "") not in ("ok", "failed", ""):
        return i + 1, None
    return consumed, row


def _describe_bad(scan: _Scan) -> str:
    where = ", ".join(f"bytes {s}-{e}" for s, e in scan.bad[:5]) + (" ..." if len(scan.bad) > 5 else "")
    return f"{sum(e - s for s, e in scan.bad)} malformed byte(s) ({where})"


# ----------------------------------------------------------------------------
# Low-level writes
# ----------------------------------------------------------------------------

def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_tmp(folder: Path, name: str, data: bytes, mode: int) -> str:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600; results are for everyone to read
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_tmp(path.parent, path.name, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a fsynced temporary file and a rename."""
    _atomic_write_bytes(Path(path), text.encode())


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists (never half-written); True if this call made it."""
    tmp = _write_tmp(path.parent, path.name, data, 0o644)
    try:
        try:
            os.link(tmp, path)  # unlike a rename, never replaces a file that is there
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if path.exists():
                return False
            os.replace(tmp, path)
        _fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _create_new(path: Path, data: bytes) -> Path:
    """Create ``path``, or ``path.1``, ``path.2``, ... when taken, holding ``data``; return its path."""
    for n in range(1000):
        target = path if n == 0 else path.with_name(f"{path.name}.{n}")
        if _create_exclusive(target, data):
            return target
    raise ResultsError(f"too many files named {path}.*; move some away.")


def _not_writable(st: os.stat_result, path: Path) -> bool:
    # Mode bits too: a file someone made read-only stays refused even for root.
    return not os.access(path, os.W_OK) or not st.st_mode & 0o222


def _same_file(fd: int, path: Path) -> bool:
    try:
        now_st = os.stat(path)
    except FileNotFoundError:
        return False
    st = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (now_st.st_ino, now_st.st_dev)


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, pos = [], 0
    while pos < size:
        chunk = os.pread(fd, size - pos, pos)
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)


def _append_bytes(path: Path, data: bytes) -> None:
    """Append complete CSV lines to ``path``: one ``os.write`` to the file opened ``O_APPEND``, then fsync.

    The file (created with its header if missing) is flocked during the write,
    so a repair that replaces it cannot lose the rows: a writer that waited on
    the replaced file sees it is gone and writes to the new one.
    """
    if not data:
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                _create_exclusive(path, _HEADER)  # whoever links it first wins; the others append
            except OSError as err:
                raise ResultsError(f"cannot create {path}: {err.strerror or err}; "
                                   "give this run a writable --out folder.") from err
            continue
        except PermissionError as err:
            raise ResultsError(_read_only_message(path)) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not _same_file(fd, path):
                continue  # replaced (repaired) while we waited: append to the new file
            st = os.fstat(fd)
            if _not_writable(st, path):
                raise ResultsError(_read_only_message(path))
            if st.st_size == 0:
                payload = _HEADER + data
            else:
                if os.pread(fd, len(_HEADER), 0) != _HEADER:
                    raise ResultsError(_foreign_message(path))
                # After a torn last line, start a line of our own: the torn bytes stay one bad line.
                torn = os.pread(fd, 1, st.st_size - 1) != b"\n"
                payload = b"\n" + data if torn else data
            _write_all(fd, path, payload, st.st_size)
            return
        finally:
            os.close(fd)  # also releases the flock


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
    _append_bytes(Path(path), _encode(rows))


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Every well-formed row of the CSV at ``path``; malformed bytes are skipped with a ``ResultsWarning``.

    The file is not modified: the next run into its folder repairs it.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    scan = _scan(data)
    if scan.bad:
        warnings.warn(f"{path}: skipped {_describe_bad(scan)}, e.g. a row torn by a crash; the file is "
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
        _append_bytes(self.path, _encode(rows))

    def rows(self) -> list[dict[str, str]]:
        return read_rows(self.path)

    def finished_keys(self) -> set[str]:
        """Cell keys that already have a successful ``final`` row."""
        return finished_keys(self.path)

    # -- checks and the claim ------------------------------------------------

    def _check_folder(self) -> None:
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise ResultsError(f"--out {out} is a file, not a folder; give a folder path "
                               "(it is created if missing).")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ResultsError(f"cannot create the results folder {out} ({err.strerror or err}); "
                               "give a --out folder in a writable place.") from err
        if _not_writable(out.stat(), out) or not os.access(out, os.X_OK):
            raise ResultsError(f"the results folder {out} is not writable; make it writable "
                               f"(chmod u+w {out}) or give this run another --out folder.")

    def _check_file(self) -> None:
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise ResultsError(f"{self.path} is not a file; move it away or give this run another --out folder.")
        if _not_writable(self.path.stat(), self.path):
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
                raise ResultsError(f"cannot open the lock file {lock_path} ({err.strerror or err}); "
                                   "give this run a writable --out folder.") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe_holder(_read_fd(fd))
                os.close(fd)
                raise ResultsError(f"{self.out_dir} is in use by another gradfree run ({holder}); "
                                   "wait for it to finish, or give this run another --out folder.") from None
            except OSError as err:
                os.close(fd)
                raise ResultsError(f"cannot lock {lock_path} ({err.strerror or err}); this file system "
                                   "has no file locks: give this run a --out folder on a local disk.") from err
            owner = {"pid": os.getpid(), "host": platform.node(), "command_line": list(sys.argv),
                     "started_at": now()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
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
            data = _read_fd(fd)
            scan = _scan(data)
            if scan.header is not None and scan.header != list(SCHEMA):
                raise ResultsError(_foreign_message(self.path))
            if scan.header is None and not data:
                self.notices.append(f"{self.path} was empty; wrote its header")
                _atomic_write_bytes(self.path, _HEADER, stat.S_IMODE(os.fstat(fd).st_mode))
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
                side = _create_new(self.out_dir / f"{RESULTS_FILE}.torn-{stamp}-at{start}", data[start:end])
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
                _atomic_write_bytes(self.path, new, stat.S_IMODE(os.fstat(fd).st_mode))
        finally:
            os.close(fd)

    def _set_aside_rows(self, side: Path, lines: list[bytes]) -> None:
        # A crash between this append and the rewrite would set the rows aside twice: skip duplicates.
        if side.exists():
            old = side.read_bytes()
            seen = {old[s:e] for s, e, _ in _scan(old).rows}
            lines = [line for line in lines if line not in seen]
        _append_bytes(side, b"".join(lines))


def _orphan_epochs(scan: _Scan) -> list[tuple[int, int, dict[str, str]]]:
    """Epoch rows whose (cell_key, run_id) has no final or failed row: an interrupted attempt."""
    ended = {(r.get("cell_key"), r.get("run_id")) for _, _, r in scan.rows if r.get("row_type") in ("final", "failed")}
    return [(s, e, r) for s, e, r in scan.rows
            if r.get("row_type") == "epoch" and (r.get("cell_key"), r.get("run_id")) not in ended]


def _check_rewrite(scan: _Scan, keep: list, new: bytes) -> None:
    """Refuse a rewrite that would lose a final or failed row (it never should)."""
    after = _scan(new)
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


# ----------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------

_PACKAGES = ("gradfree", "torch", "torchvision", "numpy", "scikit-learn", "pandas", "seaborn",
             "fastai", "lightonml", "ray")


def _git_commit() -> dict:
    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": commit or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({os.cpu_count()} logical cores)"


def environment() -> dict:
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "git": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "packages": versions,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
    }


def write_metadata(out_dir: str | Path, run_id: str, config: dict, argv: list[str] | None = None) -> Path:
    """``out_dir/runs/<run_id>/metadata.json``: environment, command line, resolved config."""
    path = Path(out_dir) / "runs" / run_id / "metadata.json"
    meta = {
        "run_id": run_id,
        "started_at": now(),
        "command_line": list(sys.argv if argv is None else argv),
        "config": config,
        **environment(),
    }
    atomic_write_text(path, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return path


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
