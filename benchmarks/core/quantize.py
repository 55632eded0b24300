"""int8 feature extraction on the CPU: post-training static quantization of a cut network.

PyTorch's FX graph mode quantization (``torch.ao.quantization.quantize_fx``) with the
default configuration of the CPU's engine (:func:`check_engine`): weights int8, per output
channel, symmetric; activations uint8, per tensor, calibrated by histogram (7-bit on x86
CPUs without VNNI, whose kernels would saturate otherwise). ``prepare_fx`` fuses conv + BatchNorm (+ ReLU) and inserts observers,
calibration batches run through it, and ``convert_fx`` swaps in quantized kernels
(FBGEMM / oneDNN). The network quantizes its input and dequantizes its output, so it
takes and returns float32 like the float one.

Why FX and not PT2E: PT2E's converted model runs quantize / dequantize around float ops
in eager mode, fast only once ``torch.compile`` lowers it with Inductor, and moved to
torchao, which gradfree does not depend on; ``convert_fx`` gives quantized kernels that
run as they are. torch 2.14 marks ``torch.ao.quantization`` deprecated (in favour of
torchao): its deprecation warnings are silenced here and nowhere else.

There are no CUDA kernels for these quantized ops: int8 is CPU-only (see
:func:`check_engine`). Calibration is the caller's business and must use training
images only (``benchmarks.core.backbones.quantize_extractor`` takes a few hundred of them).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn


class QuantizationError(RuntimeError):
    """A network that PyTorch's FX quantization cannot trace or convert."""


def check_engine() -> str:
    """Select and return the quantized engine for this CPU.

    ``onednn`` where the CPU has VNNI (8-bit dot products that do not saturate, so
    activations use the full 8-bit range: measured on MobileNetV2, the relative error of
    its last features fell from 0.66 with ``x86``'s reduced range to 0.43); ``x86`` (FBGEMM,
    7-bit activations) on other x86 CPUs; ``qnnpack`` on ARM.
    """
    engines = torch.backends.quantized.supported_engines
    vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: False)()
    order = ("onednn", "x86", "fbgemm", "qnnpack") if vnni else ("x86", "fbgemm", "qnnpack")
    for engine in order:
        if engine in engines:
            if torch.backends.quantized.engine != engine:
                torch.backends.quantized.engine = engine
            return engine
    raise QuantizationError(f"this build of PyTorch has no quantized CPU engine (supported: {engines}).")


#: Leading blocks (with parameters) of a network kept in float32. They run at the highest resolution,
#: where per-tensor activation scales lose the most: on MobileNetV2 (CIFAR-10 at 96 px) keeping its first
#: three blocks in float cut the relative error of features.18 from 0.44 to 0.19 (sign agreement with
#: fp32 from 0.84 to 0.93), for about a third of the int8 speed-up.
FLOAT_BLOCKS = 3


def quantize_static(body: nn.Module, batches: Iterable[torch.Tensor], float_blocks: int = FLOAT_BLOCKS) -> nn.Module:
    """``body`` (float32, eval mode, CPU) quantized to int8, calibrated on ``batches``.

    ``batches``: float32 ``(n, 3, H, W)`` inputs, normalised as the network expects;
    the first one also serves as the example input for tracing. The first ``float_blocks``
    children of ``body`` that have parameters stay in float32.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = check_engine()
    mapping = get_default_qconfig_mapping(engine)
    kept = [n for n, c in body.named_children() if next(c.parameters(), None) is not None][:float_blocks]
    for name in kept:
        mapping.set_module_name(name, None)
    batches = iter(batches)
    first = next(batches)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(deprecated|reduce_range).*")
        try:
            prepared = prepare_fx(body.eval(), mapping, example_inputs=(first[:1],))
        except Exception as err:  # torch.fx.proxy.TraceError, TypeError from data-dependent control flow...
            raise QuantizationError(f"torch.fx cannot trace it for quantization ({type(err).__name__}: "
                                    f"{str(err).splitlines()[0][:200] if str(err) else ''})") from err
        with torch.no_grad():
            prepared(first)
            for x in batches:
                prepared(x)
        try:
            return convert_fx(prepared).eval()
        except Exception as err:
            raise QuantizationError(f"convert_fx failed ({type(err).__name__}: {str(err)[:200]})") from err


def _packed(m: nn.Module) -> list[torch.Tensor]:
    """The weight and bias of a quantized conv / linear (kept packed, read through methods)."""
    weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
    if not callable(weight) or isinstance(weight, torch.Tensor):
        return []
    tensors = [weight()]
    b = bias() if callable(bias) else None
    return tensors + ([b] if b is not None else [])


def _nbytes(t: torch.Tensor) -> int:
    if t.is_quantized:
        if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scales, zero_points = t.q_per_channel_scales(), t.q_per_channel_zero_points()
            extra = scales.numel() * scales.element_size() + zero_points.numel() * zero_points.element_size()
        else:
            extra = 8 + 8  # one scale (float64), one zero point (int64)
        return t.numel() * t.element_size() + extra
    return t.numel() * t.element_size()


def quantized_size(model: nn.Module) -> tuple[int, int]:
    """(parameter count, bytes) of a quantized network: packed int8 weights (with their
    per-channel scales and zero points) and float biases, plus any float parameters and
    buffers left unquantized. BatchNorm folded into a conv no longer counts separately."""
    count = bytes_ = 0
    for m in model.modules():
        for t in _packed(m):
            count += t.numel()
            bytes_ += _nbytes(t)
        for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
            if isinstance(t, nn.Parameter):
                count += t.numel()
            bytes_ += _nbytes(t)
    return count, bytes_
