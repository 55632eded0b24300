"""``perf --sections extraction``: ``extract_features`` images/s against the bare forward
pass of the same extractor and batch on ready, normalised input; channels-last against
NCHW for the bare forward.
"""

from __future__ import annotations

import torch

from benchmarks.data import IMAGENET_MEAN, IMAGENET_STD, to_float
from benchmarks.perf.common import Report, Sizes, alternate

def section_extraction(rep: Report, sz: Sizes, device, weights: str) -> None:
    """extract_features against the bare forward of the same extractor and batch."""
    from benchmarks.backbones import build_backbone, extract_features

    n, px, bs = sz.extract_n, sz.extract_px, min(128, sz.extract_n)
    rep.log(f"extraction: MobileNetV2 features.18, {n} images at {px} px, batch {bs}")
    ext = build_backbone("mobilenet_v2", "features.18", weights=weights, device=device)
    images = torch.randint(0, 256, (n, 3, px, px), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    extract_features(ext, images[:bs], IMAGENET_MEAN, IMAGENET_STD, batch_size=bs, device=device)  # warm-up
    dtype = next(ext.parameters()).dtype
    ready = [to_float(images[s:s + bs], IMAGENET_MEAN, IMAGENET_STD, device, dtype)
             .contiguous(memory_format=torch.channels_last) for s in range(0, n, bs)]

    def bare():
        with torch.inference_mode():
            for x in ready:
                ext(x)

    hot_s, ref_s = alternate(lambda: extract_features(ext, images, IMAGENET_MEAN, IMAGENET_STD, batch_size=bs,
                                                      device=device), bare, device, sz.extract_repeats)
    rep.add("extraction", "extract_features vs bare forward", f"n={n} {px}px batch={bs} channels-last",
            ref_s / hot_s, "extraction_vs_bare_forward", hot_s, "bare forward, same extractor and batch", ref_s,
            note=f"{n / hot_s:.1f} img/s extracting, {n / ref_s:.1f} img/s bare; "
                 f"medians of {sz.extract_repeats} alternated runs")
    nchw = [x.contiguous() for x in ready]
    flat = build_backbone("mobilenet_v2", "features.18", weights=weights, device=device)

    def bare_nchw():
        with torch.inference_mode():
            for x in nchw:
                flat(x)

    cl_s, nchw_s = alternate(bare, bare_nchw, device, sz.repeats)
    rep.add("extraction", "channels-last vs NCHW bare forward", f"n={n} {px}px batch={bs}", nchw_s / cl_s,
            "channels_last_speedup", cl_s, "NCHW bare forward", nchw_s)
