"""The on-disk feature cache: safe loads, damaged files re-extracted, no temporary files left behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from benchmarks.core import features
from benchmarks.core.features import FeatureCache, FeatureCacheWarning

CPU = torch.device("cpu")


def _feats() -> torch.Tensor:
    return torch.arange(24, dtype=torch.float32).reshape(4, 6)


class _RunsCode:
    """Pickles as a call to ``open(marker, "w")``: an unsafe load would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_features_round_trip_through_the_disk(tmp_path):
    FeatureCache(tmp_path).put("k1", _feats(), 1.5)
    feats, seconds = FeatureCache(tmp_path).get("k1", CPU)  # a fresh cache: from disk
    assert torch.equal(feats, _feats()) and seconds == 1.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1.pt"]


def _truncated(path, marker):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path, marker):
    path.write_bytes(b"")


def _garbage(path, marker):
    path.write_bytes(b"not a torch file at all\n" * 10)


def _wrong_contents(path, marker):
    torch.save({"feats": _feats()}, path)


def _unsafe_pickle(path, marker):
    torch.save({"features": _feats(), "seconds": 1.0, "payload": _RunsCode(marker)}, path)


@pytest.mark.parametrize("damage", [_truncated, _empty, _garbage, _wrong_contents, _unsafe_pickle])
def test_a_damaged_cache_file_is_warned_deleted_and_extracted_again(tmp_path, damage):
    folder, marker = tmp_path / "cache", tmp_path / "code-ran"
    FeatureCache(folder).put("k1", _feats(), 1.5)
    path = folder / "k1.pt"
    damage(path, marker)
    cache = FeatureCache(folder)
    with pytest.warns(FeatureCacheWarning, match=str(path)):
        assert cache.get("k1", CPU) is None  # a miss: the caller extracts again
    assert not path.exists()
    assert not marker.exists()  # loaded with weights_only=True: no code ran
    cache.put("k1", _feats() + 1, 2.0)  # the re-extraction
    feats, seconds = FeatureCache(folder).get("k1", CPU)
    assert torch.equal(feats, _feats() + 1) and seconds == 2.0


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporary_files_are_removed_when_the_folder_is_first_used(tmp_path):
    host, tmp = features.platform.node(), features.TMP_PREFIX
    dead = tmp_path / f"{tmp}k1.{_dead_pid()}@{host}.{'a' * 32}.tmp"
    mine = tmp_path / f"{tmp}k2.{os.getpid()}@{host}.{'b' * 32}.tmp"  # this process is writing it
    old = tmp_path / f"{tmp}k3.1@another-host.{'d' * 32}.tmp"  # another host's, long ago
    elsewhere = tmp_path / f"{tmp}k5.1@another-host.{'c' * 32}.tmp"  # maybe still being written
    # Not names this cache writes (an older gradfree's, another program's): never swept, however old.
    foreign = [tmp_path / ".k4.fedcba9876543210fedcba9876543210.tmp", tmp_path / ".notes.txt.tmp",
               tmp_path / f"{tmp}notes.tmp"]
    for path in (dead, mine, old, elsewhere, *foreign):
        path.write_bytes(b"half a cache file")
    long_ago = os.stat(old).st_mtime - 2 * features.STALE_TMP_S
    for path in (old, *foreign):
        os.utime(path, (long_ago, long_ago))
    assert FeatureCache(tmp_path).get("missing", CPU) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [mine, elsewhere, *foreign])


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def save_half_then_fail(obj, f):
        f.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(features.torch, "save", save_half_then_fail)
    cache = FeatureCache(tmp_path)
    with pytest.warns(FeatureCacheWarning, match="No space left on device"):
        cache.put("k1", _feats(), 1.5)
    assert list(tmp_path.iterdir()) == []  # neither a temporary file nor a torn cache file
    feats, seconds = cache.get("k1", CPU)  # still served from memory for this run
    assert torch.equal(feats, _feats()) and seconds == 1.5


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def interrupted(obj, f):
        f.write(b"PK\x03\x04 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(features.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        FeatureCache(tmp_path).put("k1", _feats(), 1.5)
    assert list(tmp_path.iterdir()) == []
