"""Cut points read from a torchvision model's own module tree, and the layers a cut keeps.

Every torchvision classification model runs its trunk as a chain of children
(``features``, or ``conv1 ... layer4``, or ``stem`` + ``trunk_output``), then a head
(``avgpool``, ``classifier``, ``fc``, ``heads``, ...). :func:`layout` walks that chain
into *units*, the blocks a person would cut after:

* a container whose children include a block (a ``Sequential`` of Bottlenecks, MBConvs,
  CNBlocks, Swin blocks, RegNet stages...) is expanded into its children, recursively;
  the whole trunk is always expanded (VGG's ``features`` is a chain of plain layers);
* a container of plain layers only (``Conv2dNormActivation``, ConvNeXt's downsampling,
  Swin's patch embedding) is one unit;
* among plain layers, no cut falls between a layer and the norm, activation or dropout
  that follows it (VGG is cut after each ReLU and each pool, not after a bare conv).

Cut names are module paths of the model (``layer3.1``, ``features.5.2``,
``trunk_output.block2.block2-0``, ``encoder.layers.encoder_layer_5``), as in
``torchvision.models.feature_extraction.get_graph_node_names``; a container's path is an
alias of the last cut inside it (``layer4`` -> ``layer4.2``). Three families are read
with a rule of their own:

* DenseNet: cut after each dense layer of each dense block (the block's concatenation so
  far, as Keras' ``convB_blockJ_concat`` in the seed experiments), after each transition
  and at ``norm5``, named relative to ``features`` and without the stem: the names of the
  committed results (DenseNet169's 86 cuts, MobileNetV2's 19 ``features.N``);
* ViT: after each encoder layer and at the final ``encoder.ln``; the patch embedding runs
  at any square size (position embeddings interpolated bicubically, as timm does);
* GoogLeNet and Inception v3 keep their ``transform_input`` step in front of the cut.

Backbones from outside torchvision are families of their own, each a module providing
:data:`BACKBONE_MODULE`: built in (:data:`EXTERNAL`: EfficientNet-Lite0, :mod:`benchmarks.core.efficientnet`,
behind an optional extra) or installed as a plugin (an entry point in the group ``gradfree.backbones``
naming such a module); their module builds the model, reads its cuts and loads its weights, and
everything else treats them alike.

Transformers give token maps; a cut may name how they become features, ``CUT:READOUT``:
ViT ``cls`` (the class token, default), ``mean`` (mean over patch tokens) or ``map``
(patch tokens as a (D, h, w) map, flattened like a CNN's); Swin ``map`` (default) or
``mean``. Every extractor returns ``(n, C, h, w)``, so pooling and flattening downstream
work alike for all of them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from dataclasses import dataclass

from torch import nn

from benchmarks.core.cut_modules import InceptionInput, PartialDenseBlock, Readout, ViTEmbed
from benchmarks.core.plugins import Group, PluginError


class BackboneError(ValueError):
    """An unknown backbone, cut or precision, or weights that cannot be had."""


# Children of the model that are its head, not its trunk (torchvision's names).
_HEAD = {"avgpool", "classifier", "fc", "heads", "head", "dropout", "flatten", "permute",
         "AuxLogits", "aux1", "aux2"}
# Built without weights: torchvision's own init (no FutureWarning) and no auxiliary heads.
RANDOM_INIT_KWARGS = {"googlenet": {"init_weights": True, "aux_logits": False},
                      "inception_v3": {"init_weights": True, "aux_logits": False}}
#: Built-in backbones from outside torchvision: name -> the module that builds them (its
#: package is an optional extra, imported only when the backbone is used).
EXTERNAL = {"efficientnet_lite0": "benchmarks.core.efficientnet"}
#: What a module building backbones from outside torchvision provides (:mod:`benchmarks.core.efficientnet`
#: is one): its family's name, the model with random weights, its units and cuts, and its weights.
BACKBONE_MODULE = ("FAMILY", "build", "layout", "resolve_weights", "weights_path", "weights_table", "base_model")


def _check_backbone_module(module, where: str):
    missing = [a for a in BACKBONE_MODULE if not hasattr(module, a)]
    if missing:
        raise PluginError(f"{where} is not a gradfree backbone module: it lacks {', '.join(missing)} "
                          f"(see benchmarks/core/cuts.py, BACKBONE_MODULE, and benchmarks/core/efficientnet.py).")
    return module


#: Backbones from outside the package: an entry point in the group ``gradfree.backbones`` names a module
#: providing :data:`BACKBONE_MODULE`; the entry point's name is the backbone's.
PLUGINS = Group("gradfree.backbones", "--backbone", _check_backbone_module)
# Readouts per output layout; the first is the default and is left out of the cut's name.
READOUTS = {"nchw": ("map",), "nhwc": ("map", "mean"), "tokens": ("cls", "mean", "map")}
READOUT_HELP = {"cls": "the class token", "mean": "the mean over (patch) tokens",
                "map": "the (C, h, w) map, flattened"}


@dataclass(frozen=True)
class Cut:
    """A cut point: its name, the unit it ends at and, inside a dense block, how many of its layers it keeps."""

    name: str
    unit: int  # index of the last unit it runs
    dense_layers: int = 0  # > 0: only the first dense_layers layers of that dense block


@dataclass
class Layout:
    """A model's trunk as units in forward order, its cuts and the layout of its outputs."""

    units: list[tuple[str, nn.Module]]
    cuts: list[Cut]
    aliases: dict[str, str]
    tokens: str  # nchw (convnets), nhwc (Swin: (n, h, w, C)), tokens (ViT: (n, 1 + h*w, D))

    def cut(self, name: str) -> Cut:
        """The cut named ``name`` exactly (not an alias)."""
        return next(c for c in self.cuts if c.name == name)


def external_names() -> tuple[str, ...]:
    """The backbones not from torchvision: the built-in ones, then the installed plugins."""
    return (*EXTERNAL, *(n for n in PLUGINS.names() if n not in EXTERNAL))


def external(name: str):
    """The module that builds backbone ``name`` when it is not torchvision's (else None)."""
    if name in EXTERNAL:
        return importlib.import_module(EXTERNAL[name])
    if name in PLUGINS.entry_points():
        try:
            return PLUGINS.load(name)
        except PluginError as err:
            raise BackboneError(str(err)) from None
    return None


def family(name: str) -> str:
    """torchvision's module of the model (``resnet``, ``vision_transformer``, ...), or an
    external backbone's family (``efficientnet_lite``)."""
    import torchvision.models as tvm

    if (module := external(name)) is not None:
        return module.FAMILY
    return tvm.get_model_builder(name).__module__.rsplit(".", 1)[1]


@contextlib.contextmanager
def _empty_weights():
    """Parameters and buffers go to the meta device as modules register them: a model's structure
    in milliseconds, no memory. (Not thread-safe: it swaps two nn.Module methods meanwhile.)"""
    reg_p, reg_b = nn.Module.register_parameter, nn.Module.register_buffer

    def register_parameter(self, name, param):
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        reg_p(self, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        reg_b(self, name, None if tensor is None else tensor.to("meta"), persistent=persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = reg_p, reg_b


@functools.lru_cache(maxsize=None)
def skeleton(name: str) -> nn.Module:
    """Model ``name`` with its weights on the meta device, in eval mode (structure, shapes, sizes)."""
    import torchvision.models as tvm

    if (module := external(name)) is not None:
        with _empty_weights():
            return module.build(name).eval()
    with _empty_weights():
        return tvm.get_model(name, weights=None, **RANDOM_INIT_KWARGS.get(name, {})).eval()


@functools.lru_cache(maxsize=None)
def model_names() -> tuple[str, ...]:
    """Every torchvision classification model, then the external backbones, by name."""
    import torchvision.models as tvm

    names = tuple(tvm.list_models(module=tvm))
    return names + tuple(n for n in external_names() if n not in names)


def check_name(name: str) -> str:
    """``name`` if it is a backbone (a torchvision classification model or an external one), else a
    :class:`BackboneError` naming a few of them."""
    if name not in model_names():
        close = [n for n in model_names() if n.startswith(str(name)[:3])][:6] or list(model_names())[:6]
        raise BackboneError(f"unknown backbone {name!r}; the backbones (torchvision's classification "
                            f"models and {', '.join(external_names())}) include "
                            f"{', '.join(close)} (list all {len(model_names())} with `gradfree backbones`).")
    return name


@functools.lru_cache(maxsize=None)
def _skeleton_layout(name: str) -> Layout:
    return layout(name, skeleton(check_name(name)))


def list_cuts(name: str) -> list[str]:
    """Every cut of backbone ``name``, from the input side to the output."""
    return [c.name for c in _skeleton_layout(name).cuts]


def readouts(name: str) -> tuple[str, ...]:
    """The readouts a cut of ``name`` may name (``CUT:READOUT``); the first is the default."""
    return READOUTS[_skeleton_layout(name).tokens]


def resolve_cut(name: str, cut: str | None) -> str:
    """The canonical name of ``cut`` (None: the last cut; an alias: its cut; the default readout dropped)."""
    lay = _skeleton_layout(name)
    cuts = [c.name for c in lay.cuts]
    base, readout = split_readout(cut or cuts[-1])
    base = lay.aliases.get(base, base)
    if base not in cuts:
        close = [c for c in cuts if c.split(".")[0] == base.split(".")[0]][:3] or cuts[-3:]
        raise BackboneError(
            f"unknown cut {cut!r} for {name}; valid cuts look like {', '.join(close)} "
            f"(list all {len(cuts)} with `gradfree cuts --backbone {name}`)."
        )
    allowed = READOUTS[lay.tokens]
    if readout is not None and readout not in allowed:
        choices = ", ".join(f"{r} ({READOUT_HELP[r]})" for r in allowed)
        raise BackboneError(f"unknown readout {readout!r} in cut {cut!r} for {name}; "
                            f"{'choose ' + choices if len(allowed) > 1 else 'its cuts are maps: drop the :' + readout}.")
    return base if readout in (None, allowed[0]) else f"{base}:{readout}"


# ----------------------------------------------------------------------------
# Units and cuts
# ----------------------------------------------------------------------------


def _is_plain(m: nn.Module) -> bool:
    return next(m.children(), None) is None


def _is_chain(m: nn.Module) -> bool:
    """A container that runs its children one after the other."""
    if isinstance(m, nn.Sequential):
        return type(m).forward is nn.Sequential.forward
    return isinstance(m, nn.ModuleList)  # MaxViT's blocks: run in a loop by the model


def _follows(m: nn.Module) -> bool:
    """A norm, activation or dropout: belongs with the layer before it."""
    kind = type(m)
    return (kind.__module__ in ("torch.nn.modules.activation", "torch.nn.modules.dropout")
            or isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm))
            or kind.__name__.endswith("Norm2d"))


def _expand(path: str, m: nn.Module, force: bool, units: list, aliases: dict) -> None:
    if _is_chain(m) and next(m.children(), None) is not None and (
            force or any(not _is_plain(c) for c in m.children())):
        for child_name, child in m.named_children():
            _expand(f"{path}.{child_name}" if path else child_name, child, False, units, aliases)
        if path:
            aliases[path] = units[-1][0]
    else:
        units.append((path, m))


def _chain_cuts(units: list[tuple[str, nn.Module]], first: int = 0) -> list[Cut]:
    cuts = []
    for i in range(first, len(units)):
        mod, nxt = units[i][1], units[i + 1][1] if i + 1 < len(units) else None
        if nxt is not None and _is_plain(mod) and _is_plain(nxt) and _follows(nxt):
            continue  # conv | bn | relu: cut after the relu
        if _is_plain(mod) and _follows(mod) and isinstance(mod, nn.modules.dropout._DropoutNd):
            continue
        cuts.append(Cut(units[i][0], i))
    return cuts


def layout(name: str, model: nn.Module) -> Layout:
    """The units and cuts of ``model`` (torchvision's ``name``), real or a :func:`skeleton`."""
    if (module := external(name)) is not None:
        return module.layout(model)
    fam = family(name)
    if fam == "vision_transformer":
        return _vit_layout(model)
    if fam == "densenet":
        return _densenet_layout(model)
    units, aliases = [], {}
    trunk = [(n, c) for n, c in model.named_children() if n not in _HEAD]
    for child_name, child in trunk:
        _expand(child_name, child, len(trunk) == 1, units, aliases)
    if getattr(model, "transform_input", False):  # GoogLeNet / Inception v3 with ImageNet weights
        units.insert(0, ("transform_input", InceptionInput()))
        cuts = _chain_cuts(units, first=1)
    else:
        cuts = _chain_cuts(units)
    tokens = "nhwc" if fam == "swin_transformer" else "nchw"
    return Layout(units, cuts, {a: t for a, t in aliases.items() if a not in {c.name for c in cuts}}, tokens)


def _densenet_layout(model: nn.Module) -> Layout:
    units = list(model.features.named_children())
    cuts, aliases = [], {}
    for i, (child_name, child) in enumerate(units):
        if child_name.startswith("denseblock"):
            n_layers = len(child)
            cuts += [Cut(f"{child_name}.denselayer{j}", i, j) for j in range(1, n_layers + 1)]
            aliases[child_name] = cuts[-1].name
        elif cuts or child_name.startswith("transition"):
            cuts.append(Cut(child_name, i))
    return Layout(units, cuts, aliases, "nchw")


def _vit_layout(model: nn.Module) -> Layout:
    units = [("embed", ViTEmbed(model))]
    units += [(f"encoder.layers.{n}", layer) for n, layer in model.encoder.layers.named_children()]
    units.append(("encoder.ln", model.encoder.ln))
    cuts = [Cut(n, i) for i, (n, _) in enumerate(units) if i]
    return Layout(units, cuts, {"encoder.layers": cuts[-2].name, "encoder": "encoder.ln"}, "tokens")


def split_readout(cut: str) -> tuple[str, str | None]:
    """``CUT:READOUT`` as ``(CUT, READOUT)``; the readout is None when not given."""
    name, _, readout = cut.partition(":")
    return name, readout or None


def blocks(lay: Layout, cut: Cut) -> list[tuple[str, nn.Module]]:
    """The units ``cut`` runs, in order: the kept layers, shared with the model, not copied."""
    kept = list(lay.units[:cut.unit])
    unit_name, unit = lay.units[cut.unit]
    if cut.dense_layers:
        layers = [unit[f"denselayer{j}"] for j in range(1, cut.dense_layers + 1)]
        kept.append((cut.name, PartialDenseBlock(layers)))
    else:
        kept.append((unit_name, unit))
    return kept


def readout_module(lay: Layout, readout: str | None) -> nn.Module:
    """The module that turns the layout's outputs into ``(n, C, h, w)``: an identity for a convnet, else a
    :class:`Readout` (``readout`` None: the layout's default)."""
    readout = readout or READOUTS[lay.tokens][0]
    return nn.Identity() if lay.tokens == "nchw" else Readout(lay.tokens, readout)
