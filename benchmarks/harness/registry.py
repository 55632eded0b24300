"""The registry of methods: the one module that imports their implementations.

Each method implements :class:`benchmarks.core.protocol.Method` (name, Config, uses_backbone,
is_backprop, flops, memory_bytes, label, run). The runner, the cell builder, estimates,
reports and the command line read everything about a method from here; a new method is
one file and one line in :data:`REGISTRY`.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

from baselines.airbench import Airbench
from baselines.finetune import FineTune
from baselines.small_cnn import SmallCNN
from baselines.wrn22 import WRN22OneCycle
from benchmarks.core.plugins import Group
from benchmarks.core.protocol import check_method
from benchmarks.methods.random_features import RandomFeatures

#: name -> method class, in report order (the method under test first).
REGISTRY: dict[str, type] = {m.name: m for m in (RandomFeatures, FineTune, WRN22OneCycle, SmallCNN, Airbench)}

METHOD_NAMES = tuple(REGISTRY)


#: Methods from outside the package: ``gradfree.methods`` entry points, ``module:Class``, ``file.py:Class``.
PLUGINS = Group("gradfree.methods", "--method", check_method)


def get_method(name: str) -> type:
    """The method class registered under ``name``, or a plugin's (:mod:`benchmarks.core.plugins`: an installed
    ``gradfree.methods`` entry point, ``module:Class`` or ``path/to/file.py:Class``)."""
    if (found := PLUGINS.find(name, REGISTRY)) is not None:
        return found
    raise ValueError(f"unknown method {name!r}; choose one of: {', '.join([*REGISTRY, *PLUGINS.names()])}, or "
                     "name a class: module:Class or path/to/file.py:Class.")


def backbone_methods() -> tuple[str, ...]:
    """Methods that use the cell's backbone, cut, weights and precision axes."""
    return tuple(n for n, m in REGISTRY.items() if m.uses_backbone)


def backprop_methods() -> tuple[str, ...]:
    """Methods that train by backpropagation."""
    return tuple(n for n, m in REGISTRY.items() if m.is_backprop)


def config_fields(method: str) -> dict[str, dataclasses.Field]:
    """The fields of ``method``'s Config, by name; a ``ValueError`` for an unknown method."""
    return {f.name: f for f in dataclasses.fields(get_method(method).Config)}


def make_config(method_cls: type, options: dict[str, Any]) -> Any:
    """Build ``method_cls.Config`` from ``options``, ignoring keys it does not have
    (so that rows of several methods, or an older version, can be read back)."""
    cfg_fields = {f.name for f in dataclasses.fields(method_cls.Config)}
    kwargs = {k: v for k, v in options.items() if k in cfg_fields and v is not None}
    return method_cls.Config(**kwargs)


def lenient_config(method_cls: type, options: dict[str, Any]) -> Any:
    """The Config's defaults with ``options`` over them, unchecked (no ``__post_init__``): to label the rows
    of another version, whose options this Config may refuse. Never to run."""
    values = {f.name: getattr(method_cls.Config(), f.name) for f in dataclasses.fields(method_cls.Config)}
    return types.SimpleNamespace(**{**values, **{k: v for k, v in options.items() if k in values}})


def label(method: str, options: dict[str, Any]) -> str:
    """The method's short name for the configuration ``options`` make (a row's ``method_config``); the bare
    name for a method that cannot be had, and for options this version's Config refuses."""
    try:
        return get_method(method).label(make_config(get_method(method), options))
    except Exception:  # (a plugin not installed here, or rows of another version)
        return method
