"""The feature cache: extracted features shared between cells, in memory and optionally on disk.

On disk each entry is ``<key>.pt``: a dict of the features tensor, the extraction seconds and
the key it was written for, written through a fsynced temporary file
(``.gradfree-feat-<key>.<pid>@<host>.<uuid>.tmp``) and a rename, and read back with
``torch.load(weights_only=True)``, so a cache file can hold tensors and numbers but never run
code. An entry is used only if it is what its key must be: written for this key, and
``(n_images, n_features)`` of the extraction's dtype. Anything else (truncated by a crash or
a full disk, not a cache file, another entry's features, an older gradfree's entry) is
reported with a warning naming the file, deleted, and treated as a miss: the caller extracts
again. Only gradfree's own temporary files are ever swept from the folder.

A stop request (Ctrl-C, or SIGTERM as :mod:`benchmarks.cli` raises it) while an entry is
read or written stops the run: torch's reader and writer turn a ``KeyboardInterrupt`` raised
inside them into a ``RuntimeError``, which is unwrapped, never taken for a damaged file or
a failed write. A half-written temporary file is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import re
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.core.data import DataBundle

#: Every temporary file of the cache starts so: no other file in the folder is ever swept.
TMP_PREFIX = ".gradfree-feat-"
# ".gradfree-feat-<key>.<pid>@<host>.<uuid>.tmp"; one whose writer is gone is stale.
_TMP = re.compile(rf"^{re.escape(TMP_PREFIX)}(?P<key>.+?)\.(?P<pid>\d+)@(?P<host>.+)\.(?P<uid>[0-9a-f]{{32}})\.tmp$")
# A temporary file we cannot attribute to a live writer on this host (another host) is stale
# once it is this old: no cache file takes an hour to write.
STALE_TMP_S = 3600.0


class FeatureCacheWarning(UserWarning):
    """A feature cache file that could not be read or written; the run goes on without it."""


@dataclass(frozen=True)
class CacheKey:
    """An entry's name and what its features must be: ``shape`` (n_images, n_features) of ``dtype``.

    ``n_features`` is None when the extractor's output size could not be worked out ahead.
    """

    name: str
    shape: tuple[int, int | None]
    dtype: torch.dtype

    def __str__(self) -> str:
        return self.name


class FeatureCache:
    """Extracted features shared between cells that share data, backbone, cut and precision.

    Held in memory for the life of the runner (a sweep over projections or
    numbers of random features extracts once); with ``folder`` set, also kept on
    disk so that a resumed or distributed run can reuse them. Each entry keeps
    the seconds its extraction took, which cache hits charge to the clock.
    Keys are :class:`CacheKey` (from :meth:`key`: entries are checked against
    it) or plain names (entries are checked against the name only).
    """

    def __init__(self, folder: str | Path | None = None, max_entries: int = 6):
        self.folder = Path(folder) if folder else None
        self.max_entries = max_entries
        self._mem: dict[str, tuple[torch.Tensor, float]] = {}
        self._swept = False

    def key(self, data: DataBundle, ext, split: str, pool_size: int) -> CacheKey:
        """The entry of ``split``'s features through ``ext``: its name, and the shape and dtype they have."""
        n_images = int(data.split(split).images.shape[0])
        # Only entries read from disk are checked against it: no dry run for a cache in memory only.
        n_features = _n_features(ext, data.image_size, pool_size) if self.folder is not None else None
        return CacheKey(self._name(data, ext, split, pool_size), (n_images, n_features), _out_dtype(ext.dtype_name))

    def _name(self, data: DataBundle, ext, split: str, pool_size: int) -> str:
        dtype = ext.dtype_name  # torch.float32, torch.float16... or int8 (float32 out, not the same features)
        blob = f"{data.fingerprint()}|{data.image_size}|{ext.name}|{ext.cut}|{ext.weights}|{dtype}|{pool_size}|{split}"
        if split == "train" and data.info.get("val_per_class") is not None:
            # The fingerprint covers the validation and test splits and the pool, not the training subset
            # drawn from it: that draw is named by the split hash (validation and test features are shared).
            blob += f"|{data.info['split_hash']}"
        return hashlib.sha1(blob.encode()).hexdigest()[:20]

    def get(self, key: CacheKey | str, device: torch.device) -> tuple[torch.Tensor, float] | None:
        """The features under ``key``, on ``device``, and the seconds their extraction took; None when not
        cached. Memory first, then the folder: a damaged file, or one not matching ``key``, is deleted with a
        :class:`FeatureCacheWarning`."""
        name = str(key)
        if name in self._mem:
            feats, seconds = self._mem[name]
            return feats.to(device), seconds
        if self.folder is None:
            return None
        self._sweep()
        blob = self._load(self.folder / f"{name}.pt", key)
        if blob is None:
            return None
        feats = blob[0].to(device)
        self._remember(name, feats, blob[1])
        return feats, blob[1]

    def put(self, key: CacheKey | str, feats: torch.Tensor, seconds: float) -> None:
        """Keep ``feats`` and the ``seconds`` their extraction took under ``key``: in memory (the last
        ``max_entries`` stored) and, with a folder, in a file written through a temporary one and a rename. A
        write that fails warns (:class:`FeatureCacheWarning`) and keeps them in memory only."""
        name = str(key)
        self._remember(name, feats, seconds)
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._sweep()
        path = self.folder / f"{name}.pt"
        tmp = self.folder / f"{TMP_PREFIX}{name}.{os.getpid()}@{platform.node()}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                torch.save({"key": name, "features": feats.detach().cpu(), "seconds": float(seconds)}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            _raise_stop_request(err)
            if not isinstance(err, (OSError, RuntimeError)):  # RuntimeError: torch's writer failed
                raise
            warnings.warn(f"could not write the feature cache file {path} ({_brief(err)}); the features "
                          "stay in memory for this run only.", FeatureCacheWarning, stacklevel=2)

    def _load(self, path: Path, key: CacheKey | str) -> tuple[torch.Tensor, float] | None:
        try:
            # On the CPU first: a device out of memory must not pass for a damaged file.
            blob = torch.load(path, map_location="cpu", weights_only=True)
            feats, seconds = blob["features"], float(blob["seconds"])
            if not isinstance(feats, torch.Tensor):
                raise TypeError(f"its features are a {type(feats).__name__}, not a tensor")
        except FileNotFoundError:
            return None
        except Exception as err:  # truncated zip, not a pickle, an unsafe pickle, wrong contents
            _raise_stop_request(err)
            self._drop(path, f"is damaged or not a feature cache file ({_brief(err)})")
            return None
        wrong = _mismatch(blob, feats, seconds, key)
        if wrong:
            self._drop(path, f"is not this entry's features: {wrong}")
            return None
        return feats, seconds

    @staticmethod
    def _drop(path: Path, why: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        warnings.warn(f"feature cache file {path} {why}; deleted it, the features are extracted again.",
                      FeatureCacheWarning, stacklevel=4)

    def _sweep(self) -> None:
        """Delete gradfree's temporary files left by killed writers, once, when the folder is first used."""
        if self._swept or self.folder is None or not self.folder.is_dir():
            return
        self._swept = True
        host, now_s = platform.node(), time.time()
        for tmp in self.folder.glob(f"{TMP_PREFIX}*.tmp"):
            match = _TMP.match(tmp.name)
            if match is None:  # not a name this cache writes: not ours to delete
                continue
            try:
                if match["host"] == host:
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


def _n_features(ext, image_size: int, pool_size: int) -> int | None:
    """Flattened features per image at this cut, from a dry run on the meta device."""
    try:
        channels, h, w = ext.out_shape(image_size)
    except (RuntimeError, NotImplementedError, TypeError, ValueError, AttributeError):  # e.g. no meta kernel
        return None
    return channels * (pool_size * pool_size if pool_size else h * w)


def _out_dtype(dtype_name: str) -> torch.dtype:
    """The dtype of features computed in ``dtype_name`` (an extractor's): int8 networks give float32."""
    return torch.float32 if dtype_name == "int8" else getattr(torch, dtype_name.removeprefix("torch."))


def _mismatch(blob: dict, feats: torch.Tensor, seconds: float, key: CacheKey | str) -> str:
    """Why a loaded entry is not what ``key`` must be ('' when it is)."""
    written_for = blob.get("key")
    if written_for != str(key):
        return (f"written for entry {written_for!r}, not {str(key)!r}" if written_for is not None
                else "no key inside (an older gradfree's entry)")
    if not (math.isfinite(seconds) and seconds >= 0):
        return f"its extraction time is {seconds!r} s"
    if not isinstance(key, CacheKey):
        return ""
    rows, cols = key.shape
    if feats.ndim != 2 or feats.shape[0] != rows or (cols is not None and feats.shape[1] != cols):
        return f"shape {tuple(feats.shape)}, expected ({rows}, {cols if cols is not None else 'n_features'})"
    if feats.dtype != key.dtype:
        return f"dtype {feats.dtype}, expected {key.dtype}"
    return ""


def _raise_stop_request(err: BaseException) -> None:
    """Re-raise the stop request (KeyboardInterrupt: Ctrl-C, or SIGTERM as the CLI raises it) that
    ``err`` carries: torch turns one raised inside its file callbacks into a RuntimeError."""
    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            if link is err:
                raise err
            raise link from None
        seen.add(id(link))
        link = link.__cause__ or link.__context__


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
