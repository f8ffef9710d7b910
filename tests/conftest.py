"""Shared test configuration: deterministic, CPU-only, quiet."""
import importlib.util
import os
import socket
from pathlib import Path

import pytest
import torch

os.environ.setdefault("IQAGUARD_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache-test"))
torch.set_num_threads(1)  # small tensors: one thread is faster and avoids oversubscription


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def load_synthetic():
    """``scripts/report_screenshot.py`` (the synthetic store builder) as a module."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "report_screenshot.py"
    spec = importlib.util.spec_from_file_location("report_screenshot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def no_network(monkeypatch):
    """Make every connection attempt fail at once (and record it): offline behaviour is tested
    without the network. Returns the list of attempts."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts
