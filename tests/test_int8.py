"""int8 extraction: post-training static quantization of the cut network on the CPU, calibrated on
training images; real kernels, real forwards, compared with the float network it came from."""

from __future__ import annotations

import pytest
import torch

from benchmarks.core.backbones import (PRECISIONS, BackboneError, build_backbone, check_precision, extract_features,
                                  quantize_extractor)
from tiny_data import restore_torch_threads, tiny_cifar10  # noqa: F401 (autouse fixture: --threads 1)

pytestmark = pytest.mark.usefixtures("one_thread")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _images(n, size=32, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _pair(name, cut, weights="none"):
    torch.manual_seed(0)
    fp32 = build_backbone(name, cut, weights)
    torch.manual_seed(0)
    return fp32, build_backbone(name, cut, weights, "int8")


def test_int8_is_a_precision_and_cpu_only():
    assert "int8" in PRECISIONS
    assert check_precision("int8", "cpu") is torch.float32  # the float network it is quantized from
    with pytest.raises(BackboneError, match="CPU only.*fp16 / bf16"):
        check_precision("int8", "cuda")


def test_int8_features_follow_fp32_and_weigh_a_quarter():
    fp32, ext = _pair("resnet18", "layer2.1")
    with pytest.raises(BackboneError, match="quantize_extractor"):
        extract_features(ext, _images(2), MEAN, STD)
    quantize_extractor(ext, _images(64, seed=1), MEAN, STD)  # calibration: other images than the scored ones
    images = _images(8)
    f, ref = extract_features(ext, images, MEAN, STD), extract_features(fp32, images, MEAN, STD)
    assert f.dtype == torch.float32 and f.shape == ref.shape
    assert float(((f > 0) == (ref > 0)).float().mean()) > 0.95
    assert float((f - ref).norm() / ref.norm()) < 0.1
    assert ext.out_shape(32) == fp32.out_shape(32)
    # BatchNorm folds into the convs; weights are int8 (per-channel scales), the first blocks float32.
    assert 0.99 * fp32.param_count < ext.param_count <= fp32.param_count
    assert ext.param_bytes < 0.4 * fp32.param_bytes
    assert ext.dtype_name == "int8" != fp32.dtype_name  # distinct feature-cache entries


def test_pretrained_mobilenet_v2_int8(mobilenet_weights, cifar10_dir, tmp_path):
    from benchmarks.core.data import load_dataset

    data = load_dataset("imagefolder:" + str(tiny_cifar10(cifar10_dir, tmp_path, 12, 4)), None, 64, 12, 4, 0.0)
    fp32, ext = _pair("mobilenet_v2", "features.18", mobilenet_weights)
    quantize_extractor(ext, data.train.images, data.mean, data.std)
    f, ref = (extract_features(e, data.test.images, data.mean, data.std) for e in (ext, fp32))
    assert float(((f > 0) == (ref > 0)).float().mean()) > 0.85


def test_untraceable_networks_say_so():
    ext = build_backbone("vit_b_16", "encoder.layers.encoder_layer_0", "none", "int8")
    with pytest.raises(BackboneError, match="int8 extraction of vit_b_16.*fp32 or bf16"):
        quantize_extractor(ext, _images(4), MEAN, STD)


def test_int8_run_end_to_end(cifar10_dir, tmp_path):
    from benchmarks.harness.cells import make_cell, validate
    from benchmarks.cli import main
    from benchmarks.harness.results import read_rows

    folder = tiny_cifar10(cifar10_dir, tmp_path / "data", 6, 3)
    cell = make_cell({"backbone": "resnet18", "cut": "layer3", "precision": "int8", "weights": "none",
                      "dataset": f"imagefolder:{folder}", "image_size": 32, "device": "cpu"})
    validate(cell)
    assert cell.precision == "int8" and cell.cut == "layer3.1"
    args = ["run", "--backbone", "resnet18", "--cut", "layer3", "--weights", "none", "--precision", "int8",
            "--dataset", f"imagefolder:{folder}", "--train-per-class", "6", "--test-per-class", "3",
            "--image-size", "32", "--n-components", "128", "--device", "cpu", "--threads", "1",
            "--no-progress", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    row = read_rows(tmp_path / "out" / "results.csv")[-1]
    assert (row["status"], row["precision"], row["cut"]) == ("ok", "int8", "layer3.1")
    assert int(row["backbone_bytes"]) < 0.4 * build_backbone("resnet18", "layer3.1", "none").param_bytes
