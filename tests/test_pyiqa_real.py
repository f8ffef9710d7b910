"""Tests of :class:`PyiqaMetric` with the REAL pyiqa (the optional ``pyiqa`` extra).

Marked ``pyiqa``: they skip with the install hint when pyiqa is absent, unless
``IQAGUARD_REQUIRE_EXTRAS=1`` (CI), where they fail. Only weightless metrics are scored; the
weight-needing ones are checked to fail offline with one line, with the network cut off.
The reference values are pyiqa's own published outputs on the TID2013 calibration pairs
(chaofengc/IQA-PyTorch ``ResultsCalibra/calibration_summary.csv``, rows "<metric>(ours)").
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import no_network
import torch

from calibra import calibration_pairs
from iqaguard.errors import MissingDependencyError, MissingWeightsError
from iqaguard.metrics import create
from iqaguard.metrics.adapters import PyiqaMetric, _import_pyiqa

ORDER = ("I03", "I04", "I06", "I08", "I19")
PYIQA_PUBLISHED = {
    "psnr": ([21.1136, 20.9872, 27.0139, 23.3002, 21.6186], 2e-3),
    "ssim": ([0.6997, 0.9978, 0.9989, 0.9671, 0.6522], 2e-4),
    "fsim": ([0.6891, 0.9702, 0.9927, 0.9575, 0.822], 2e-4),
    "gmsd": ([0.2203, 0.0005, 0.0004, 0.1346, 0.205], 2e-4),
}

pytestmark = pytest.mark.pyiqa


@pytest.fixture(scope="module")
def pyiqa():
    try:
        return _import_pyiqa()
    except MissingDependencyError as e:
        if os.environ.get("IQAGUARD_REQUIRE_EXTRAS") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def pairs():
    p = calibration_pairs()

    def t(a):
        return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 255

    return torch.cat([t(p[n][0]) for n in ORDER]), torch.cat([t(p[n][1]) for n in ORDER])


def test_weightless_metrics_reproduce_pyiqa_s_published_values(pyiqa, pairs):
    x, ref = pairs
    for name, (published, atol) in PYIQA_PUBLISHED.items():
        m = create(f"pyiqa:{name}")
        assert m.kind == "fr" and m.lower_better == (name == "gmsd")
        np.testing.assert_allclose(m(x, ref).tolist(), published, atol=atol, err_msg=name)


def test_ssim_and_psnr_conventions_match_ours(pyiqa, pairs):
    """pyiqa's ssim: YIQ luma rounded to 8 bits, no downsampling; psnr: RGB."""
    from iqaguard.metrics import functional as F

    x, ref = pairs[0][:2], pairs[1][:2]

    def gray3(t):
        g = (0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2]).mul(255).round().div(255)
        return g[:, None].expand(-1, 3, -1, -1).contiguous()

    ours = F.ssim(gray3(x), gray3(ref), luma=False, downsample=False)
    torch.testing.assert_close(PyiqaMetric("ssim")(x, ref), ours, atol=1e-3, rtol=0)
    torch.testing.assert_close(PyiqaMetric("psnr")(x, ref), F.psnr(x, ref, luma=False), atol=1e-3, rtol=0)


@pytest.mark.parametrize("enabled", [True, False])
def test_global_grad_mode_is_the_same_before_and_after(pyiqa, pairs, enabled):
    x, ref = pairs[0][:1, :, :64, :64], pairs[1][:1, :, :64, :64]
    with torch.set_grad_enabled(enabled):
        m = PyiqaMetric("gmsd")
        assert torch.is_grad_enabled() is enabled
        xg = x.clone().requires_grad_(True)
        s = m(xg, ref)
        assert torch.is_grad_enabled() is enabled
        assert s.requires_grad is enabled
    if enabled:
        s.sum().backward()
        assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["lpips", "dists", "lpips-vgg", "musiq"])
def test_weight_needing_metric_offline_is_one_line_without_network(pyiqa, monkeypatch, tmp_path, capsys, name):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(_import_pyiqa().utils.download_util, "DEFAULT_CACHE_DIR", str(tmp_path / "hub" / "pyiqa"))
    attempts = no_network(monkeypatch)
    grad = torch.is_grad_enabled()
    with pytest.raises(MissingWeightsError) as err:
        create(f"pyiqa:{name}")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"pyiqa metric {name!r} needs the weight file '")
    assert str(tmp_path / "hub") in msg and "allow_download=True" in msg
    assert attempts == [] and "Downloading" not in capsys.readouterr().out
    assert torch.is_grad_enabled() is grad
    assert torch.hub.download_url_to_file.__name__ == "download_url_to_file"  # restored
