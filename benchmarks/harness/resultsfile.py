"""The results file of one run (:class:`ResultsFile`): the out folder claimed by a lock, the file
repaired before it is trusted, rows appended as produced. What survives what is told in
:mod:`benchmarks.harness.results`, which holds the schema, the appends and the readers."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import stat
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.core.atomic import atomic_write_bytes, create_new, not_writable, read_fd, write_failure
from benchmarks.harness.csvscan import Scan, scan_rows
from benchmarks.harness.predictions import move_aside_predictions
from benchmarks.harness.results import (_HEADER, INTERRUPTED_FILE, LOCK_FILE, RESULTS_FILE, SCHEMA, SUPERSEDED_FILE,
                                        ResultsError, _append_bytes, _dangling_message, _foreign_message,
                                        _read_only_message, check_out_folder, finished_keys, now, read_rows)

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
        """Release the folder's claim, as leaving the ``with`` block does."""
        self._release()

    def append(self, rows: list[dict]) -> None:
        """Append ``rows`` (normalised onto the schema) with one ``os.write``, then fsync."""
        _append_bytes(self.path, rows)

    def rows(self) -> list[dict[str, str]]:
        """Every well-formed row of ``results.csv`` (:func:`benchmarks.harness.results.read_rows`)."""
        return read_rows(self.path)

    def finished_keys(self) -> set[str]:
        """Cell keys that already have a successful ``final`` row."""
        return finished_keys(self.path)

    def set_aside_cells(self, keep: set[str]) -> list[str]:
        """Move every row (final, epoch, failed) of a cell whose key is not in ``keep`` to
        :data:`SUPERSEDED_FILE`, side file first; return the cell keys moved. Under the claim only."""
        return self._set_aside(lambda key: key not in keep, "that this suite no longer has")

    def set_aside_to_retime(self, keys: set[str]) -> list[str]:
        """Move every row of the cells ``keys`` (finished, but timed beside other work:
        :mod:`benchmarks.harness.loadavg`) to :data:`SUPERSEDED_FILE`, so that they run again; their kept test
        predictions go to ``predictions/superseded/``. Return the cell keys moved. Under the claim only."""
        moved = self._set_aside(lambda key: key in keys, "timed beside other work, to be timed again")
        for key in moved:
            move_aside_predictions(self.out_dir, key)
        # and the attempts they had resumed from: the new run starts whole, and its load is its own
        try:
            self._set_aside(lambda key: key in moved, "interrupted before being timed again",
                            self.out_dir / INTERRUPTED_FILE)
        except ResultsError as err:  # a torn side file: left as it is (its rows then count against the new run)
            self.notices.append(f"{self.out_dir / INTERRUPTED_FILE}: left as it is ({err})")
        return moved

    def _set_aside(self, moving, why: str, source: Path | None = None) -> list[str]:
        """Move every row of ``source`` (results.csv by default) of the cells whose key ``moving(key)`` holds
        to :data:`SUPERSEDED_FILE` (side file first, then the rewrite: a crash between them leaves each row
        once in ``source``)."""
        source = self.path if source is None else source
        if self._claim_key is None:
            raise RuntimeError("setting rows aside needs the folder's claim: use it inside `with ResultsFile(...)`.")
        if not source.exists():
            return []
        fd = os.open(source, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = read_fd(fd)
            scan = scan_rows(data)
            if scan.bad:
                raise ResultsError(f"{source} has malformed bytes; open it for a run first (it repairs them).")
            move = [(s, e, r) for s, e, r in scan.rows if moving(r.get("cell_key", ""))]
            if not move:
                return []
            kept = [(s, e, r) for s, e, r in scan.rows if not moving(r.get("cell_key", ""))]
            new = data[:scan.body_start] + b"".join(data[s:e] for s, e, _ in kept)
            after = scan_rows(new)
            if after.bad or [r for _, _, r in after.rows] != [r for _, _, r in kept]:
                raise ResultsError("internal error: setting rows aside would lose rows; the file was left as "
                                   "it is. Please report this, with the file.")
            side = self.out_dir / SUPERSEDED_FILE
            self._set_aside_rows(side, [data[s:e] for s, e, _ in move])
            self._rewrite(fd, new, source)
        finally:
            os.close(fd)
        cells = sorted({r.get("cell_key", "") for _, _, r in move})
        self.notices.append(f"{source}: moved {len(move)} row(s) of {len(cells)} cell(s) {why} to {side}")
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

    def _rewrite(self, fd: int, new: bytes, path: Path | None = None) -> None:
        """Replace the file open as ``fd`` (``path``, results.csv by default) by ``new``, atomically, keeping its
        mode (and a symbolic link)."""
        path = self.path if path is None else path
        try:
            atomic_write_bytes(path, new, stat.S_IMODE(os.fstat(fd).st_mode))
        except OSError as err:
            raise ResultsError(f"{write_failure(Path(os.path.realpath(path)), err, self.out_dir)} "
                               f"{path} was left as it was.") from err

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
