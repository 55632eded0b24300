"""The feature cache: extracted features shared between cells, in memory and optionally on disk.

On disk each entry is ``<key>.pt`` (a dict of the features tensor and the
extraction seconds), written through a fsynced temporary file and a rename,
and read back with ``torch.load(weights_only=True)``, so a cache file can hold
tensors and numbers but never run code. A damaged entry (truncated by a crash
or a full disk, or not a cache file at all) is reported with a warning naming
the file, deleted, and treated as a miss: the caller extracts again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import time
import uuid
import warnings
from pathlib import Path

import torch

from benchmarks.data import DataBundle

# Temporary files are ".<key>.<pid>@<host>.<uuid>.tmp"; one whose writer is gone is stale.
_TMP = re.compile(r"^\.(?P<key>[^.]+)\.(?P<pid>\d+)@(?P<host>.+)\.(?P<uid>[0-9a-f]{32})\.tmp$")
# A temporary file we cannot attribute to a live writer on this host (another host, an older
# gradfree) is stale once it is this old: no cache file takes an hour to write.
STALE_TMP_S = 3600.0


class FeatureCacheWarning(UserWarning):
    """A feature cache file that could not be read or written; the run goes on without it."""


class FeatureCache:
    """Extracted features shared between cells that share data, backbone, cut and precision.

    Held in memory for the life of the runner (a sweep over projections or
    numbers of random features extracts once); with ``folder`` set, also kept on
    disk so that a resumed or distributed run can reuse them. Each entry keeps
    the seconds its extraction took, which cache hits charge to the clock.
    """

    def __init__(self, folder: str | Path | None = None, max_entries: int = 6):
        self.folder = Path(folder) if folder else None
        self.max_entries = max_entries
        self._mem: dict[str, tuple[torch.Tensor, float]] = {}
        self._swept = False

    def key(self, data: DataBundle, ext, split: str, pool_size: int) -> str:
        dtype = ext.dtype_name  # torch.float32, torch.float16... or int8 (float32 out, not the same features)
        blob = f"{data.fingerprint()}|{data.image_size}|{ext.name}|{ext.cut}|{ext.weights}|{dtype}|{pool_size}|{split}"
        if split == "train" and data.info.get("val_per_class") is not None:
            # The fingerprint covers the validation and test splits and the pool, not the training subset
            # drawn from it: that draw is named by the split hash (validation and test features are shared).
            blob += f"|{data.info['split_hash']}"
        return hashlib.sha1(blob.encode()).hexdigest()[:20]

    def get(self, key: str, device: torch.device) -> tuple[torch.Tensor, float] | None:
        if key in self._mem:
            feats, seconds = self._mem[key]
            return feats.to(device), seconds
        if self.folder is None:
            return None
        self._sweep()
        blob = self._load(self.folder / f"{key}.pt")
        if blob is None:
            return None
        feats = blob[0].to(device)
        self._remember(key, feats, blob[1])
        return feats, blob[1]

    def put(self, key: str, feats: torch.Tensor, seconds: float) -> None:
        self._remember(key, feats, seconds)
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._sweep()
        path = self.folder / f"{key}.pt"
        tmp = self.folder / f".{key}.{os.getpid()}@{platform.node()}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                torch.save({"features": feats.detach().cpu(), "seconds": float(seconds)}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not isinstance(err, (OSError, RuntimeError)):  # RuntimeError: torch's writer failed
                raise
            warnings.warn(f"could not write the feature cache file {path} ({_brief(err)}); the features "
                          "stay in memory for this run only.", FeatureCacheWarning, stacklevel=2)

    def _load(self, path: Path) -> tuple[torch.Tensor, float] | None:
        try:
            # On the CPU first: a device out of memory must not pass for a damaged file.
            blob = torch.load(path, map_location="cpu", weights_only=True)
            feats, seconds = blob["features"], float(blob["seconds"])
            if not isinstance(feats, torch.Tensor):
                raise TypeError(f"its features are a {type(feats).__name__}, not a tensor")
        except FileNotFoundError:
            return None
        except Exception as err:  # truncated zip, not a pickle, an unsafe pickle, wrong contents
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            warnings.warn(f"feature cache file {path} is damaged or not a feature cache file "
                          f"({_brief(err)}); deleted it, the features are extracted again.",
                          FeatureCacheWarning, stacklevel=3)
            return None
        return feats, seconds

    def _sweep(self) -> None:
        """Delete temporary files left by killed writers, once, when the folder is first used."""
        if self._swept or self.folder is None or not self.folder.is_dir():
            return
        self._swept = True
        host, now_s = platform.node(), time.time()
        for tmp in self.folder.glob(".*.tmp"):
            match = _TMP.match(tmp.name)
            try:
                if match and match["host"] == host:
                    stale = not _alive(int(match["pid"]))
                else:
                    stale = now_s - tmp.stat().st_mtime > STALE_TMP_S
                if stale:
                    tmp.unlink()
            except FileNotFoundError:  # its writer renamed or removed it meanwhile
                pass

    def _remember(self, key, feats, seconds):
        self._mem[key] = (feats, seconds)
        while len(self._mem) > self.max_entries:
            self._mem.pop(next(iter(self._mem)))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _brief(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__
