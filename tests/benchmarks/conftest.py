"""Hot-path timings run torch on one thread (see test_ratio_gate.py for why)."""

import pytest
import torch
from hot_paths import THREADS


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)
