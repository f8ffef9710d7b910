"""Every metric declares ``min_size`` and rejects smaller inputs at the boundary (Metric.forward)."""
from __future__ import annotations

import pytest
import torch

from iqaguard.errors import InputError, MissingDependencyError, MissingWeightsError
from iqaguard.metrics import create, names


def _offline_metrics():
    from iqaguard.registry import METRICS as REG

    out = []
    for name in names():
        if name.endswith(":<name>"):  # prefix factories (pyiqa:, piq:)
            continue
        if not getattr(REG.get(name), "__module__", "").startswith("iqaguard."):
            continue  # a toy metric another test module registered (collection order must not matter)
        try:
            out.append(pytest.param(create(name), id=name))
        except (MissingWeightsError, MissingDependencyError):
            continue
    return out


METRICS = _offline_metrics()


def _image(size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g)


def _call(m, size: int) -> torch.Tensor:
    x = _image(size)
    with torch.no_grad():
        return m(x, _image(size, 1)) if m.kind == "fr" else m(x)


def test_builtins_and_classic_are_covered():
    ids = {p.id for p in METRICS}
    assert {"psnr", "ssim", "ms-ssim"} <= ids


@pytest.mark.parametrize("m", METRICS)
def test_min_size_is_positive_int(m):
    assert isinstance(m.min_size, int) and not isinstance(m.min_size, bool)
    assert m.min_size >= 1


@pytest.mark.parametrize("m", METRICS)
def test_below_min_size_raises_naming_metric_and_minimum(m):
    if m.min_size <= 1:
        pytest.skip(f"{m.name}: min_size 1, nothing smaller")
    s = m.min_size - 1
    with pytest.raises(InputError) as exc:
        _call(m, s)
    msg = str(exc.value)
    assert "\n" not in msg
    assert m.name in msg
    assert str(m.min_size) in msg
    assert f"{s}x{s}" in msg


@pytest.mark.parametrize("m", METRICS)
def test_min_size_works(m):
    out = _call(m, m.min_size)
    assert out.shape == (1,)
    assert torch.isfinite(out).all()


def test_min_size_checked_on_both_sides():
    for m in METRICS:
        m = m.values[0]
        if m.min_size <= 1:
            continue
        n = m.min_size
        x = torch.rand(1, 3, n - 1, n + 20)
        with pytest.raises(InputError, match=m.name):
            m(x, torch.rand_like(x)) if m.kind == "fr" else m(x)


def test_psnr_accepts_1x1():
    m = create("psnr")
    assert m.min_size == 1
    x = torch.full((1, 3, 1, 1), 0.5)
    assert torch.isfinite(m(x, x * 0.5)).all()


def _builtin(name):
    try:
        return create(name)
    except MissingWeightsError:
        pytest.skip(f"{name} weights not available")


def test_builtin_nr_rejects_1x1():
    m = _builtin("builtin-nr")
    with pytest.raises(InputError, match=r"builtin-nr.*64x64.*1x1"):
        m(torch.full((1, 3, 1, 1), 0.5))


@pytest.mark.parametrize("name", ["builtin-nr", "builtin-fr"])
def test_builtin_min_size_at_least_32(name):
    assert _builtin(name).min_size >= 32


@pytest.mark.parametrize("hw", [(64, 70), (65, 64), (100, 77)])
def test_builtin_nr_non_multiple_of_16(hw):
    m = _builtin("builtin-nr")
    with torch.no_grad():
        out = m(torch.rand(1, 3, *hw))
    assert torch.isfinite(out).all()


def test_builtin_nr_min_size_separates_noise_from_smooth_image():
    """At min_size a smooth structured image scores above uniform noise."""
    m = _builtin("builtin-nr")
    n = m.min_size
    yy, xx = torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(0, 1, n), indexing="ij")
    smooth = torch.stack([xx, yy, 0.5 * (xx + yy)])[None] * 0.8 + 0.1
    with torch.no_grad():
        assert m(smooth).item() > m(_image(n)).item()
