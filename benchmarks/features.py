"""The feature cache: extracted features shared between cells, in memory and optionally on disk."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import torch

from benchmarks.data import DataBundle


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

    def key(self, data: DataBundle, ext, split: str, pool_size: int) -> str:
        dtype = str(next(ext.parameters()).dtype)
        blob = f"{data.fingerprint()}|{data.image_size}|{ext.name}|{ext.cut}|{ext.weights}|{dtype}|{pool_size}|{split}"
        return hashlib.sha1(blob.encode()).hexdigest()[:20]

    def get(self, key: str, device: torch.device) -> tuple[torch.Tensor, float] | None:
        if key in self._mem:
            feats, seconds = self._mem[key]
            return feats.to(device), seconds
        if self.folder is not None:
            path = self.folder / f"{key}.pt"
            if path.exists():
                blob = torch.load(path, map_location=device)
                self._remember(key, blob["features"], blob["seconds"])
                return blob["features"], blob["seconds"]
        return None

    def put(self, key: str, feats: torch.Tensor, seconds: float) -> None:
        self._remember(key, feats, seconds)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{key}.{uuid.uuid4().hex}.tmp"
            torch.save({"features": feats.cpu(), "seconds": seconds}, tmp)
            tmp.replace(self.folder / f"{key}.pt")

    def _remember(self, key, feats, seconds):
        self._mem[key] = (feats, seconds)
        while len(self._mem) > self.max_entries:
            self._mem.pop(next(iter(self._mem)))
