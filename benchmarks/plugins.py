"""Methods from outside gradfree: installed plugins and classes named by reference.

A method (:mod:`benchmarks.protocol`) need not live in this repository. ``gradfree run --method X``,
a suite's ``method = "X"`` and every command that reads results find ``X`` as

* a built-in method (:data:`benchmarks.methods.REGISTRY`);
* the name of an entry point in the group ``gradfree.methods`` of any installed package
  (``[project.entry-points."gradfree.methods"] nearest-centroid = "my_pkg:NearestCentroid"``);
* ``module.path:Class``, a class in an importable module;
* ``path/to/file.py:Class``, a class in a Python file (made absolute, so a Ray worker or a later
  run finds the same file).

A plugin gets everything a built-in gets: validation, estimates, the clock, results, resuming,
reports and the Ray executor. Its rows name where it came from (``method_source`` in ``extra``:
the installed distribution and its version, or a hash of the file's source), so a changed plugin
is never mistaken for the one that made earlier rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

ENTRY_POINT_GROUP = "gradfree.methods"
#: What a method class must have (see benchmarks.protocol.Method).
REQUIRED = ("name", "Config", "uses_backbone", "is_backprop", "flops", "memory_bytes", "label", "run")


class PluginError(ValueError):
    """A method reference that cannot be loaded, or a class that is not a method."""


def is_reference(name: str) -> bool:
    """``module:Class`` or ``file.py:Class`` (not a bare registry or entry-point name)."""
    return ":" in name


def normalise(name: str) -> str:
    """One spelling of a reference: a file's path made absolute (``~``, ``..`` and links resolved)."""
    if not is_reference(name):
        return name
    where, cls = name.rsplit(":", 1)
    if where.endswith(".py"):
        return f"{Path(where).expanduser().resolve()}:{cls}"
    return name


@lru_cache(maxsize=None)
def entry_points() -> dict[str, metadata.EntryPoint]:
    """The installed ``gradfree.methods`` entry points, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


@lru_cache(maxsize=None)
def load(name: str) -> type:
    """The method class an entry-point name or a reference names, checked (:class:`PluginError`)."""
    if name in entry_points():
        ep = entry_points()[name]
        try:
            cls = ep.load()
        except Exception as err:
            raise PluginError(f"the plugin method {name!r} ({ep.value}, entry point of "
                              f"{ep.dist.name if ep.dist else 'an installed package'}) cannot be loaded: "
                              f"{type(err).__name__}: {err}") from err
        return check(cls, f"entry point {name!r} ({ep.value})")
    if not is_reference(name):
        raise PluginError(name)
    where, attr = name.rsplit(":", 1)
    module = _load_file(where) if where.endswith(".py") else _import(where, name)
    if not hasattr(module, attr):
        raise PluginError(f"--method {name}: {where} has no {attr!r}; its names: "
                          f"{', '.join(n for n in dir(module) if not n.startswith('_'))}.")
    return check(getattr(module, attr), name)


def _import(module: str, name: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise PluginError(f"--method {name}: cannot import {module} ({err}); install the package that "
                          "holds it, or name a file: path/to/file.py:Class.") from err


def _load_file(path: str):
    file = Path(path)
    if not file.is_file():
        raise PluginError(f"--method {path}:...: no such file; give the path of a Python file holding the method.")
    # A module name of its own per file (its path hashed), so two plugins called method.py do not clash.
    mod_name = "gradfree_plugin_" + hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:12]
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[mod_name]
        raise PluginError(f"--method {path}: importing it failed: {type(err).__name__}: {err}") from err
    return module


def check(cls, where: str) -> type:
    """``cls`` if it implements the method protocol, else a :class:`PluginError` naming what is missing."""
    missing = [a for a in REQUIRED if not hasattr(cls, a)]
    if not isinstance(cls, type) or missing:
        raise PluginError(f"{where} is not a gradfree method: it lacks {', '.join(missing) or 'a class'} "
                          "(see benchmarks/protocol.py: name, Config, uses_backbone, is_backprop, flops, "
                          "memory_bytes, label, run).")
    if not dataclasses.is_dataclass(cls.Config):
        raise PluginError(f"{where}: its Config must be a dataclass (frozen, with defaults) of its settings.")
    return cls


def source(cls) -> str:
    """Where a plugin's code came from: ``dist==version`` when an installed distribution holds its module,
    else ``sha1:<12 hex>`` of its source file."""
    top = cls.__module__.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        return f"{dist}=={metadata.version(dist)}"
    file = sys.modules[cls.__module__].__file__ if cls.__module__ in sys.modules else None
    if file and Path(file).is_file():
        return "sha1:" + hashlib.sha1(Path(file).read_bytes()).hexdigest()[:12]
    return "unknown"
