"""Shared fixtures: real data and weights when present, clean skips otherwise."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
# The development copy of CIFAR-10 (JPEG image folders) beside the checkout, for tests and CI only.
SHARED_CIFAR10 = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
CACHE = REPO / ".cache"


def _cifar10_dir() -> Path | None:
    env = os.environ.get("GRADFREE_TEST_CIFAR10")
    if env:
        return Path(env) if (Path(env) / "train").is_dir() else None
    target = CACHE / "cifar10-jpg"
    if (target / "test").is_dir() and (target / ".complete").exists():
        return target
    if not SHARED_CIFAR10.exists():
        return None
    tmp = CACHE / f"cifar10-jpg.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    with tarfile.open(SHARED_CIFAR10) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / ".complete").touch()
    if target.exists():  # another worker won the race
        return target
    tmp.rename(target)
    return target


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    path = _cifar10_dir()
    if path is None:
        pytest.skip(f"CIFAR-10 JPEGs not found ({SHARED_CIFAR10}); set GRADFREE_TEST_CIFAR10")
    return path


@pytest.fixture(scope="session")
def mobilenet_weights() -> str:
    """The resolved name of offline MobileNetV2 ImageNet weights, or a skip."""
    from benchmarks.core.backbones import weights_path

    for name in ("IMAGENET1K_V1", "IMAGENET1K_V2"):
        if weights_path("mobilenet_v2", name).exists():
            return name
    pytest.skip("no pretrained MobileNetV2 weights in the torch hub cache (run `make setup`)")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: on busy shared cores OpenMP's spin-waits make each small op ~100x slower
    with 2 threads than with 1 (see tests/benchmarks/test_ratio_gate.py). Use per module:
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
