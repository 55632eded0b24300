"""Things from outside gradfree: entry points of installed packages, and objects named by reference.

One mechanism for every kind of registered thing (methods, datasets, backbones, projections): a
:class:`Group` is an entry-point group (``gradfree.methods``, ``gradfree.datasets``,
``gradfree.backbones``, ``gradfree.projections``) plus the check a loaded object must pass. A name
is found as

* the name of an entry point of the group in any installed package
  (``[project.entry-points."gradfree.methods"] nearest-centroid = "my_pkg:NearestCentroid"``);
* ``module.path:attr``, an object in an importable module;
* ``path/to/file.py:attr``, an object in a Python file (made absolute by :func:`normalise`, so a Ray
  worker or a later run finds the same file).

The built-ins are the registries' (:mod:`benchmarks.harness.registry`, :mod:`benchmarks.core.datasets`,
:mod:`benchmarks.core.cuts`, :mod:`projector.projections`); each asks its group only for names it
does not hold. A loaded object's rows name where it came from (:func:`source`): the installed
distribution and its version, or a hash of the file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from functools import lru_cache
from importlib import metadata
from pathlib import Path

_MODULE = re.compile(r"^[A-Za-z_][\w.]*$")


class PluginError(ValueError):
    """A reference that cannot be loaded, or an object that is not what its group needs."""


def is_reference(name: str) -> bool:
    """``module:attr`` or ``file.py:attr`` (not a bare registry or entry-point name, and not a
    built-in prefix such as ``imagefolder:PATH``, whose left side names no module)."""
    if ":" not in name:
        return False
    where = name.rsplit(":", 1)[0]
    return where.endswith(".py") or bool(_MODULE.match(where))


def normalise(name: str) -> str:
    """One spelling of a reference: a file's path made absolute (``~``, ``..`` and links resolved)."""
    if not is_reference(name):
        return name
    where, attr = name.rsplit(":", 1)
    if where.endswith(".py"):
        return f"{Path(where).expanduser().resolve()}:{attr}"
    return name


@lru_cache(maxsize=None)
def _entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=group)}


class Group:
    """The plugins of one kind. ``check(obj, where)`` returns ``obj`` or raises :class:`PluginError`;
    ``flag`` is how a user names one (``--method``) in messages."""

    def __init__(self, group: str, flag: str, check: Callable[[object, str], object]):
        self.group, self.flag, self._check = group, flag, check
        self._loaded: dict[str, object] = {}

    def entry_points(self) -> dict[str, metadata.EntryPoint]:
        """The installed entry points of the group, by name."""
        return _entry_points(self.group)

    def names(self) -> list[str]:
        """The names of the group's installed entry points, sorted."""
        return sorted(self.entry_points())

    def knows(self, name: str) -> bool:
        """Whether ``name`` is an entry point's name or a reference (loading may still fail)."""
        return name in self.entry_points() or is_reference(name)

    def find(self, name: str, builtins, error: type[Exception] = PluginError) -> object | None:
        """The built-in ``builtins[name]``, else the plugin ``name`` names; None for a bare name that is
        neither (the caller names the choices). A plugin that exists but cannot be loaded, or is not one:
        ``error`` (the caller's kind of error) with the reason."""
        if name in builtins:
            return builtins[name]
        try:
            return self.load(name)
        except PluginError as err:
            if str(err) != name:
                raise (err if error is PluginError else error(str(err))) from None
        return None

    def load(self, name: str) -> object:
        """The object an entry-point name or a reference names, checked. A bare name that is
        neither: ``PluginError(name)`` (the registry then says what the built-ins are)."""
        if name not in self._loaded:
            self._loaded[name] = self._load(name)
        return self._loaded[name]

    def _load(self, name: str) -> object:
        if name in self.entry_points():
            ep = self.entry_points()[name]
            try:
                obj = ep.load()
            except Exception as err:
                raise PluginError(f"the plugin {name!r} ({ep.value}, a {self.group} entry point of "
                                  f"{ep.dist.name if ep.dist else 'an installed package'}) cannot be loaded: "
                                  f"{type(err).__name__}: {err}") from err
            return self._check(obj, f"entry point {name!r} ({ep.value})")
        if not is_reference(name):
            raise PluginError(name)
        where, attr = name.rsplit(":", 1)
        module = self._load_file(where) if where.endswith(".py") else self._import(where, name)
        if not hasattr(module, attr):
            raise PluginError(f"{self.flag} {name}: {where} has no {attr!r}; its names: "
                              f"{', '.join(n for n in dir(module) if not n.startswith('_'))}.")
        return self._check(getattr(module, attr), name)

    def _import(self, module: str, name: str):
        try:
            return importlib.import_module(module)
        except ImportError as err:
            raise PluginError(f"{self.flag} {name}: cannot import {module} ({err}); install the package that "
                              "holds it, or name a file: path/to/file.py:Name.") from err

    def _load_file(self, path: str):
        file = Path(path)
        if not file.is_file():
            raise PluginError(f"{self.flag} {path}:...: no such file; give the path of a Python file.")
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
            raise PluginError(f"{self.flag} {path}: importing it failed: {type(err).__name__}: {err}") from err
        return module


def source(obj) -> str:
    """Where a plugin's code came from: ``dist==version`` when an installed distribution holds its
    module, else ``sha1:<12 hex>`` of its source file."""
    module_name = obj.__name__ if isinstance(obj, type(sys)) else obj.__module__
    top = module_name.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        return f"{dist}=={metadata.version(dist)}"
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if file and Path(file).is_file():
        return "sha1:" + hashlib.sha1(Path(file).read_bytes()).hexdigest()[:12]
    return "unknown"
