"""Labels of the ridge classifiers: class indices, {-1, +1} targets, predictions and accuracy."""

from __future__ import annotations

import numpy as np
import torch

__all__ = []

def _encode_labels(y, n, device):
    """Sorted classes (tensor if y is one, else numpy) and indices (n,) long on device."""
    if isinstance(y, torch.Tensor):
        y_t = y.reshape(-1)
        if len(y_t) != n:
            raise ValueError(f"y has {len(y_t)} labels but X has {n} samples.")
        classes, idx = torch.unique(y_t, sorted=True, return_inverse=True)
        return classes, idx.to(device)
    y_np = np.asarray(y).reshape(-1)
    if len(y_np) != n:
        raise ValueError(f"y has {len(y_np)} labels but X has {n} samples.")
    classes, idx = np.unique(y_np, return_inverse=True)
    return classes, torch.as_tensor(idx, dtype=torch.long, device=device)


def _label_indices(classes, y, n, device, unknown_ok=False):
    """Index of each label of y in classes: (n,) long; -1 for unknown labels when allowed."""
    y_np = y.detach().cpu().numpy().reshape(-1) if isinstance(y, torch.Tensor) else np.asarray(y).reshape(-1)
    cls = classes.detach().cpu().numpy() if isinstance(classes, torch.Tensor) else classes
    if len(y_np) != n:
        raise ValueError(f"y has {len(y_np)} labels but X has {n} samples.")
    pos = np.clip(np.searchsorted(cls, y_np), 0, len(cls) - 1)
    known = cls[pos] == y_np
    if not known.all() and not unknown_ok:
        raise ValueError(
            f"Validation labels {np.unique(y_np[~known])[:10].tolist()} are not among the "
            f"training classes {cls.tolist()[:20]}: every class must appear in the training set."
        )
    return torch.as_tensor(np.where(known, pos, -1), dtype=torch.long, device=device)


def _binarize(idx, n_classes) -> torch.Tensor:
    """LabelBinarizer(neg_label=-1, pos_label=1): (n, n_classes), or (n, 1) for two classes."""
    if n_classes == 2:
        return (2.0 * (idx == 1).double() - 1.0)[:, None]
    Y = torch.full((len(idx), n_classes), -1.0, dtype=torch.float64, device=idx.device)
    Y[torch.arange(len(idx), device=idx.device), idx] = 1.0
    return Y


def _predicted_index(S) -> torch.Tensor:
    """S: (n, c) scores -> predicted class indices (n,); c == 1 is a binary sign decision."""
    return (S[:, 0] > 0).long() if S.shape[1] == 1 else S.argmax(dim=1)


def _accuracy(S, y_idx) -> float:
    """S: (n, c) scores; c == 1 means a binary sign decision."""
    pred = (S[:, 0] > 0).long() if S.shape[1] == 1 else S.argmax(dim=1)
    return float((pred == y_idx).double().mean()) if len(y_idx) else float("nan")
