"""``gradfree perf``: how close each hot path runs to the machine's limit, in one process.

Every figure is a ratio against a reference measured in the same run, on the same
device, with the same shapes, timed alternately (median of repeats) so that the
neighbours' load shifts both alike. One module per section, each owning its
measurement and the rows it adds:

* :mod:`~benchmarks.perf.projection` -- dense ``gaussian`` against the bare GEMM;
* :mod:`~benchmarks.perf.structured` -- the Hadamard-based projection against ``gaussian``;
* :mod:`~benchmarks.perf.ridge`      -- the validation grid against scikit-learn;
* :mod:`~benchmarks.perf.streaming`  -- the streamed Gram fit against project-then-fit;
* :mod:`~benchmarks.perf.extraction` -- ``extract_features`` against the bare forward;
* :mod:`~benchmarks.perf.task`       -- CIFAR-10 accuracy: structured, gaussian, the exact kernel;
* :mod:`~benchmarks.perf.binary_gram` -- the Gram of a 0/1 matrix in int8 / popcount against
  float32 (``--sections binary-gram``), and what the CPU has (VNNI, AMX-INT8);
* :mod:`~benchmarks.perf.seed_shape` -- the seeds' STL-10 problem end to end (``--sections seed-shape``):
  the exact kernel against a bare ``ssyrk`` of the same matrix, structured k = 120,000 streamed,
  dense gaussian extrapolated, the seeds' quoted figures;
* :mod:`~benchmarks.perf.kernel_full` -- the exact kernel on all of CIFAR-10 (``--full --sections
  kernel-full``: 45,000 + 5,000, no refit, 10,000 test) against 15 minutes and 16 GB.

Below them :mod:`~benchmarks.perf.common` (sizes per mode, targets, the timer, the
report's rows); above them :mod:`~benchmarks.perf.command`, the command (its table and
plot included; its options are parsed in :mod:`benchmarks.cli`). Imports point one way:
command -> sections -> common. ``gradfree`` imports this package to build its parser, so the sections import
the heavy libraries (projector, scikit-learn, torchvision) only when they run.

Peak memory is read, not estimated, by :class:`benchmarks.core.timing.PeakMemory` (the runner's
probe): the CUDA allocator's peak, or on CPU the kernel's peak RSS of the process (its
high-water mark, reset when the case starts), less the level when the case started.

Writes ``OUT/perf.csv`` (one row per figure), ``OUT/perf.png`` and
``OUT/runs/<run id>/metadata.json``; prints the table. ``--quick`` is a < 1 minute
smoke run (tiny shapes), the default a few minutes, ``--full`` the seeds' shapes
where memory allows.
"""

from benchmarks.perf.command import DEFAULT_OUT, SECTIONS, cmd_perf, plot_perf, print_table, run_perf
from benchmarks.perf.common import FULL, QUICK, TARGETS, Report, Sizes, alternate, timed
from benchmarks.core.timing import PeakMemory

__all__ = ["DEFAULT_OUT", "FULL", "QUICK", "SECTIONS", "TARGETS", "PeakMemory", "Report", "Sizes",
           "alternate", "cmd_perf", "plot_perf", "print_table", "run_perf", "timed"]
