"""Pretrained torchvision backbones cut at named layers, and the features they extract.

Every torchvision classification model is a backbone (:data:`BACKBONES`, from
``torchvision.models.list_models``), and so is EfficientNet-Lite0 (``efficientnet_lite0``, from
the optional extra ``gradfree[efficientnet]``: :mod:`benchmarks.core.efficientnet`, whose module
builds it, loads its weights and reads its cuts). Its cut points come from the model itself
(:mod:`benchmarks.core.cuts`): :func:`list_cuts` names them, :func:`build_backbone` returns an
:class:`Extractor` that keeps only the layers the cut needs, so its parameter count is
the honest size of the cut network.

Weights go through torchvision's weights API: ``DEFAULT``, a weights name
(``IMAGENET1K_V2`` or ``ResNet50_Weights.IMAGENET1K_V2``) or ``none``. A checkpoint
missing from the torch hub cache is downloaded only with a notice saying so, never with
``GRADFREE_OFFLINE=1``; when it cannot be had, a :class:`BackboneError` names the file,
where torchvision expects it, and ``--weights none``.

Precisions: fp32, fp16 and bf16 run the float network in that dtype; int8 is
post-training static quantization on the CPU (:mod:`benchmarks.core.quantize`), calibrated by
:func:`quantize_extractor` on training images.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from benchmarks.core import cuts as _cuts
from benchmarks.core.cuts import BackboneError, list_cuts, readouts, resolve_cut  # noqa: F401 (re-exported)
from benchmarks.core.weights import (BACKBONES, BackboneSpec, _base_model, _spec, offline,  # noqa: F401 (re-exported)
                                     resolve_weights, weights_path, weights_table)

#: The dtype each precision computes in (int8: quantized weights and activations, float32 in and out).
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.qint8}
#: Training images an int8 extractor is calibrated on (a few hundred, evenly spread over the split).
CALIBRATION_IMAGES = 256


# ----------------------------------------------------------------------------
# The extractor
# ----------------------------------------------------------------------------


class Extractor(nn.Module):
    """A backbone truncated at ``cut``: ``forward(x: (n, 3, H, W)) -> (n, C, h, w)``.

    ``body`` runs the kept layers; ``readout`` (no parameters) turns a transformer's
    tokens into a map. After :meth:`quantize`, ``body`` is the int8 network.
    """

    def __init__(self, name: str, cut: str, blocks: list[tuple[str, nn.Module]], weights: str,
                 readout: nn.Module | None = None, precision: str = "fp32"):
        super().__init__()
        self.name = name
        self.cut = cut
        self.weights = weights  # resolved name, e.g. IMAGENET1K_V1, or "none"
        self.weights_loaded = weights != "none"
        self.precision = precision
        self.quantized = False
        self.body = nn.Sequential()
        for block_name, module in blocks:
            self.body.add_module(block_name.replace(".", "_"), module)
        self.readout = readout if readout is not None else nn.Identity()

    @property
    def blocks(self) -> list[nn.Module]:
        """Kept units in forward order (for unfreezing the last N)."""
        return [] if self.quantized else list(self.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.body(x))

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype inputs are given in (float32 for int8: the network quantizes them)."""
        if self.precision == "int8":
            return torch.float32
        return next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)

    @property
    def dtype_name(self) -> str:
        """What the features are computed in, for cache keys: ``torch.float32``... or ``int8``."""
        return "int8" if self.precision == "int8" else str(self.input_dtype)

    @property
    def param_count(self) -> int:
        """Number of kept parameters (after :meth:`quantize`: the int8 network's, as
        :func:`benchmarks.core.quantize.quantized_size` counts them)."""
        if self.quantized:
            return self._quantized_size[0]
        return sum(p.numel() for p in self.parameters())

    @property
    def param_bytes(self) -> int:
        """Bytes of every kept parameter and buffer (BatchNorm statistics, int8 scales included)."""
        if self.quantized:
            return self._quantized_size[1]
        tensors = list(self.parameters()) + list(self.buffers())
        return sum(t.numel() * t.element_size() for t in tensors)

    def out_shape(self, image_size: int) -> tuple[int, int, int]:
        """(C, h, w) for square ``image_size`` inputs, by a dry run on the meta device
        (int8: one real image of zeros on the CPU)."""
        if self.quantized:
            with torch.no_grad():
                y = self(torch.zeros(1, 3, image_size, image_size))
            return tuple(int(s) for s in y.shape[1:])
        from torch.func import functional_call

        # Meta twins of the weights (no data copied), in eval mode: BatchNorm takes a batch of one.
        tensors = {k: v.to("meta") for k, v in [*self.named_parameters(), *self.named_buffers()]}
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                y = functional_call(self, tensors, (torch.zeros(1, 3, image_size, image_size, device="meta",
                                                                dtype=self.input_dtype),))
        finally:
            self.train(was_training)
        return tuple(int(s) for s in y.shape[1:])

    def out_channels(self) -> int:
        """Channels C of the output, read from :meth:`out_shape` at 64 px."""
        return self.out_shape(64)[0]

    def quantize(self, batches) -> "Extractor":
        """Replace ``body`` by its int8 version calibrated on ``batches`` (CPU float32 inputs); in place."""
        from benchmarks.core.quantize import QuantizationError, quantize_static, quantized_size

        if self.quantized:
            return self
        try:
            self.body = quantize_static(self.body.float().cpu().eval(), batches)
        except QuantizationError as err:
            raise BackboneError(f"int8 extraction of {self.name} at {self.cut}: {err}. int8 supports the "
                                "networks torch.fx can trace (the convnets); use --precision fp32 or bf16.") from err
        self.quantized, self.precision = True, "int8"
        self._quantized_size = quantized_size(self.body)
        return self


def build_base(name: str, weights: str = "DEFAULT") -> nn.Module:
    """The whole model, classifier included (for tests and for cutting several times)."""
    return _base_model(_spec(name), weights)


def truncate(name: str, base: nn.Module, cut: str | None, weights: str = "none") -> Extractor:
    """``base`` cut at ``cut``: the Extractor shares (not copies) the kept layers."""
    cut = resolve_cut(name, cut)
    base_cut, readout = _cuts.split_readout(cut)
    lay = _cuts.layout(name, base)
    return Extractor(name, cut, _cuts.blocks(lay, lay.cut(base_cut)), weights, _cuts.readout_module(lay, readout))


def cut_shapes(name: str, image_size: int) -> list[dict]:
    """Every cut of ``name`` with its output shape (C, h, w) at ``image_size`` px (None when the
    input is too small for it), its feature count and the parameters it keeps; on the meta device."""
    base = _cuts.skeleton(_cuts.check_name(name))
    rows = []
    for cut in list_cuts(name):
        ext = truncate(name, base, cut)
        try:
            shape = ext.out_shape(image_size)
        except (RuntimeError, ValueError):  # "input size is too small", an empty map...
            shape = None
        rows.append({"cut": cut, "shape": shape, "features": math.prod(shape) if shape else None,
                     "params": ext.param_count})
    return rows


def check_precision(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype the float network is built in for ``precision``, after checking that ``device``
    can run it (int8: the CPU, with a quantized engine)."""
    if precision not in PRECISIONS:
        raise BackboneError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "int8":
        if torch.device(device).type != "cpu":
            raise BackboneError(
                f"int8 extraction runs on the CPU only, not on {device}: PyTorch's post-training static "
                "quantization has x86 (FBGEMM/oneDNN) and ARM (QNNPACK) kernels and no CUDA ones. Use "
                "--device cpu with --precision int8, or fp16 / bf16 on the GPU.")
        from benchmarks.core.quantize import QuantizationError, check_engine

        try:
            check_engine()
        except QuantizationError as err:
            raise BackboneError(f"int8 extraction: {err}") from err
        return torch.float32
    dtype = PRECISIONS[precision]
    if dtype is torch.float32:
        return dtype
    try:
        conv = nn.Conv2d(3, 4, 3).to(device=device, dtype=dtype)
        with torch.no_grad():
            conv(torch.zeros(1, 3, 8, 8, device=device, dtype=dtype))
    except (RuntimeError, NotImplementedError) as err:
        raise BackboneError(
            f"{precision} convolutions are not supported on {device} ({str(err)[:120]}); "
            "use --precision fp32 (or bf16 on CPU)."
        ) from err
    return dtype


def build_backbone(
    name: str = "mobilenet_v2",
    cut: str | None = None,
    weights: str = "DEFAULT",
    precision: str = "fp32",
    device: torch.device | str = "cpu",
    calibration: tuple[torch.Tensor, tuple, tuple] | None = None,
) -> Extractor:
    """The backbone ``name`` truncated at ``cut``, in eval mode, on ``device`` in ``precision``.

    int8: without ``calibration`` the float32 extractor comes back marked int8, to be
    quantized by :func:`quantize_extractor` (the caller times that step); with
    ``calibration = (train_images, mean, std)`` it is quantized here.
    """
    spec = _spec(name)
    cut = resolve_cut(name, cut)
    dtype = check_precision(precision, device)
    base = _base_model(spec, weights)
    ext = truncate(name, base, cut, resolve_weights(name, weights))
    del base  # drop the layers past the cut
    ext = ext.to(device=device, dtype=dtype).eval()
    ext.precision = precision
    if torch.device(device).type == "cuda":
        ext = ext.to(memory_format=torch.channels_last)
    for p in ext.parameters():
        p.requires_grad_(False)
    if precision == "int8" and calibration is not None:
        ext = quantize_extractor(ext, *calibration)
    return ext


def quantize_extractor(ext: Extractor, images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                       n_images: int = CALIBRATION_IMAGES, batch_size: int = 64) -> Extractor:
    """``ext`` quantized to int8, calibrated on ``n_images`` of ``images: (n, 3, H, W) uint8``,
    evenly spread over them (every class of a class-sorted split). Pass training images
    only: never validation or test."""
    check_precision("int8", "cpu")
    pick = torch.linspace(0, len(images) - 1, min(n_images, len(images))).round().long().unique()
    calib = images[pick]
    batches = (x for _, x in _batches(calib, batch_size, mean, std, torch.device("cpu"), torch.float32))
    return ext.quantize(batches)


@functools.lru_cache(maxsize=None)
def check_quantizable(name: str, cut: str | None) -> None:
    """A :class:`BackboneError` before any work when int8 cannot quantize ``name`` cut at ``cut``:
    FX quantization needs a network torch.fx can trace (the convnets; not ViT's shape checks). The cut
    network is built on the meta device (no weights, no memory) and traced as ``prepare_fx`` traces it."""
    from torch.ao.quantization.fx.tracer import QuantizationTracer

    cut = resolve_cut(name, cut)
    with torch.device("meta"):
        base = _base_model(_spec(name), "none")
    body = truncate(name, base, cut, "none").body.eval()
    try:
        QuantizationTracer([], []).trace(body)
    except Exception as err:  # torch.fx.proxy.TraceError, TypeError from data-dependent control flow...
        raise BackboneError(f"precision int8 cannot quantize {name} at {cut}: torch.fx cannot trace it "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}). "
                            "int8 supports the networks torch.fx can trace (the convnets); use --precision "
                            "fp32 or bf16.") from None


@torch.inference_mode()
def extract_features(
    ext: Extractor,
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 128,
    pool_size: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "extract",
) -> torch.Tensor:
    """Flattened feature maps of ``images: (n, 3, H, W) uint8`` -> ``(n, C*h*w)``.

    Runs batched in inference mode in the extractor's dtype; ``pool_size > 0``
    average-pools every map to ``pool_size x pool_size`` first. Features stay in
    the extractor's dtype (fp16/bf16 halve their memory; int8 gives float32) on ``device``.

    Throughput: the network runs channels-last (oneDNN on CPU and cuDNN both run
    these convnets faster in NHWC; measured 1.3-2x for MobileNetV2 on CPU, 2.7x for
    its int8 kernels), and the next batch is prepared while the current one runs: on
    CUDA its uint8 pixels are staged in pinned memory and copied and normalised on a
    side stream, on CPU a worker thread converts it. The flattened features keep the
    (C, h, w) order.
    """
    from tqdm.auto import tqdm

    if ext.precision == "int8" and not ext.quantized:
        raise BackboneError("this int8 extractor is not quantized yet: call quantize_extractor(ext, "
                            "train_images, mean, std) first (calibration uses training images only).")
    dtype = ext.input_dtype
    device = torch.device(device)
    _channels_last(ext)
    out = None
    n = images.shape[0]
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False)
    for start, x in _batches(images, batch_size, mean, std, device, dtype):
        f = ext(x)
        if pool_size:
            f = nn.functional.adaptive_avg_pool2d(f, pool_size)
        f = f.reshape(f.shape[0], -1)
        if out is None:
            out = torch.empty((n, f.shape[1]), dtype=f.dtype, device=device)
        out[start:start + f.shape[0]] = f
        bar.update(f.shape[0])
    bar.close()
    return out


def _channels_last(ext: nn.Module) -> None:
    """Put the extractor's 4-d weights in channels-last order (once; a no-op afterwards)."""
    w = next((p for p in ext.parameters() if p.ndim == 4), None)
    if w is not None and not w.is_contiguous(memory_format=torch.channels_last):
        ext.to(memory_format=torch.channels_last)


def _batches(images, batch_size, mean, std, device, dtype):
    """Yield (start, normalised channels-last batch on device), preparing one batch ahead."""
    from benchmarks.core.data import to_float

    n = images.shape[0]
    starts = range(0, n, batch_size)
    if device.type == "cuda":
        stream = torch.cuda.Stream(device)

        def load(start):
            cpu = images[start:start + batch_size]
            if cpu.device.type == "cpu" and not cpu.is_pinned():
                cpu = cpu.pin_memory()  # page-locked: the copy below is truly asynchronous
            with torch.cuda.stream(stream):
                x = to_float(cpu, mean, std, device, dtype).contiguous(memory_format=torch.channels_last)
                ready = torch.cuda.Event()
                ready.record(stream)
            return x, ready

        pending = load(0) if n else None
        for i, start in enumerate(starts):
            x, ready = pending
            if start + batch_size < n:
                pending = load(start + batch_size)
            torch.cuda.current_stream(device).wait_event(ready)
            x.record_stream(torch.cuda.current_stream(device))  # allocated on the side stream
            yield start, x
        return

    def load(start):
        with torch.inference_mode():
            x = to_float(images[start:start + batch_size], mean, std, device, dtype)
            return x.contiguous(memory_format=torch.channels_last)

    if len(starts) == 1:
        yield 0, load(0)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradfree-batches") as pool:
        pending = pool.submit(load, 0)
        for start in starts:
            x = pending.result()
            if start + batch_size < n:
                pending = pool.submit(load, start + batch_size)
            yield start, x
