"""The projections random features can use: :mod:`projector.projections`'s registry, and projections
from outside the package (an entry point in the group ``gradfree.projections``, ``module:Class`` or
``path/to/file.py:Class``: a scikit-learn transformer taking ``n_components`` and ``seed`` that
declares the record of :data:`projector.projections.RECORD` as class attributes).

``kernel`` is not a projection: it names the exact kernel of ``|X R|^2`` features (k = infinity),
solved in the dual by :class:`projector.kernel.KernelRidgeClassifier` (see
:mod:`benchmarks.methods.random_features`); it is listed with the projections because the
``projection`` setting chooses it.
"""

from __future__ import annotations

from benchmarks.core.plugins import Group, PluginError
from projector.projections import PROJECTIONS, RECORD

KERNEL = "kernel"


def _check(cls, where: str) -> type:
    missing = [a for a in (*RECORD, "fit", "transform") if not hasattr(cls, a)]
    if not isinstance(cls, type) or missing:
        raise PluginError(f"{where} is not a projection gradfree can plan: it lacks {', '.join(missing) or 'a class'} "
                          f"(a scikit-learn transformer declaring {', '.join(RECORD)}; see projector/projections.py).")
    return cls


#: Projections from outside the package.
PLUGINS = Group("gradfree.projections", "--projector", _check)


def projection_names() -> list[str]:
    """What the ``projection`` setting takes: the library's projections, the installed plugins, and
    ``kernel`` (the exact kernel, solved in the dual)."""
    return [*PROJECTIONS, *PLUGINS.names(), KERNEL]


def takes_n_components(name: str) -> bool:
    """Whether the ``projection`` setting ``name`` makes ``n_components`` random features (not ``none``,
    not the kernel; an unknown name: True, refused when the configuration is checked)."""
    if name == KERNEL:
        return False
    try:
        return bool(projection_class(name).takes_n_components)
    except ValueError:
        return True


def projection_class(name: str) -> type:
    """The class of projection ``name`` (a ValueError naming the choices for an unknown one; ``kernel``
    has none)."""
    if (found := PLUGINS.find(name, PROJECTIONS, ValueError)) is not None:
        return found
    raise ValueError(f"unknown projection {name!r}; choose one of: {', '.join(projection_names())}, or name a "
                     "class: module:Class or path/to/file.py:Class.")
