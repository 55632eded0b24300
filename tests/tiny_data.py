"""Small test data: random binary inputs, and a tiny CIFAR-10 image-folder copy (a few JPEGs
per class) for the suite, report and Ray tests.

Scanning the full 60,000-file folder costs seconds per process (more in every
Ray worker); these tests only ever read 10 training and 5 test images per class.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch


def tiny_cifar10(src: Path, dst: Path, train_per_class: int = 10, test_per_class: int = 5) -> Path:
    """``dst`` with ``train/<class>/`` and ``test/<class>/`` holding the first images of ``src``'s classes."""
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            out = dst / split / cls.name
            out.mkdir(parents=True, exist_ok=True)
            for f in sorted(cls.iterdir())[:n]:
                shutil.copyfile(f, out / f.name)
    return dst


def tiny_settings(description: str, seed: str = "0") -> str:
    """A suite's ``[settings]`` over :func:`tiny_cifar10`'s images (TOML, to dedent), ``seed`` its
    seed axis as TOML (``"[0, 1]"``); its ``[[grid]]`` tables follow."""
    return f"""
    description = "{description}"
    [settings]
    dataset = "cifar10"
    image_size = 32
    train_per_class = 10
    test_per_class = 5
    batch_size = 64
    device = "cpu"
    threads = 1                # steady on a busy machine
    seed = {seed}
"""


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """Tiny suites run cells with ``threads = 1`` (steadier on a busy machine), which the runner sets
    process-wide: put torch's thread count back for the tests that follow."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def binary(n: int, m: int, seed: int = 0) -> torch.Tensor:
    """Random 0/1 uint8 (n, m), seeded: what the projections take after sign encoding."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, m, generator=g) > 0.5).to(torch.uint8)
