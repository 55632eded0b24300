"""gradfree's harness, in layers whose imports point one way (``tests/test_structure.py`` checks it):

* :mod:`benchmarks.core`: data and datasets, backbones and cuts, FLOPs, timing, the feature cache,
  trainer checkpoints, the method protocol;
* :mod:`benchmarks.methods` (and the top-level :mod:`baselines`, the backprop half): the methods;
* :mod:`benchmarks.harness`: the registry and plugins, cells, runner, executors, results, suites;
* :mod:`benchmarks.report`: tables, verdicts, plots, the report and the regression gate;
* :mod:`benchmarks.perf`: ``gradfree perf`` and the GPU check;
* :mod:`benchmarks.cli`: the command line.

Below them all, the :mod:`projector` library, which imports nothing of gradfree's.
"""
