"""DenseNet169 and MobileNetV2, whose cut names committed results use: each cut's declared shape and
parameter count, same output as the full net; the registry, weights names and errors, precisions."""

import pytest
import torch

from benchmarks.core.backbones import (BACKBONES, BackboneError, build_backbone, build_base, check_precision,
                                  list_cuts, resolve_cut, truncate)

SIZE = 64
DENSE_SIZE = 32  # the smallest input DenseNet169 keeps a map for: 1 x 1 after transition3

# --- DenseNet169, declared from the architecture (growth 32, bottleneck 128, blocks 6-12-32-32) ---
_GROWTH, _BOTTLENECK, _BLOCKS = 32, 128, (6, 12, 32, 32)


def _densenet_layer_params(c):
    return 2 * c + c * _BOTTLENECK + 2 * _BOTTLENECK + _BOTTLENECK * _GROWTH * 9


def densenet169_declared(cut: str, size: int):
    params = 3 * 64 * 49 + 2 * 64  # conv0, norm0
    c = 64
    h = (size + 6 - 7) // 2 + 1  # conv0 stride 2
    h = (h + 2 - 3) // 2 + 1  # pool0
    for b, n in enumerate(_BLOCKS, start=1):
        for j in range(1, n + 1):
            params += _densenet_layer_params(c)
            c += _GROWTH
            if cut == f"denseblock{b}.denselayer{j}":
                return (c, h, h), params
        if b < len(_BLOCKS):
            params += 2 * c + c * (c // 2)
            c //= 2
            h //= 2
            if cut == f"transition{b}":
                return (c, h, h), params
    params += 2 * c
    assert cut == "norm5"
    return (c, h, h), params


# --- MobileNetV2: channels and strides of torchvision's features.N ---
_MBV2_CHANNELS = [32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320, 1280]
_MBV2_STRIDE2 = {0, 2, 4, 7, 14}


def mobilenet_v2_declared_shape(cut: str, size: int):
    i = int(cut.split(".")[1])
    h = size
    for k in range(i + 1):
        if k in _MBV2_STRIDE2:
            h = (h + 1) // 2
    return (_MBV2_CHANNELS[i], h, h)


@pytest.fixture(scope="module")
def bases():
    return {name: build_base(name, "none").eval() for name in ("densenet169", "mobilenet_v2")}


def _hook_outputs(base, names, x):
    outs, handles = {}, []
    modules = dict(base.features.named_modules())
    for name in names:
        handles.append(modules[name].register_forward_hook(lambda m, i, o, n=name: outs.__setitem__(n, o)))
    with torch.no_grad():
        base.features(x)
    for h in handles:
        h.remove()
    return outs


def test_committed_cut_names_are_unchanged():
    # Read from the models' module trees now; the names (and so the results' cell keys) are the old ones.
    densenet = []
    for b, n_layers in enumerate(_BLOCKS, start=1):
        densenet += [f"denseblock{b}.denselayer{j}" for j in range(1, n_layers + 1)]
        densenet.append(f"transition{b}" if b < len(_BLOCKS) else "norm5")
    assert list_cuts("densenet169") == densenet and len(densenet) == 86
    assert list_cuts("mobilenet_v2") == [f"features.{i}" for i in range(19)]
    assert BACKBONES["densenet169"].default_cut == "norm5"
    assert BACKBONES["mobilenet_v2"].default_cut == "features.18"


def test_every_torchvision_classification_model_is_a_backbone():
    import torchvision.models as tvm

    assert list(BACKBONES) == tvm.list_models(module=tvm) + ["efficientnet_lite0"]  # + the built-in extra
    assert BACKBONES["resnet50"].family == "resnet" and "vit_b_16" in BACKBONES
    with pytest.raises(BackboneError, match="gradfree backbones"):
        list_cuts("resnet9000")


@pytest.mark.parametrize("cut", list_cuts("densenet169"))
def test_densenet169_every_cut(bases, cut):
    base = bases["densenet169"]
    ext = truncate("densenet169", base, cut)
    shape, params = densenet169_declared(cut, DENSE_SIZE)
    assert ext.out_shape(DENSE_SIZE) == shape
    assert ext.param_count == params
    x = torch.randn(2, 3, DENSE_SIZE, DENSE_SIZE)
    with torch.no_grad():
        y = ext(x)
    assert tuple(y.shape[1:]) == shape
    # Same numbers as the full network at that point.
    block = cut.split(".")[0]
    if "." in cut:
        j = int(cut.split("denselayer")[1])
        names = [block] + [f"{block}.denselayer{i}" for i in range(1, j + 1)]
        outs = _hook_outputs(base, names, x)
        block_out = outs[block]
        # a dense block outputs [its input, layer 1, ..., layer n]; ours stops after layer j
        c_in = block_out.shape[1] - _GROWTH * _BLOCKS[int(block[-1]) - 1]
        expected = torch.cat([block_out[:, :c_in]] + [outs[n] for n in names[1:]], 1)
        torch.testing.assert_close(y, expected)
    else:
        torch.testing.assert_close(y, _hook_outputs(base, [block], x)[block])


@pytest.mark.parametrize("cut", list_cuts("mobilenet_v2"))
def test_mobilenet_v2_every_cut(bases, cut):
    base = bases["mobilenet_v2"]
    ext = truncate("mobilenet_v2", base, cut)
    i = int(cut.split(".")[1])
    assert ext.out_shape(SIZE) == mobilenet_v2_declared_shape(cut, SIZE)
    declared = sum(p.numel() for k in range(i + 1) for p in base.features[k].parameters())
    assert ext.param_count == declared
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(ext(x), base.features[: i + 1](x))


def test_full_cut_keeps_no_classifier(bases):
    ext = truncate("mobilenet_v2", bases["mobilenet_v2"], None)
    full = sum(p.numel() for p in bases["mobilenet_v2"].parameters())
    classifier = sum(p.numel() for p in bases["mobilenet_v2"].classifier.parameters())
    assert ext.param_count == full - classifier


def test_unknown_cut_names_the_fix():
    with pytest.raises(BackboneError, match="gradfree cuts --backbone densenet169"):
        resolve_cut("densenet169", "denseblock3.denselayer99")
    with pytest.raises(BackboneError, match="unknown backbone"):
        resolve_cut("resnet9000", None)


def test_unknown_precision():
    with pytest.raises(BackboneError, match="choose one of"):
        check_precision("fp8", "cpu")


def test_pretrained_weights_load_and_differ_from_random(mobilenet_weights):
    pre = build_backbone("mobilenet_v2", "features.2", "DEFAULT")
    rnd = build_backbone("mobilenet_v2", "features.2", "none")
    assert pre.weights == mobilenet_weights and rnd.weights == "none"
    assert not torch.equal(pre.blocks[0][0].weight, rnd.blocks[0][0].weight)
    assert not any(p.requires_grad for p in pre.parameters())


def test_missing_weights_give_a_clear_error(monkeypatch, tmp_path, capsys):
    # An empty hub cache and no network: DenseNet169 weights cannot be had.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import torch.hub as hub

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(hub, "download_url_to_file", offline)
    with pytest.raises(BackboneError, match="--weights none") as err:
        build_backbone("densenet169", "transition1", "DEFAULT")
    assert "densenet169-b2777c0a.pth" in str(err.value) and str(tmp_path / "checkpoints") in str(err.value)
    assert "downloading https://" in capsys.readouterr().err  # the attempt is announced, not silent


def test_offline_never_tries_the_network(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("GRADFREE_OFFLINE", "1")
    import torch.hub as hub

    def network(*a, **k):
        raise AssertionError("tried the network")

    monkeypatch.setattr(hub, "download_url_to_file", network)
    with pytest.raises(BackboneError, match=r"resnet50-11ad3fa6\.pth.*GRADFREE_OFFLINE.*--weights none"):
        build_backbone("resnet50", "layer1.0", "IMAGENET1K_V2")


def test_weights_names():
    from benchmarks.core.backbones import resolve_weights

    assert resolve_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V1") == "IMAGENET1K_V1"
    assert resolve_weights("resnet50", "none") == "none"
    with pytest.raises(BackboneError, match="IMAGENET1K_V2"):
        resolve_weights("resnet50", "IMAGENET9K")


def test_cuts_and_backbones_commands(capsys):
    from benchmarks.cli import main

    assert main(["cuts", "--backbone", "resnet50", "--shapes"]) == 0
    out = capsys.readouterr().out
    assert "layer3.5" in out and "(2048, 7, 7)" in out and "23,508,032" in out  # resnet50 less avgpool and fc
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "vit_b_16" in out and "ViT" not in out and "IMAGENET1K_SWAG_E2E_V1" in out
    assert main(["backbones", "--cached"]) == 0


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_extraction(precision):
    from benchmarks.core.backbones import extract_features

    ext = build_backbone("mobilenet_v2", "features.3", "none", precision)
    imgs = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    f = extract_features(ext, imgs, (0.5,) * 3, (0.25,) * 3, batch_size=2)
    assert f.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    ref = extract_features(build_backbone("mobilenet_v2", "features.3", "none"), imgs, (0.5,) * 3, (0.25,) * 3)
    assert f.shape == ref.shape
