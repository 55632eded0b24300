"""The report folder: what ``gradfree report`` wrote there, and replacing a report whole.

A report folder may hold a user's own files (a figure for a thesis, notes): a report touches only
what gradfree wrote itself, as listed with each file's SHA-256 in the folder's manifest
(:data:`MANIFEST`). A file the manifest names but whose content is no longer what gradfree wrote
(a user put another file in its place) is not gradfree's either. A report is replaced in an order
that leaves a whole report in the folder at every instant (``kill -9``, a full disk, a power cut),
the previous one or the new one:

1. the figures are named by their content (``acc_vs_size.<hash>.png``), so that a new figure never
   takes the name of one the previous report shows; an unchanged figure keeps its name and file;
2. the manifest is rewritten to list the previous report's files *and* the new ones, so that a run
   killed from here on leaves nothing unlisted; then the new figures are written beside the old;
3. report.md and report.html are written to fsynced temporary files, then renamed over the old ones;
4. the previous report's figures are deleted, each only if its content is still what gradfree wrote
   (still listed meanwhile, so that a run killed among them leaves the rest to the next report), and
   the manifest is rewritten to list the new report alone.

A failure before step 3's renames (a full disk) deletes what this report wrote and leaves the
previous report as it was; the error names the folder and what to do. A folder an older gradfree
reported into (no manifest) is adopted: its report.md, report.html and the figures that report links
under gradfree's figure names are gradfree's. Two reports into one folder at once are refused (a lock
on the folder itself, no lock file).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from benchmarks.core.atomic import atomic_write_bytes, atomic_write_text, create_exclusive, fsync_dir, write_tmp

MANIFEST = ".gradfree-report.json"
REPORT_FILES = ("report.md", "report.html")
#: The names an older gradfree (without a manifest) gave its figures.
_LEGACY_FIGURE = re.compile(r"(acc_vs_size|time_vs_size|pareto_acc_vs_(time|time_with_tuning|size)|time_breakdown|"
                            r"time_to_accuracy|by_cut)(__[^/\\]*)?\.png")
#: A temporary file of :func:`benchmarks.core.atomic.write_tmp` for the file named in group 1.
_TMP = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")

Owned = set[tuple[str, str]]  # (file name, SHA-256 of the content gradfree wrote)


class ReportFolderError(ValueError):
    """A report folder that cannot be written as asked; the message says why and what to do."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha(path: Path) -> str | None:
    """SHA-256 of a regular file's content; None for a missing file, a link or anything else."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        return _sha(path.read_bytes())
    except OSError:
        return None


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


class ReportFolder:
    """A folder ``gradfree report`` writes into, locked while open: ``with ReportFolder(path) as folder``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None
        self.owned: Owned = set()

    def __enter__(self) -> ReportFolder:
        if self.path.exists() and not self.path.is_dir():
            raise ReportFolderError(f"{self.path} is a file, not a folder: pass a folder as --out (it is created "
                                    "if missing).")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as err:
            raise ReportFolderError(_failure(self.path, err, started=False)) from err
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            self.__exit__()
            raise ReportFolderError(f"another gradfree report is writing into {self.path}: wait for it to end, "
                                    "or pass another --out.") from err
        except OSError:
            pass  # a file system without locks (some network ones): go on unlocked
        manifest = self._read_manifest()
        self.owned = manifest if manifest is not None else self._legacy()
        for name in REPORT_FILES:
            path = self.path / name
            if os.path.lexists(path) and (name, _file_sha(path)) not in self.owned:
                self.__exit__()
                raise ReportFolderError(f"{path} is not a report gradfree wrote, or was changed since: it is left "
                                        "as it is. Move it away, or pass another --out.")
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def _read_manifest(self) -> Owned | None:
        try:
            files = json.loads((self.path / MANIFEST).read_text())["files"]
            return {(f["name"], f["sha256"]) for f in files if _plain_name(f["name"])}
        except (OSError, ValueError, KeyError, TypeError):  # none, or not one gradfree wrote: an older report
            return None

    def _legacy(self) -> Owned:
        """What an older gradfree, which wrote no manifest, wrote here: a report.md it generated, the
        figures that report links under gradfree's figure names, and its report.html."""
        owned: Owned = set()
        md, page = self.path / "report.md", self.path / "report.html"
        text = md.read_text(errors="replace") if _file_sha(md) else ""
        if text.startswith("# gradfree report"):
            owned.add(("report.md", _file_sha(md)))
            for name in re.findall(r"\]\(([^()\s]+)\)", text):
                sha = _file_sha(self.path / name) if _plain_name(name) and _LEGACY_FIGURE.fullmatch(name) else None
                if sha:
                    owned.add((name, sha))
        if _file_sha(page) and "<title>gradfree report" in page.read_text(errors="replace")[:2000]:
            owned.add(("report.html", _file_sha(page)))
        return owned

    def figure_name(self, stem: str, png: bytes) -> str:
        """The file name of a figure: ``stem`` and its content's hash, on no file but gradfree's own copy of it."""
        sha = _sha(png)
        names = (f"{stem}.{sha[:8]}{f'-{n}' if n > 1 else ''}.png" for n in itertools.count(1))
        return next(name for name in names if not os.path.lexists(self.path / name)
                    or ((name, sha) in self.owned and _file_sha(self.path / name) == sha))

    def replace(self, figures: dict[str, bytes], reports: dict[str, bytes],
                warn: Callable[[str], None] = print) -> None:
        """Replace the previous report by ``figures`` (named by :meth:`figure_name`) and ``reports``
        (report.md, report.html), in the order of the module docstring."""
        new = {(name, _sha(data)) for name, data in {**figures, **reports}.items()}
        self._sweep_temporaries({name for name, _ in self.owned | new})
        created: list[Path] = []
        temporaries: dict[str, str] = {}
        manifest = self.path / MANIFEST
        previous = manifest.read_bytes() if _file_sha(manifest) else None
        try:
            self._write_manifest(self.owned | new)
            for name, data in figures.items():
                path = self.path / name
                if (name, _sha(data)) in self.owned and _file_sha(path) == _sha(data):
                    continue  # an unchanged figure: the same file
                if not create_exclusive(path, data):
                    raise ReportFolderError(f"{path} appeared while the report was written: run it again.")
                created.append(path)
            for name, data in reports.items():
                temporaries[name] = write_tmp(self.path, name, data, 0o644)
        except BaseException as err:
            for path in [*created, *map(Path, temporaries.values())]:
                with contextlib.suppress(OSError):
                    path.unlink()
            with contextlib.suppress(OSError):  # the listing as it was (it lists nothing that is not there)
                atomic_write_bytes(manifest, previous) if previous is not None else manifest.unlink()
            if isinstance(err, OSError):
                raise ReportFolderError(_failure(self.path, err, started=True)) from err
            raise
        try:
            for name, tmp in temporaries.items():
                os.replace(tmp, self.path / name)
        finally:
            for tmp in temporaries.values():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            fsync_dir(self.path)
        for name, sha in self.owned - new:  # still listed: a run killed among them deletes the rest
            path = self.path / name
            if _file_sha(path) == sha:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        fsync_dir(self.path)
        self.owned = new
        try:
            self._write_manifest(new)
        except OSError as err:  # it lists the deleted files too: harmless, the next report drops them
            warn(f"the report in {self.path} is whole, but its list of files could not be updated "
                 f"({err.strerror or err}).")

    def _write_manifest(self, owned: Owned) -> None:
        files = [{"name": name, "sha256": sha} for name, sha in sorted(owned)]
        atomic_write_text(self.path / MANIFEST, json.dumps({"written_by": "gradfree report", "files": files},
                                                           indent=1) + "\n")

    def _sweep_temporaries(self, names: set[str]) -> None:
        """Delete the temporary files a killed report left, of the files gradfree writes here only."""
        ours = names | set(REPORT_FILES) | {MANIFEST}
        for path in self.path.iterdir():
            match = _TMP.fullmatch(path.name)
            if match and match.group(1) in ours and path.is_file() and not path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def _failure(folder: Path, err: OSError, started: bool) -> str:
    full = err.errno in (errno.ENOSPC, errno.EDQUOT)
    what = "the disk is full" if full else (err.strerror or str(err))
    where = f" ({err.filename})" if err.filename and not full else ""
    todo = ("free some space on that disk, or pass --out on another one" if full else
            "make it writable, or pass another --out" if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            else "pass another --out")
    kept = " The previous report there is unchanged." if started else ""
    return (f"could not write the report into {folder}: {what}{where}.{kept} To go on, {todo}, then run the "
            "same command again.")


__all__ = ["MANIFEST", "REPORT_FILES", "ReportFolder", "ReportFolderError"]
