"""pytest-benchmark timings of the hot paths (`make bench` runs them with --benchmark-enable).

Under the default --benchmark-disable (plain `pytest`) each runs once, as a smoke test. torch runs on
one thread here (conftest.py): on a busy machine multi-threaded timings swing by 10x.
"""

import pytest

from hot_paths import CASES


@pytest.mark.parametrize("name", sorted(CASES))
def test_hot_path(benchmark, name):
    hot, _ = CASES[name]()
    benchmark.group = "hot paths"
    benchmark(hot)


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_operation(benchmark, name):
    _, ref = CASES[name]()
    benchmark.group = "references (same-shape plain torch)"
    benchmark(ref)
