"""``perf --sections extraction``: ``extract_features`` images/s against the bare forward
pass of the same extractor and batch on ready, normalised input; channels-last against
NCHW for the bare forward; and each reduced precision (bf16, fp16, int8) against fp32
extraction of the same images, with how often its sign-encoded features agree with fp32's.

int8 is calibrated on other random images than the timed ones (this section times, it does
not score: ``gradfree run --precision int8`` scores on real data, calibrated on its training
images). A precision the device cannot run is a row saying why, not a failure.
"""

from __future__ import annotations

import torch

from benchmarks.core.data import IMAGENET_MEAN, IMAGENET_STD, to_float
from benchmarks.perf.common import Report, Sizes, alternate

REDUCED_PRECISIONS = ("bf16", "fp16", "int8")

def section_extraction(rep: Report, sz: Sizes, device, weights: str) -> None:
    """extract_features against the bare forward of the same extractor and batch."""
    from benchmarks.core.backbones import build_backbone, extract_features

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
    _precisions(rep, sz, device, weights, images, bs)


def _precisions(rep: Report, sz: Sizes, device, weights: str, images: torch.Tensor, bs: int) -> None:
    """Each reduced precision's extract_features against fp32's, same images, timed alternately."""
    from benchmarks.core.backbones import BackboneError, build_backbone, extract_features

    n, px = images.shape[0], images.shape[-1]
    fp32 = build_backbone("mobilenet_v2", "features.18", weights=weights, device=device)

    def run(ext):
        return lambda: extract_features(ext, images, IMAGENET_MEAN, IMAGENET_STD, batch_size=bs, device=device)

    ref_feats = run(fp32)()
    calib = torch.randint(0, 256, images.shape, generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    for precision in REDUCED_PRECISIONS:
        case, shape = f"{precision} vs fp32 extraction", f"n={n} {px}px batch={bs} MobileNetV2 features.18"
        try:
            ext = build_backbone("mobilenet_v2", "features.18", weights=weights, precision=precision, device=device,
                                 calibration=(calib, IMAGENET_MEAN, IMAGENET_STD) if precision == "int8" else None)
        except BackboneError as err:
            rep.add("extraction", case, shape, note=f"not run: {err}")
            continue
        feats = run(ext)()
        agree = float(((feats > 0) == (ref_feats > 0)).float().mean())
        hot_s, ref_s = alternate(run(ext), run(fp32), device, sz.repeats, warm=False)
        rep.add("extraction", case, shape, ref_s / hot_s, f"{precision}_vs_fp32_extraction", hot_s,
                "fp32 extract_features, same images", ref_s,
                note=f"{n / hot_s:.1f} img/s {precision}, {n / ref_s:.1f} img/s fp32; sign of the features agrees "
                     f"with fp32 on {agree:.1%}; medians of {sz.repeats} alternated runs")
