"""One model of every torchvision family, random weights, tiny images: every listed cut builds,
its output equals the full network's at that module in a real forward, its declared shape is
that output's, and it keeps exactly the parameters of the modules that forward ran to get there.

The oracle is the unmodified torchvision model: forward hooks record each module's output and
the order in which modules start and finish, so "the parameters a cut needs" is read from the
real forward, not from the cut code. The whole list is ``slow``; a sample of small families
(some of their cuts) always runs.
"""

from __future__ import annotations

import re

import pytest
import torch
import torchvision.models as tvm

from benchmarks.core.backbones import build_backbone, extract_features, list_cuts, resolve_cut, truncate
from benchmarks.core.cuts import RANDOM_INIT_KWARGS, family
from tiny_data import restore_torch_threads, tiny_cifar10  # noqa: F401 (autouse fixture: --threads 1)

pytestmark = pytest.mark.usefixtures("one_thread")

# name -> input size: the smallest the whole network takes (torchvision's min_size), 32 px at least.
FAMILIES = {
    "alexnet": 63, "vgg11": 32, "resnet18": 32, "inception_v3": 75, "googlenet": 32, "densenet121": 32,
    "mobilenet_v2": 32, "mobilenet_v3_small": 32, "efficientnet_b0": 32, "regnet_x_400mf": 32,
    "convnext_tiny": 32, "vit_b_16": 32, "swin_t": 32, "shufflenet_v2_x0_5": 32, "squeezenet1_1": 32,
    "mnasnet0_5": 32,
}
# The fast sample: small families, every other cut (the first and the last always).
SAMPLE = ("mobilenet_v3_small", "resnet18", "squeezenet1_1")


def _base(name: str, size: int) -> torch.nn.Module:
    kwargs = dict(RANDOM_INIT_KWARGS.get(name, {}))
    if family(name) == "vision_transformer":
        kwargs["image_size"] = size  # the full ViT asserts its input size; the extractor takes any
    torch.manual_seed(0)
    return tvm.get_model(name, weights=None, **kwargs).eval()


class _Trace:
    """One real forward of the full model: each module's output, input, and the order in which
    modules started and finished."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor):
        self.outputs, self.inputs, self.started, self.finished = {}, {}, [], {}
        names = {m: n for n, m in model.named_modules()}
        handles = []
        for m, n in names.items():
            handles.append(m.register_forward_pre_hook(lambda mod, inp, n=n: self._start(n, inp)))
            handles.append(m.register_forward_hook(lambda mod, inp, out, n=n: self._finish(n, out)))
        with torch.no_grad():
            model(x)
        for h in handles:
            h.remove()
        self.modules = dict(model.named_modules())

    def _start(self, name, inp):
        self.started.append(name)
        self.inputs.setdefault(name, tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in inp))

    def _finish(self, name, out):
        # a copy: the model may change it in place afterwards (DenseNet's F.relu(features, inplace=True))
        self.outputs[name] = out.clone() if isinstance(out, torch.Tensor) else out
        self.finished[name] = len(self.started)

    def params_before(self, path: str) -> int:
        """Parameters of every module that started before ``path`` finished: its own, and those of
        its children that never run as modules (attention's projections, read as weights by
        ``F.multi_head_attention_forward`` and Swin's window attention)."""
        ran, ever = set(self.started[: self.finished[path]]), set(self.started)
        owners = [self.modules[n] for n in ran]
        owners += [child for n in ran for c, child in self.modules[n].named_children() if f"{n}.{c}".lstrip(".") not in ever]
        seen, total = set(), 0
        for i, m in enumerate(owners):
            for p in (m.parameters(recurse=False) if i < len(ran) else m.parameters()):
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
        return total


def _expected(name: str, cut: str, trace: _Trace) -> tuple[torch.Tensor, str]:
    """The full network's value at ``cut`` and the module path that produced it."""
    if family(name) == "densenet":
        match = re.fullmatch(r"(denseblock\d+)\.denselayer(\d+)", cut)
        path = f"features.{cut}"
        if match:  # the block's input and its first j layers' new features, concatenated
            block, j = f"features.{match[1]}", int(match[2])
            parts = [trace.inputs[block][0]] + [trace.outputs[f"{block}.denselayer{i}"] for i in range(1, j + 1)]
            return torch.cat(parts, 1), path
        return trace.outputs[path], path
    return trace.outputs[cut], cut


def _check_model(name: str, every: int = 1) -> None:
    size = FAMILIES[name]
    base = _base(name, size)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    trace = _Trace(base, x)
    cuts = list_cuts(name)
    picked = [c for i, c in enumerate(cuts) if i % every == 0 or i == len(cuts) - 1]
    for cut in picked:
        ext = truncate(name, base, cut).eval()
        expected, path = _expected(name, cut, trace)
        with torch.no_grad():
            body = ext.body(x)
            y = ext(x)
        torch.testing.assert_close(body, expected, msg=lambda m: f"{name} {cut}: {m}")
        assert ext.out_shape(size) == tuple(y.shape[1:]), (name, cut)
        assert y.ndim == 4, (name, cut)
        assert ext.param_count == trace.params_before(path), (name, cut)


@pytest.mark.parametrize("name", SAMPLE)
def test_sample_of_families(name):
    _check_model(name, every=2)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in FAMILIES if n not in SAMPLE])
def test_every_family_every_cut(name):
    _check_model(name)


def test_families_cover_every_torchvision_family():
    families = {family(n) for n in tvm.list_models(module=tvm)}
    assert families - {family(n) for n in FAMILIES} <= {"maxvit"}  # MaxViT: 224 px only, see test below


@pytest.mark.slow
def test_every_model_has_cuts_and_resolves_its_last():
    for name in tvm.list_models(module=tvm):
        cuts = list_cuts(name)
        assert cuts and len(set(cuts)) == len(cuts), name
        assert resolve_cut(name, None) == cuts[-1]


def test_maxvit_cuts_at_its_fixed_size():
    cuts = list_cuts("maxvit_t")
    assert cuts == ["stem.0", "stem.1", "blocks.0", "blocks.1", "blocks.2", "blocks.3"]


def test_transformer_readouts():
    ext = build_backbone("vit_b_16", "encoder.layers.encoder_layer_1", "none")
    imgs = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    assert ext.out_shape(48) == (768, 1, 1)  # the class token
    tokens = ext.body(torch.zeros(2, 3, 48, 48))
    assert tokens.shape == (2, 1 + 9, 768)  # position embeddings interpolated from 14 x 14 to 3 x 3
    base = _base("vit_b_16", 224)
    for cut, shape in (("encoder.ln", (768, 1, 1)), ("encoder.ln:mean", (768, 1, 1)), ("encoder.ln:map", (768, 3, 3))):
        assert truncate("vit_b_16", base, cut).out_shape(48) == shape
    f = extract_features(ext, imgs, (0.5,) * 3, (0.25,) * 3)
    assert f.shape == (2, 768)
    swin = _base("swin_t", 64)
    assert truncate("swin_t", swin, "features.3").out_shape(64) == (192, 8, 8)
    assert truncate("swin_t", swin, "norm:mean").out_shape(64) == (768, 1, 1)


def test_readout_names_are_canonical_and_checked():
    from benchmarks.core.backbones import BackboneError

    assert resolve_cut("vit_b_16", "encoder.ln:cls") == "encoder.ln"
    assert resolve_cut("vit_b_16", "encoder:mean") == "encoder.ln:mean"
    assert resolve_cut("resnet50", "layer4") == "layer4.2"
    with pytest.raises(BackboneError, match="cls .the class token."):
        resolve_cut("vit_b_16", "encoder.ln:avg")
    with pytest.raises(BackboneError, match="maps"):
        resolve_cut("resnet50", "layer4.2:mean")


# --- End to end: any backbone through `gradfree run`, both sides of the comparison ---
END_TO_END = ("resnet50", "vit_b_16", "convnext_tiny", "efficientnet_b0")


@pytest.fixture(scope="module")
def tiny_folder(cifar10_dir, tmp_path_factory):
    return tiny_cifar10(cifar10_dir, tmp_path_factory.mktemp("tiny-cifar10"), train_per_class=6, test_per_class=3)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["random-features", "finetune"])
@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("name", END_TO_END)
def test_runs_end_to_end(name, where, method, tiny_folder, tmp_path):
    from benchmarks.cli import main
    from benchmarks.harness.results import read_rows

    cuts = list_cuts(name)
    cut = cuts[len(cuts) // 2] if where == "middle" else cuts[-1]
    options = ["--n-components", "256"] if method == "random-features" else ["--epochs", "1"]
    args = ["run", "--backbone", name, "--weights", "none", "--cut", cut, "--method", method,
            "--dataset", f"imagefolder:{tiny_folder}", "--train-per-class", "6", "--test-per-class", "3",
            "--image-size", "32", "--batch-size", "32", "--threads", "1", "--no-progress", "--out", str(tmp_path),
            *options]
    assert main(args) == 0
    row = next(r for r in read_rows(tmp_path / "results.csv") if r["row_type"] == "final")
    assert (row["status"], row["backbone"], row["cut"], row["weights"]) == ("ok", name, cut, "none")
    assert int(row["backbone_param_count"]) == truncate(name, _skeleton(name), cut).param_count
    assert 0.0 <= float(row["test_acc"]) <= 1.0


def _skeleton(name):
    from benchmarks.core.cuts import skeleton

    return skeleton(name)
