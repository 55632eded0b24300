"""Per-epoch checkpoints of a cell, so that a cell longer than a working session survives being stopped.

The runner gives each cell a :class:`CellCheckpoint` (``ctx.checkpoint``) in
``OUT/checkpoints/<cell_key>/`` when that folder is reachable (in this process, or a Ray worker
on the driver's machine; None otherwise: the cell then restarts from scratch). A trainer saves,
after every epoch, everything its next epoch depends on: model, optimizer, scheduler and loss
scaler state, the torch (CPU and CUDA), NumPy and Python random states and its data-order
generator, the epoch reached, the best-so-far epoch and weights (early stopping), the epoch rows
emitted so far and the clock's phases (:meth:`benchmarks.core.timing.Clock.state`). A training made of
several runs (a learning-rate grid, then the chosen rate) keeps one file per run, a *stage*
(``grid0.pt``, ``grid1.pt``, ..., ``main.pt``); a finished stage's file stays, so that a resumed
grid replays the runs already done instead of training them again.

When the cell starts again (the same command, after a Ctrl-C, a SIGTERM or a lost machine), each
stage resumes after its last saved epoch: the clock is set back to the phases it had counted then
(time before the stop + time after it, nothing counted twice; the work of an epoch cut short is
lost and done again, off the record), the random states too, so that the curve is the one an
uninterrupted run draws (bitwise on CPU with one thread; on CUDA as close as two uninterrupted
runs are, since cuDNN's autotuned kernels are not bitwise deterministic), and the stage's epoch
rows are emitted again, under the
new run's id: the stopped attempt's rows are set aside to ``results.interrupted.csv`` when the
folder is next claimed (:mod:`benchmarks.harness.results`), so ``results.csv`` holds each epoch once.

A checkpoint names its cell key and a hash of what the cell ran with (resolved configuration,
data fingerprint, device, torch version); one that does not match, or cannot be read, is
discarded with a warning, never trusted. Files are written atomically (:mod:`benchmarks.core.atomic`)
and read with ``torch.load(weights_only=True)``. The runner deletes the folder when the cell
finishes, ok or failed.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.core.atomic import atomic_write_bytes

FORMAT = 1
FOLDER = "checkpoints"
#: A file in ``OUT/checkpoints/`` naming the run that owns it: a Ray worker checkpoints only where it reads it.
OWNER_FILE = ".run_id"


class CheckpointWarning(UserWarning):
    """A checkpoint was found but not used (another cell's, another configuration's, or unreadable)."""


def config_hash(**parts) -> str:
    """A short hash of what a checkpoint must have been made with to be resumed from."""
    return hashlib.sha256(_made_with(parts).encode()).hexdigest()[:16]


def _made_with(parts: dict) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def _differences(saved: str | None, now: str | None) -> str:
    """What differs between two :func:`_made_with` texts, one level into nested settings (``config.eval_every:
    4, the checkpoint's None``); '' when either is unknown (a checkpoint written before they were kept)."""
    try:
        old, new = json.loads(saved), json.loads(now)
    except (TypeError, ValueError):
        return ""
    out = []
    for part in sorted(set(old) | set(new)):
        a, b = old.get(part), new.get(part)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{part}.{k}: {b.get(k)!r}, the checkpoint's {a.get(k)!r}"
                    for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(f"{part}: {b!r}, the checkpoint's {a!r}")
    return "; ".join(out)


def was_resumed(extra) -> bool:
    """Whether a final row (its ``extra``: a dict, or its JSON text) belongs to a cell resumed from a checkpoint
    (the runner's ``resumed_from``, the ``stage@epoch`` of :attr:`CellCheckpoint.resumed`)."""
    if isinstance(extra, str):
        try:
            extra = json.loads(extra) if extra else {}
        except ValueError:
            return False
    return bool(isinstance(extra, dict) and extra.get("resumed_from"))


class CellCheckpoint:
    """The checkpoint files of one cell: one per training *stage*, in ``folder``."""

    def __init__(self, folder: str | Path, cell_key: str, config: str, stage: str = "main",
                 resumed: list | None = None, made_with: dict | str | None = None):
        self.folder, self.cell_key, self.config, self.name = Path(folder), cell_key, config, stage
        #: ``"stage@epoch"`` of every stage resumed from a file, for the cell's final row
        self.resumed = [] if resumed is None else resumed
        #: the parts ``config`` hashes (:func:`config_hash`), kept in the file so that a refusal names what changed
        self.made_with = made_with if made_with is None or isinstance(made_with, str) else _made_with(made_with)

    def stage(self, name: str) -> "CellCheckpoint":
        """The checkpoint of another training of the same cell (a value of a learning-rate grid)."""
        return CellCheckpoint(self.folder, self.cell_key, self.config, name, self.resumed, self.made_with)

    @property
    def path(self) -> Path:
        """This stage's file: ``<folder>/<stage>.pt``."""
        return self.folder / f"{self.name}.pt"

    def save(self, state: dict) -> None:
        """Replace this stage's file by ``state`` (plain containers of tensors, numbers and strings)."""
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, "cell_key": self.cell_key, "config": self.config, "stage": self.name,
                    "made_with": self.made_with, "state": state}, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())

    def load(self, **expect) -> dict | None:
        """This stage's saved state, or None when there is none; a file made for another cell or
        configuration, or whose ``expect`` entries differ (``epochs=20``), or unreadable, is removed
        with a :class:`CheckpointWarning`."""
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            why = None
            if not isinstance(saved, dict) or saved.get("format") != FORMAT:
                why = "an unknown format"
            elif (saved.get("cell_key"), saved.get("stage")) != (self.cell_key, self.name):
                why = f"another cell's ({saved.get('cell_key')}, {saved.get('stage')})"
            elif saved.get("config") != self.config:
                changed = _differences(saved.get("made_with"), self.made_with)
                why = f"another configuration, data, device or torch version{f' ({changed})' if changed else ''}"
            else:
                state = saved["state"]
                differ = {k: (state.get(k), v) for k, v in expect.items() if state.get(k) != v}
                if differ:
                    why = f"other settings ({differ})"
        except Exception as err:  # a torn or foreign file: never trusted
            why = f"an unreadable file ({err.__class__.__name__}: {str(err)[:200]})"
        if why is not None:
            warnings.warn(f"{self.path}: checkpoint of {why}; discarded, the training starts from its first "
                          "epoch.", CheckpointWarning, stacklevel=2)
            self.path.unlink(missing_ok=True)
            return None
        self.resumed.append(f"{self.name}@{state.get('epoch')}")
        return state

    def clear(self) -> None:
        """Delete the cell's folder (the cell finished: nothing left to resume)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def rng_state(generator: torch.Generator | None = None) -> dict:
    """Every random state a training draws from, as tensors and numbers (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss],
             "python": random.getstate(), "generator": generator.get_state() if generator is not None else None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def python_random_state(state) -> tuple:
    """A ``random.Random`` state as ``setstate`` takes it (a file gives its inner tuple back as a list)."""
    version, internal, gauss_next = state
    return version, tuple(internal), gauss_next


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Put back what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    random.setstate(python_random_state(state["python"]))
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def reachable(folder: Path, run_id: str) -> bool:
    """Whether ``folder`` is the run's checkpoint folder as the driver made it (a Ray worker on another
    machine does not see it)."""
    try:
        return (folder / OWNER_FILE).read_text().strip() == run_id
    except OSError:
        return False


def claim(folder: Path, run_id: str, done=()) -> Path:
    """Make the run's checkpoint folder and name the run that owns it (see :func:`reachable`); delete the
    checkpoints of the cells in ``done`` (finished, but stopped before their checkpoint was deleted)."""
    folder.mkdir(parents=True, exist_ok=True)
    for key in done:
        if (folder / key).is_dir():
            shutil.rmtree(folder / key, ignore_errors=True)
    (folder / OWNER_FILE).write_text(run_id + "\n")
    return folder


def release(folder: Path) -> None:
    """Remove the checkpoint folder when no cell left a checkpoint in it."""
    if folder.is_dir() and not any(p.name != OWNER_FILE for p in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)


def save_training(checkpoint: CellCheckpoint, clock, generator: torch.Generator | None, modules: dict,
                  **fields) -> None:
    """Save a training after an epoch: the ``state_dict()`` of each of ``modules`` (model, optimizer,
    scheduler, scaler; None skipped), the clock's phases, the random states and ``fields`` (epoch, rows...)."""
    checkpoint.save({**fields, "modules": {k: m.state_dict() for k, m in modules.items() if m is not None},
                     "clock": clock.state(), "rng": rng_state(generator)})


def resume_training(checkpoint: CellCheckpoint | None, clock, generator: torch.Generator | None, modules: dict,
                    **expect) -> dict | None:
    """Load what :func:`save_training` saved into ``modules``, the clock and the random states; return its
    fields, or None (no checkpoint, or one discarded: the training starts from its first epoch)."""
    state = checkpoint.load(**expect) if checkpoint is not None else None
    if state is not None:
        restore_training(state, clock, generator, modules)
    return state


def restore_training(state: dict, clock, generator: torch.Generator | None, modules: dict) -> None:
    """Put a loaded :func:`save_training` state into ``modules``, the clock and the random states."""
    for key, module in modules.items():
        if module is not None:
            module.load_state_dict(state["modules"][key])
    clock.restore(state["clock"])
    set_rng_state(state["rng"], generator)
