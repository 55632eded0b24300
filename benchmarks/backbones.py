"""ImageNet-pretrained backbones cut at named layers.

Cut points are data: :func:`list_cuts` names every valid cut of a backbone
(for DenseNet169 after each dense layer of each dense block, after each
transition, and ``norm5``; for MobileNetV2 after each ``features.N`` block),
and :func:`build_backbone` returns an :class:`Extractor` that keeps only the
layers the cut needs, so its parameter count is the honest size of the cut
network.

A cut inside a dense block returns what the block would hand on at that
point: the concatenation of the block's input and of every dense layer so far
(``in_channels + j * growth_rate`` channels), as Keras' ``convB_blockJ_concat``
does in the seed experiments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    builder: str  # torchvision.models function name
    default_cut: str


BACKBONES = {
    "densenet169": BackboneSpec("densenet169", "densenet169", "norm5"),
    "mobilenet_v2": BackboneSpec("mobilenet_v2", "mobilenet_v2", "features.18"),
}

_DENSENET169_BLOCKS = (6, 12, 32, 32)


class BackboneError(ValueError):
    """An unknown backbone, cut or precision, or weights that cannot be had."""


def _spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def list_cuts(name: str) -> list[str]:
    """Every valid cut of backbone ``name``, from the input side to the output."""
    _spec(name)
    if name == "densenet169":
        cuts = []
        for b, n_layers in enumerate(_DENSENET169_BLOCKS, start=1):
            cuts += [f"denseblock{b}.denselayer{j}" for j in range(1, n_layers + 1)]
            cuts.append(f"transition{b}" if b < len(_DENSENET169_BLOCKS) else "norm5")
        return cuts
    return [f"features.{i}" for i in range(19)]


def resolve_cut(name: str, cut: str | None) -> str:
    cuts = list_cuts(name)
    cut = cut or _spec(name).default_cut
    if cut not in cuts:
        close = [c for c in cuts if c.split(".")[0] == cut.split(".")[0]][:3] or cuts[-3:]
        raise BackboneError(
            f"unknown cut {cut!r} for {name}; valid cuts look like {', '.join(close)} "
            f"(list all {len(cuts)} with `gradfree cuts --backbone {name}`)."
        )
    return cut


class _PartialDenseBlock(nn.Module):
    """The first ``j`` dense layers of a torchvision ``_DenseBlock``, concatenated."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Extractor(nn.Module):
    """A backbone truncated at ``cut``: ``forward(x: (n, 3, H, W)) -> (n, C, h, w)``."""

    def __init__(self, name: str, cut: str, blocks: list[tuple[str, nn.Module]], weights: str):
        super().__init__()
        self.name = name
        self.cut = cut
        self.weights = weights  # resolved name, e.g. IMAGENET1K_V1, or "none"
        self.weights_loaded = weights != "none"
        self.body = nn.Sequential()
        for block_name, module in blocks:
            self.body.add_module(block_name.replace(".", "_"), module)

    @property
    def blocks(self) -> list[nn.Module]:
        """Top-level blocks in forward order (for unfreezing the last N)."""
        return list(self.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    @property
    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def param_bytes(self) -> int:
        """Bytes of every kept parameter and buffer (BatchNorm statistics included)."""
        tensors = list(self.parameters()) + list(self.buffers())
        return sum(t.numel() * t.element_size() for t in tensors)

    def out_shape(self, image_size: int) -> tuple[int, int, int]:
        """(C, h, w) for square ``image_size`` inputs, by a dry run on the meta device."""
        import copy

        meta = copy.deepcopy(self).to("meta").eval()
        with torch.no_grad():
            y = meta(torch.zeros(1, 3, image_size, image_size, device="meta",
                                 dtype=next(meta.parameters()).dtype))
        return tuple(int(s) for s in y.shape[1:])

    def out_channels(self) -> int:
        return self.out_shape(64)[0]


def _weights_enum(spec: BackboneSpec, weights: str):
    """torchvision's weights entry for ``weights`` (None for random weights).

    ``DEFAULT`` means the best pretrained weights to be had: torchvision's
    default if its checkpoint is cached or can be downloaded, else any other
    ImageNet checkpoint of that model already in the torch hub cache (offline,
    MobileNetV2's IMAGENET1K_V1 file is often the one present).
    """
    import torchvision.models as tvm

    if weights in (None, "none"):
        return None
    enum = tvm.get_model_weights(spec.builder)
    if weights == "DEFAULT":
        cached = [w for w in enum if _cache_path(w).exists()]
        return enum.DEFAULT if (enum.DEFAULT in cached or not cached) else cached[0]
    try:
        return enum[weights]
    except KeyError as err:
        raise BackboneError(f"unknown weights {weights!r} for {spec.name}; choose DEFAULT, "
                            f"none or one of {[w.name for w in enum]}") from err


def _cache_path(w) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)


def resolve_weights(name: str, weights: str = "DEFAULT") -> str:
    """The weights name a run will load (``IMAGENET1K_V1``...) or ``none``."""
    w = _weights_enum(_spec(name), weights)
    return "none" if w is None else w.name


def weights_path(name: str, weights: str = "DEFAULT") -> Path | None:
    """Where torchvision keeps the checkpoint for ``weights`` (None for random weights)."""
    w = _weights_enum(_spec(name), weights)
    return None if w is None else _cache_path(w)


def _base_model(spec: BackboneSpec, weights: str) -> nn.Module:
    import torchvision.models as tvm

    w = _weights_enum(spec, weights)
    if w is None:
        return tvm.get_model(spec.builder, weights=None)
    path = _cache_path(w)
    try:
        return tvm.get_model(spec.builder, weights=w)
    except Exception as err:  # URLError, HTTPError, RuntimeError from hub...
        if path.exists() and path.stat().st_size == 0:
            path.unlink()  # a failed download leaves an empty file behind
        raise BackboneError(
            f"pretrained {spec.name} weights ({w}) are not in {path} and could not be downloaded "
            f"({err.__class__.__name__}: {str(err)[:160]}). Connect once to the internet, or copy "
            f"the file from {w.url} to {path}; or run with --weights none for random weights "
            "(the results then say weights=none)."
        ) from err


def _truncate(spec: BackboneSpec, base: nn.Module, cut: str) -> list[tuple[str, nn.Module]]:
    features = base.features
    if spec.name == "mobilenet_v2":
        last = int(cut.split(".")[1])
        return [(f"features.{i}", features[i]) for i in range(last + 1)]
    # densenet169: features = conv0 norm0 relu0 pool0 denseblock1 transition1 ... denseblock4 norm5
    blocks = []
    head = cut.split(".")[0]
    for child_name, child in features.named_children():
        if child_name == head:
            if "." in cut:
                j = int(cut.split("denselayer")[1])
                layers = [child[f"denselayer{i}"] for i in range(1, j + 1)]
                blocks.append((cut, _PartialDenseBlock(layers)))
            else:
                blocks.append((child_name, child))
            break
        blocks.append((child_name, child))
    return blocks


def build_base(name: str, weights: str = "DEFAULT") -> nn.Module:
    """The whole torchvision model (for tests and for cutting several times)."""
    return _base_model(_spec(name), weights)


def truncate(name: str, base: nn.Module, cut: str | None, weights: str = "none") -> Extractor:
    """``base`` cut at ``cut``: the Extractor shares (not copies) the kept layers."""
    spec = _spec(name)
    cut = resolve_cut(name, cut)
    return Extractor(name, cut, _truncate(spec, base, cut), weights)


def check_precision(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype for ``precision``, after checking that ``device`` can run a conv in it."""
    if precision not in PRECISIONS:
        raise BackboneError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
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
) -> Extractor:
    """The backbone ``name`` truncated at ``cut``, in eval mode, on ``device`` in ``precision``."""
    spec = _spec(name)
    cut = resolve_cut(name, cut)
    dtype = check_precision(precision, device)
    base = _base_model(spec, weights)
    ext = truncate(name, base, cut, resolve_weights(name, weights))
    del base  # drop the layers past the cut
    ext = ext.to(device=device, dtype=dtype).eval()
    if torch.device(device).type == "cuda":
        ext = ext.to(memory_format=torch.channels_last)
    for p in ext.parameters():
        p.requires_grad_(False)
    return ext


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
    the extractor's dtype (fp16/bf16 halve their memory) on ``device``.

    Throughput: the network runs channels-last (oneDNN on CPU and cuDNN both run
    these convnets faster in NHWC; measured 1.3-2x for MobileNetV2 on CPU), and the
    next batch is prepared while the current one runs: on CUDA its uint8 pixels are
    staged in pinned memory and copied and normalised on a side stream, on CPU a
    worker thread converts it. The flattened features keep the (C, h, w) order.
    """
    from tqdm.auto import tqdm

    dtype = next(ext.parameters()).dtype
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
    from benchmarks.data import to_float

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
