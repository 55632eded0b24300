"""Modules a cut adds around a model's own layers: the first layers of a dense block, Inception's
input transform, ViT's patch embedding at any square size, and the readout of a token map."""

from __future__ import annotations

import math

import torch
from torch import nn

# ----------------------------------------------------------------------------
# Modules a cut adds around the model's own layers (no parameters of their own,
# except ViTEmbed, which shares the model's class token and position embedding)
# ----------------------------------------------------------------------------


class PartialDenseBlock(nn.Module):
    """The first ``j`` dense layers of a torchvision ``_DenseBlock``, concatenated."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class InceptionInput(nn.Module):
    """GoogLeNet's and Inception v3's ``transform_input``: ImageNet-normalised input to the
    [-1, 1] scaling their ported weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.new_tensor([0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5]).view(1, 3, 1, 1)
        shift = x.new_tensor([(0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5]).view(1, 3, 1, 1)
        return x * scale + shift


class ViTEmbed(nn.Module):
    """A torchvision ViT's patch embedding, class token, position embedding and dropout:
    ``(n, 3, H, W) -> (n, 1 + h*w, D)`` for any square H = W >= the patch size."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x)  # (n, D, h, w)
        n, d, h, w = x.shape
        x = torch.cat([self.class_token.expand(n, -1, -1), x.reshape(n, d, h * w).permute(0, 2, 1)], dim=1)
        return self.dropout(x + self._positions(h, w))

    def _positions(self, h: int, w: int) -> torch.Tensor:
        pos = self.pos_embedding  # (1, 1 + g*g, D), trained at a g x g grid
        if pos.shape[1] == 1 + h * w:
            return pos
        g = math.isqrt(pos.shape[1] - 1)
        grid = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = nn.functional.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)


class Readout(nn.Module):
    """Token maps to ``(n, C, h, w)``: ``tokens`` (n, 1 + h*w, D) or ``nhwc`` (n, h, w, C)."""

    def __init__(self, tokens: str, readout: str):
        super().__init__()
        self.tokens, self.readout = tokens, readout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens == "nhwc":
            x = x.permute(0, 3, 1, 2)
            return x.mean((2, 3), keepdim=True) if self.readout == "mean" else x
        if self.readout == "cls":
            return x[:, 0, :, None, None]
        patches = x[:, 1:]
        if self.readout == "mean":
            return patches.mean(1)[:, :, None, None]
        g = math.isqrt(patches.shape[1])
        return patches.reshape(x.shape[0], g, g, x.shape[2]).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        """``tokens -> readout``, for the module's repr."""
        return f"{self.tokens} -> {self.readout}"
