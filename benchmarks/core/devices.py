"""Devices by name: ``auto``, ``cpu``, ``cuda``, ``cuda:N``."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device name that is not one, or a CUDA device this machine does not have."""


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a DeviceError otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"--device {device!r}: expected cpu, cuda, cuda:N or auto.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {device}: no CUDA device is available here; use --device cpu.")
    return dev
