"""Cells: one configuration to run, built one way for the command line and for suites.

A :class:`Cell` holds the axes of a result (method, dataset, backbone, cut, precision, seed, sizes)
and the method's own options. :func:`make_cell` is the only builder: it takes a flat dict of cell
fields and method options (``gradfree run`` flags or a suite's grid), checks the type of every value,
and normalises it so that what a method does not use cannot make two cells out of one:

* methods that do not use a backbone lose backbone, cut, weights and precision;
* the cut is resolved to its name (``None`` -> the backbone's last cut), and the weights to the
  weights that will be loaded (``DEFAULT``, ``MobileNet_V2_Weights.IMAGENET1K_V1`` and
  ``imagenet1k_v1`` are one network: ``IMAGENET1K_V1`` where that file is the one at hand);
* ``--data-dir`` and an image folder's path are made absolute (``~``, ``..``, links resolved);
* ``0`` images per class means all of them (``None``); options absent from the method's Config
  are dropped, as are options equal to their default, and ``n_components`` when there is no projection.

So ``gradfree run``, ``gradfree run --n-components 10000`` (the default spelled out) and the same
cell in a suite have one :meth:`Cell.key`. The key names the data by what it is, not where it lies: a
named dataset by its name, an image folder by its files and their sizes (:func:`benchmarks.core.datasets.
folder_identity`), never by ``--data-dir`` (that two copies hold the same images is checked when a cell
loads them, :mod:`benchmarks.harness.runner`). :func:`validate` rejects a bad cell before any data is
loaded, and :func:`plan_memory` refuses a cell that cannot fit.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.core.backbones import PRECISIONS, BackboneError, check_quantizable, resolve_cut, resolve_weights
from benchmarks.core.datasets import IMAGEFOLDER, folder_identity, get_dataset
from benchmarks.core.devices import resolve_device  # noqa: F401 (re-exported: the harness's)
from benchmarks.methods.projections import takes_n_components
from benchmarks.harness.registry import REGISTRY, config_fields, get_method, make_config
from benchmarks.core.plugins import normalise
from benchmarks.core.protocol import DEFAULT_BATCH_SIZE, CellShape, planned_memory_bytes
from projector._validation import format_bytes, largest_fitting  # noqa: F401 (format_bytes: re-exported)

#: Seeds are honoured as 32-bit numbers (numpy's and torch's generators, the projections' R).
MAX_SEED = 2**32 - 1

#: Other names accepted for options, in suites and --set.
ALIASES = {"projector": "projection", "k": "n_components", "n_random_features": "n_components"}


class CellError(ValueError):
    """A configuration that cannot be run; the message names the value and the fix."""


@dataclass(frozen=True)
class Cell:
    """One configuration to run; its fields are the result's axes."""

    method: str = "random-features"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    backbone: str = "mobilenet_v2"
    cut: str | None = None
    weights: str = "DEFAULT"
    precision: str = "fp32"
    image_size: int = 96
    train_per_class: int | None = 500
    test_per_class: int | None = 200
    val_fraction: float = 0.2
    #: A fixed validation split of this many images per class, held out once from the training pool (the
    #: same at every size and seed; val_fraction unused), training images drawn from the rest with the seed.
    val_per_class: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    suite: str = ""
    #: What an ``imagefolder:`` dataset holds (:func:`benchmarks.core.datasets.folder_identity`), set by
    #: :func:`make_cell`; the key names the folder by it. Empty for a named dataset.
    data_id: str = ""
    # The method's own options (see each method's Config), as sorted (name, value) pairs.
    options: tuple[tuple[str, Any], ...] = ()

    @functools.cached_property
    def config(self) -> Any:
        """The method's Config of this cell's options, built once (the options stay the key's)."""
        return make_config(get_method(self.method), self.option_dict())

    def option_dict(self) -> dict[str, Any]:
        """The method's options as a dict (held as sorted pairs, so that a cell is hashable)."""
        return dict(self.options)

    def key(self) -> str:
        """A stable hash of what defines the cell (not where or how fast it runs, nor where its data
        lies: an image folder is named by its files, see :func:`benchmarks.core.datasets.folder_identity`)."""
        ident = dataclasses.asdict(self)
        for k in ("threads", "suite", "batch_size", "data_dir", "data_id"):
            ident.pop(k)
        for k, default in _KEYED_WHEN_SET.items():  # fields added later: keys made before them stay
            if ident[k] == default:
                ident.pop(k)
        if self.dataset.startswith(IMAGEFOLDER):
            ident["dataset"] = IMAGEFOLDER + (self.data_id or folder_identity(Path(self.dataset[len(IMAGEFOLDER):])))
        ident["options"] = sorted([list(o) for o in self.options])
        blob = json.dumps(ident, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def data_key(self) -> tuple:
        """What the loaded images depend on (the seed too, when it draws the training subset)."""
        resampled = self.val_per_class is not None and self.train_per_class is not None
        return (self.dataset, self.data_dir, self.image_size, self.train_per_class, self.test_per_class,
                self.val_fraction, self.val_per_class, self.seed if resampled else None)

    @property
    def uses_backbone(self) -> bool:
        """Whether the cell's method uses the backbone, cut, weights and precision axes."""
        return get_method(self.method).uses_backbone


#: Cell fields added after keys were first made, with their default: left out of the key at that default.
_KEYED_WHEN_SET = {"val_per_class": None}

CELL_FIELDS = {f.name: f for f in dataclasses.fields(Cell) if f.name not in ("options", "suite", "data_id")}
_NONE_IF_ZERO = ("train_per_class", "test_per_class", "val_per_class")


def known_keys() -> list[str]:
    """Every cell field and every method option: the keys a suite or --set may use."""
    keys = set(CELL_FIELDS)
    for name in REGISTRY:
        keys |= set(config_fields(name))
    return sorted(keys)


def canonical(table: dict, where, methods=()) -> dict[str, Any]:
    """Aliases resolved, unknown keys rejected with the list of known ones. ``methods``: plugin methods
    whose settings are known too (those the table names itself are added)."""
    out = {}
    named = table.get("method")
    named = [named] if isinstance(named, str) else list(named) if isinstance(named, (list, tuple)) else []
    known = set(known_keys())
    for name in {*methods, *named}:
        if isinstance(name, str) and name not in REGISTRY:
            try:
                known |= set(config_fields(normalise(name)))
            except ValueError:
                pass  # make_cell says why the method cannot be had
    for key, value in table.items():
        key = ALIASES.get(key, key)
        if key not in known:
            raise CellError(f"{where}: unknown axis or setting {key!r}; known: {', '.join(sorted(known))} "
                            f"(aliases: {', '.join(f'{a}={b}' for a, b in ALIASES.items())}).")
        out[key] = value
    return out


def make_cell(values: dict[str, Any], suite_name: str = "") -> Cell:
    """One normalised Cell from a flat dict of cell fields and method options (module docstring)."""
    method = normalise(values.get("method") or Cell.method)  # a plugin's file: one spelling
    try:
        method_cls = get_method(method)
    except ValueError as err:
        raise CellError(str(err)) from None
    values = canonical({**values, "method": method}, "cell")
    # Defaults filled in first, so that a value spelled out and a value left out are one cell.
    fields = {k: f.default for k, f in CELL_FIELDS.items()}
    # (None for a field with a default, e.g. --batch-size left out, keeps the default.)
    fields.update({k: coerce(k, v, CELL_FIELDS[k]) for k, v in values.items()
                   if k in CELL_FIELDS and (v is not None or CELL_FIELDS[k].default is None)})
    for k in _NONE_IF_ZERO:
        if fields.get(k) == 0:
            fields[k] = None
    cfg_fields = config_fields(method)
    options = {k: coerce(k, v, cfg_fields[k]) for k, v in values.items() if k in cfg_fields and v is not None}
    if "batch_size" in cfg_fields and values.get("batch_size") is not None and "batch_size" not in options:
        # A batch size asked for is part of what a trainer is; left out, each keeps its recipe's own
        # (WRN-22's 512, airbench's 1,024; the cell's extraction batch for those without one).
        options["batch_size"] = fields["batch_size"]
    if fields.get("data_dir") is not None:
        fields["data_dir"] = _absolute(fields["data_dir"])
    if fields["dataset"].startswith(IMAGEFOLDER):
        fields["dataset"] = IMAGEFOLDER + _absolute(fields["dataset"][len(IMAGEFOLDER):])
        fields["data_id"] = folder_identity(Path(fields["dataset"][len(IMAGEFOLDER):]))
    else:
        fields["dataset"] = normalise(fields["dataset"])  # a plugin's file: one spelling
        fields["data_id"] = ""
    if method_cls.uses_backbone:
        backbone = fields.get("backbone", Cell.backbone)
        try:
            fields["cut"] = resolve_cut(backbone, fields.get("cut"))
            fields["weights"] = resolve_weights(backbone, fields.get("weights", Cell.weights))
        except BackboneError:
            pass  # validate() reports it with the list of cuts or weights
    else:
        for k in ("backbone", "cut", "weights", "precision"):
            fields.pop(k, None)
    if method == "random-features" and not takes_n_components(options.get("projection", "gaussian")):
        options.pop("n_components", None)
        options.pop("block_size", None)
    defaults = method_cls.Config()
    options = {k: v for k, v in options.items() if v != getattr(defaults, k)}
    try:
        make_config(method_cls, options)
    except (TypeError, ValueError) as err:
        raise CellError(f"{method} with {options}: {err}") from None
    return Cell(**fields, suite=suite_name, options=tuple(sorted(options.items())))


def _absolute(path: str) -> str:
    """``path`` as one spelling: ``~`` expanded, made absolute, symbolic links and ``..`` resolved."""
    return str(Path(path).expanduser().resolve())


def _finite(key: str, value: float) -> float:
    if not math.isfinite(value):
        raise CellError(f"{key} = {value!r}: expected a finite number.")
    return value


def coerce(key: str, value: Any, field: dataclasses.Field) -> Any:
    """A TOML, --set or command-line value to the field's type, or a CellError naming it."""
    # (a string under `from __future__ import annotations`, else the type itself: float, int | None...)
    typ = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    if value is None:
        return None
    if "tuple" in typ:
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            raise CellError(f"{key} = {value!r}: expected a list of numbers.")
        return tuple(_finite(key, float(v)) for v in items)
    if typ.startswith("bool"):
        if not isinstance(value, bool):
            raise CellError(f"{key} = {value!r}: expected true or false.")
        return value
    if typ.startswith("int"):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise CellError(f"{key} = {value!r}: expected a whole number.")
        return value
    if typ.startswith("float"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise CellError(f"{key} = {value!r}: expected a number.")
        return _finite(key, float(value))
    if typ.startswith("str") and not isinstance(value, str):
        raise CellError(f"{key} = {value!r}: expected a string.")
    return value


# ----------------------------------------------------------------------------
# Validation: before any data is loaded
# ----------------------------------------------------------------------------


def validate(cell: Cell) -> None:
    """Reject a bad cell before any data is loaded: unknown names, out-of-range sizes, no room."""
    method_cls = get_method(cell.method)
    get_dataset(cell.dataset)  # a DatasetError naming the choices for an unknown one
    if method_cls.uses_backbone:
        resolve_cut(cell.backbone, cell.cut)
        resolve_weights(cell.backbone, cell.weights)
        if cell.precision not in PRECISIONS:
            raise CellError(f"unknown precision {cell.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if cell.precision == "int8":
            if method_cls.is_backprop:
                raise CellError(f"precision int8 is post-training quantization of the extracted features; "
                                f"{cell.method} trains in fp32 (or with autocast on CUDA): use fp32, fp16 or bf16.")
            if resolve_device(cell.device).type != "cpu":
                raise CellError("precision int8 runs on the CPU only (PyTorch's quantized kernels); use "
                                "--device cpu, or fp16 / bf16 on a GPU.")
            check_quantizable(cell.backbone, cell.cut)
    if cell.image_size < 16:
        raise CellError(f"image size {cell.image_size} is too small; use at least 16 pixels.")
    for name in ("train_per_class", "test_per_class"):
        value = getattr(cell, name)
        if value is not None and value < 1:
            raise CellError(f"{name} = {value}: expected a positive number of images per class, or 0 for all.")
    if cell.val_per_class is not None:
        _check_fixed_validation(cell)
    elif not 0.0 <= cell.val_fraction < 1.0:
        raise CellError(f"val_fraction = {cell.val_fraction}: expected a fraction in [0, 1) "
                        "(the share of each class's training images held out for validation).")
    if cell.val_per_class is None and cell.val_fraction == 0.0 and (method_cls.is_backprop or len(cell.option_dict().get("alphas") or ()) != 1):
        raise CellError(f"{cell.method} selects on the validation split (alpha or the best epoch), so "
                        "val_fraction 0 leaves it nothing to select on; use a fraction above 0"
                        + ("" if method_cls.is_backprop else ", or a single fixed --alphas value") + ".")
    if cell.batch_size < 1:
        raise CellError(f"batch_size = {cell.batch_size}: expected at least 1.")
    cpus = os.cpu_count() or 1
    if cell.threads is not None and not 1 <= cell.threads <= cpus:
        raise CellError(f"threads = {cell.threads}: expected 1 to {cpus}, the CPUs this machine has "
                        "(leave --threads out for torch's default).")
    if not 0 <= cell.seed <= MAX_SEED:
        raise CellError(f"seed = {cell.seed}: expected 0 to {MAX_SEED:,} (seeds are 32-bit numbers; a larger "
                        "one would silently run as its low 32 bits).")
    config = cell.config
    if hasattr(config, "n_components") and takes_n_components(config.projection):
        if config.n_components < 1:
            raise CellError(f"n_components = {config.n_components}: expected at least 1 random feature.")
    device = resolve_device(cell.device)
    plan_memory(cell, device)


def _check_fixed_validation(cell: Cell) -> None:
    if cell.val_per_class < 1:
        raise CellError(f"val_per_class = {cell.val_per_class}: expected a positive number of validation images per "
                        "class (or leave it out for --val-fraction).")
    if cell.dataset.startswith(IMAGEFOLDER):
        return  # counted when the folder is read
    n_classes, full_train, _ = get_dataset(cell.dataset).sizes()
    per_class = full_train // max(n_classes, 1)
    need = cell.val_per_class + (cell.train_per_class or 1)
    if need > per_class:
        raise CellError(f"val_per_class {cell.val_per_class} + train_per_class {cell.train_per_class} exceeds the "
                        f"{per_class:,} training images per class of {cell.dataset}; use at most "
                        f"{per_class - cell.val_per_class:,} training images per class (or 0 for all the rest).")


def cell_shape(cell: Cell, device: torch.device | None = None) -> CellShape:
    """The sizes the cell will load (counted from the folders of an imagefolder dataset)."""
    n_classes, full_train, full_test = get_dataset(cell.dataset).sizes()  # an image folder's counted
    per_class_train = cell.train_per_class
    if cell.val_per_class is not None:  # a fixed validation split held out first, training drawn from the rest
        n_val = cell.val_per_class * n_classes
        n_fit = n_val + (per_class_train * n_classes if per_class_train else max(full_train - n_val, 0))
    else:
        n_fit = per_class_train * n_classes if per_class_train else full_train
        n_val = int(round(n_fit * cell.val_fraction))
    n_test = cell.test_per_class * n_classes if cell.test_per_class else full_test
    from projector.projections import available_memory_bytes

    dev = device if device is not None else resolve_device(cell.device)
    return CellShape(backbone=cell.backbone, cut=cell.cut, image_size=cell.image_size, precision=cell.precision,
                     n_classes=n_classes, n_train=n_fit - n_val, n_val=n_val, n_test=n_test, device=dev.type,
                     free_bytes=available_memory_bytes(dev))


def plan_memory(cell: Cell, device: torch.device, free: int | None = None) -> int:
    """The cell's planned peak memory in bytes; a CellError if it cannot fit in ``free`` bytes
    (default: what ``device`` has free now).

    For a method with ``n_components``, the error names the largest k that fits.
    """
    from projector.projections import available_memory_bytes

    method_cls = get_method(cell.method)
    config = cell.config
    free = available_memory_bytes(device) if free is None else free
    shape = replace(cell_shape(cell, device), free_bytes=free)
    need = planned_memory_bytes(method_cls, config, shape)
    if need <= free:
        return need
    msg = (f"{describe(cell)} needs about {format_bytes(need)} of memory ({shape.n_images} images), "
           f"but {device.type} has {format_bytes(free)} free.")
    if hasattr(config, "n_components") and takes_n_components(config.projection):
        k = largest_fitting(lambda k: planned_memory_bytes(method_cls, replace(config, n_components=k), shape), free)
        msg += (f" The largest number of random features that fits is about k = {k:,}; use --n-components "
                f"{k} or fewer" if k else " Even k = 1 does not fit")
        msg += ", or fewer images (--train-per-class, --test-per-class)."
    else:
        msg += _fewer_images(lambda s: planned_memory_bytes(method_cls, config, s), shape, cell, free)
    raise CellError(msg)


def _fewer_images(need, shape: CellShape, cell: Cell, free: int) -> str:
    """The refusal's advice without a k: the largest --train-per-class whose plan fits in ``free``
    (same validation split and test images), or what else to change when none does."""
    def at(per_class: int) -> CellShape:
        if cell.val_per_class is not None:  # the fixed validation split stays as it is
            return dataclasses.replace(shape, n_train=per_class * shape.n_classes)
        n_fit = per_class * shape.n_classes
        n_val = int(round(n_fit * cell.val_fraction))
        return dataclasses.replace(shape, n_train=n_fit - n_val, n_val=n_val)

    now = -(-(shape.n_train + (0 if cell.val_per_class is not None else shape.n_val)) // max(shape.n_classes, 1))
    per_class = largest_fitting(lambda t: need(at(t)), free)
    if per_class >= now:  # the training images are not what is too large
        return " Use fewer test images (--test-per-class) or a smaller image size (--image-size)."
    if per_class < 1:
        return (" Even one training image per class does not fit: use fewer test images (--test-per-class), "
                "a smaller image size (--image-size) or a machine with more memory.")
    fit = at(per_class)
    return (f" The largest training set that fits is about {per_class:,} images per class "
            f"({fit.n_train + fit.n_val:,} train + validation images, about {format_bytes(need(fit))}): "
            f"use --train-per-class {per_class} or fewer, or fewer test images (--test-per-class).")


def describe(cell: Cell) -> str:
    """One line naming the cell: method, dataset, backbone, cut, precision, options and seed."""
    parts = [cell.method, cell.dataset]
    if cell.uses_backbone:
        parts += [cell.backbone, cell.cut or "(last cut)", cell.precision]
    parts += [f"{k}={v}" for k, v in cell.options]
    return " ".join(str(p) for p in parts) + f" seed={cell.seed}"
