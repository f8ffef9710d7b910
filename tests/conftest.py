"""Shared test configuration: deterministic, CPU-only, quiet."""
import os

import pytest
import torch

os.environ.setdefault("IQAGUARD_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache-test"))
torch.set_num_threads(1)  # small tensors: one thread is faster and avoids oversubscription


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
