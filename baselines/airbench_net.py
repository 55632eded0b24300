"""airbench94's network: a frozen whitening layer set from the training patches, three conv groups.

:class:`AirbenchNet` and :func:`whitening_filters`, as :mod:`baselines.airbench` (the recipe that
trains it) describes them: convolutions without bias, each initialised as PyTorch does and then
its first ``in_channels`` filters set to the identity (Dirac); BatchNorm with eps 1e-12, running
statistics kept as ``0.6 * old + 0.4 * new``, its scale frozen at 1 and only its bias trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_WHITEN_CHUNK = 500  # images per chunk of the patch covariance


def _conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    # Partial identity: the first c_in filters pass their input through unchanged.
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(c_in, c_out)])
    return conv


def _batch_norm(channels: int, momentum: float, eps: float) -> nn.BatchNorm2d:
    # airbench's momentum is the weight of the old statistics; PyTorch's is that of the new.
    bn = nn.BatchNorm2d(channels, eps=eps, momentum=1.0 - momentum)
    bn.weight.requires_grad_(False)  # scale frozen at 1; only the bias trains
    return bn


class ConvGroup(nn.Module):
    """conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU; halves the map."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float, bn_eps: float):
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _batch_norm(c_out, bn_momentum, bn_eps)
        self.conv2 = _conv3x3(c_out, c_out)
        self.norm2 = _batch_norm(c_out, bn_momentum, bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(self.pool(self.conv1(x))))
        return F.gelu(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """``forward(x: (n, 3, H, W)) -> (n, n_classes)`` logits (scaled by ``logit_scale``).

    ``whiten``: ``2 * 3 * k * k`` filters of ``k x k`` (k = 2), unpadded, weight frozen (set
    by :func:`whitening_filters`); then ``len(widths)`` :class:`ConvGroup`; a global max-pool
    (airbench's ``MaxPool2d(3)`` on the 3x3 map of a 32 px image); a bias-free linear layer.
    """

    def __init__(self, n_classes: int, widths: tuple[int, ...] = (64, 256, 256), bn_momentum: float = 0.6,
                 bn_eps: float = 1e-12, logit_scale: float = 1 / 9, whiten_kernel: int = 2):
        super().__init__()
        self.widths, self.logit_scale = tuple(widths), logit_scale
        self.whiten = nn.Conv2d(3, 2 * 3 * whiten_kernel**2, whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        with torch.no_grad():
            self.whiten.bias.zero_()
        groups, c_in = [], self.whiten.out_channels
        for width in widths:
            groups.append(ConvGroup(c_in, width, bn_momentum, bn_eps))
            c_in = width
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(c_in, n_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * self.logit_scale


@torch.no_grad()
def whitening_filters(images: torch.Tensor, kernel_size: int = 2, eps: float = 5e-4) -> torch.Tensor:
    """The whitening layer's weights from ``images: (n, C, H, W)`` (normalised floats).

    Returns ``(2 * C * k * k, C, k, k)``: the eigenvectors of the uncentred covariance of
    all ``k x k`` patches, largest eigenvalue first, each divided by ``sqrt(eigenvalue + eps)``,
    followed by their negatives. The covariance is accumulated in float64, in chunks.
    """
    n, c = images.shape[:2]
    d = c * kernel_size**2
    cov = torch.zeros(d, d, dtype=torch.float64, device=images.device)
    count = 0
    for chunk in images.split(_WHITEN_CHUNK):
        # (n, C, H', W', k, k) -> (n * H' * W', C * k * k): one row per patch, laid out as the conv weight.
        patches = chunk.float().unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, d)
        cov += (patches.T @ patches).double()
        count += len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov / max(count, 1))  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).reshape(d, c, kernel_size,
                                                                                            kernel_size)
    return torch.cat([filters, -filters]).float()
