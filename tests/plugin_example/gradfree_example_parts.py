"""A dataset, a projection and a backbone from outside gradfree, installed by entry points
(``gradfree.datasets``, ``gradfree.projections``, ``gradfree.backbones``) from this example package."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from benchmarks.core.cuts import Cut, Layout
from benchmarks.core.datasets import Dataset, Source


# --- a dataset: 32 px images of stripes, horizontal (class 0) or vertical (class 1), under noise ---

def _stripes(n: int, seed: int) -> Source:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    period = rng.integers(3, 9, n)
    wave = (np.sin(2 * np.pi * np.arange(32)[None, :] / period[:, None]) > 0).astype(np.float32)  # (n, 32)
    images = np.where(labels[:, None, None] == 0, wave[:, :, None], wave[:, None, :])  # rows or columns
    images = np.clip(images * 200 + rng.normal(28, 40, (n, 32, 32)), 0, 255).astype(np.uint8)
    return Source(["horizontal", "vertical"], labels.astype(np.int64),
                  lambda i: Image.fromarray(images[i]).convert("RGB"), f"stripes(seed={seed})")


STRIPES = Dataset("stripes", lambda data_dir: (_stripes(200, 0), _stripes(100, 1)), n_classes=2,
                  full_sizes=(200, 100), about="stripes (example plugin): 32 px, horizontal or vertical")


# --- a projection: random Fourier features cos(X W + b), W Gaussian (an RBF kernel's) ---

class CosineProjection:
    name, streamable, takes_block_size, flops_per_mac, takes_n_components = "cosine", False, False, 2, True

    def __init__(self, n_components: int = 1000, seed: int = 0, gamma: float = 1e-3):
        self.n_components, self.seed, self.gamma = n_components, seed, gamma

    def fit(self, X, y=None):
        g = torch.Generator().manual_seed(self.seed)
        d = X.shape[1]
        self.W_ = torch.randn(d, self.n_components, generator=g) * (2 * self.gamma) ** 0.5
        self.b_ = torch.rand(self.n_components, generator=g) * 2 * torch.pi
        return self

    def transform(self, X):
        X = torch.as_tensor(X, dtype=torch.float32)
        return torch.cos(X @ self.W_.to(X.device) + self.b_.to(X.device)) * (2.0 / self.n_components) ** 0.5


# --- a backbone module: a tiny random convnet, cut after each of its blocks ---

FAMILY = "example"


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*(nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
                           for c_in, c_out in ((3, 8), (8, 16), (16, 16))))


def layout(model: nn.Module) -> Layout:
    units = [(f"block{i}", m) for i, m in enumerate(model)]
    return Layout(units, [Cut(n, i) for i, (n, _) in enumerate(units)], {}, "nchw")


def resolve_weights(name: str, weights: str | None) -> str:
    if weights not in (None, "none", "DEFAULT"):
        raise ValueError(f"tinynet has random weights only; got {weights!r}")
    return "none"


def weights_path(name, weights=None):
    return None


def weights_table(name):
    return [{"weights": "none", "default": True, "file": None, "cached": True, "params": None, "acc1": None}]


def base_model(name: str, weights: str | None) -> nn.Module:
    return build(name)
