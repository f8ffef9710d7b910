"""Tests of the ``piq:<name>`` adapter and the torchvision compatibility shim (the real piq).

Marked ``piq``: they need the optional extra (``pip install "iqaguard[piq]"``) and skip with that
hint when it is absent, unless ``IQAGUARD_REQUIRE_EXTRAS=1`` (CI), where they fail. The values
are checked against the TID2013 calibration pairs and the MATLAB outputs of the original authors'
code that pyiqa publishes (chaofengc/IQA-PyTorch, ``ResultsCalibra/calibration_summary.csv``).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import no_network
import torch

from calibra import calibration_pairs, rgb2gray_uint8
from iqaguard.errors import InputError, MissingDependencyError, MissingWeightsError, UnknownNameError
from iqaguard.metrics import create
from iqaguard.metrics import piq_adapter as pa
from iqaguard.metrics.piq_adapter import PIQ_METRICS, PiqMetric

WEIGHTLESS = [k for k, s in PIQ_METRICS.items() if s.weights is None]
ORDER = ("I03", "I04", "I06", "I08", "I19")
#: calibration_summary.csv: the MATLAB row of each metric, then pyiqa's own row ("(ours)").
MATLAB = {
    "fsim": [0.689, 0.9702, 0.9927, 0.9575, 0.822],  # FSIMc (colour), as piq's default chromatic=True
    "gmsd": [0.2203, 0.0005, 0.0004, 0.1346, 0.205],
    "vif": [0.0172, 0.9891, 0.9924, 0.9103, 0.1745],  # wavelet-domain VIF (vifvec)
    "vsi": [0.9139, 0.962, 0.9922, 0.9571, 0.9262],
}
PYIQA_VSI = [0.9244, 0.9497, 0.9877, 0.9541, 0.9348]  # pyiqa's VSI is derived from piq's

pytestmark = pytest.mark.piq


@pytest.fixture(scope="module")
def piq():
    try:
        return pa._import_piq()
    except MissingDependencyError as e:
        if os.environ.get("IQAGUARD_REQUIRE_EXTRAS") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def pairs():
    p = calibration_pairs()
    x = torch.cat([_tensor(p[n][0]) for n in ORDER])
    ref = torch.cat([_tensor(p[n][1]) for n in ORDER])
    return x, ref, p


@pytest.fixture(scope="module")
def small():
    """64 x 64 photograph crops with noise: ``(x, ref)`` natural, and ``(x, ref)`` with saturated
    (flat) regions, blown-out highlights and crushed shadows."""
    from skimage import data

    g = torch.Generator().manual_seed(0)
    ref = _tensor(data.astronaut()[40:104, 180:244])
    sat = ((ref - 0.5) * 3 + 0.5).clamp(0, 1)
    noise = 0.05 * torch.randn(ref.shape, generator=g)
    return (ref * 0.9 + 0.05 + noise).clamp(0.01, 0.99), ref * 0.9 + 0.05, (sat + noise).clamp(0, 1), sat


def test_missing_piq_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "piq", None)
    expected = r'^piq metrics need the optional extra: pip install "iqaguard\[piq\]"'
    with pytest.raises(MissingDependencyError, match=expected):
        PiqMetric("fsim")


def test_table_rows_are_consistent():
    for key, spec in PIQ_METRICS.items():
        b = spec.bounds
        assert (b.best < b.worst) == spec.lower_better, key
        assert b.best == (0.0 if spec.lower_better else 1.0), key
    with pytest.raises(UnknownNameError, match="piq:fsim"):
        pa.resolve_name("fsimm")
    assert pa.resolve_name("VIF_P") == "vif" and pa.resolve_name("SRSIM") == "sr-sim"


def test_create_by_name_gives_fr_metadata(piq):
    m = create("piq:FSIM")
    assert isinstance(m, PiqMetric) and m.name == "piq:fsim" and m.kind == "fr" and not m.training
    assert m.bounds == PIQ_METRICS["fsim"].bounds and m.lower_better is False
    g = create("piq:ms_gmsd")
    assert g.name == "piq:ms-gmsd" and g.lower_better is True
    with pytest.raises(InputError, match="bounds"):
        create("piq:fsim", chromatic=False)
    assert create("piq:fsim", chromatic=False, bounds=(0.3, 1.0)).options == {"chromatic": False}


def test_published_matlab_values_within_piq_s_implementation_differences(piq, pairs):
    x, ref, _ = pairs
    got = {k: PiqMetric(k)(x, ref).tolist() for k in MATLAB}
    # FSIMc: piq follows the authors' FSIM.m; the table has 4 decimals.
    np.testing.assert_allclose(got["fsim"], MATLAB["fsim"], atol=2e-4)
    # GMSD: piq takes the YIQ luma in floating point, MATLAB rgb2gray rounds it to uint8.
    np.testing.assert_allclose(got["gmsd"], MATLAB["gmsd"], atol=3e-4)
    # VSI: up to 0.0123 off; pyiqa's VSI (derived from piq's) publishes the same values.
    np.testing.assert_allclose(got["vsi"], MATLAB["vsi"], atol=0.015)
    np.testing.assert_allclose(got["vsi"], PYIQA_VSI, atol=2e-4)
    # VIF: piq's vif_p is the pixel-domain VIFp, the table the wavelet-domain VIF; same ranking.
    np.testing.assert_allclose(got["vif"], MATLAB["vif"], atol=0.06)
    for k in ("fsim", "gmsd", "vif"):
        assert np.argsort(got[k]).tolist() == np.argsort(MATLAB[k]).tolist(), k


def test_gmsd_on_matlab_rgb2gray_input_matches_to_table_precision(piq, pairs):
    _, _, p = pairs
    gray = [torch.from_numpy(rgb2gray_uint8(p[n][i])).float().div(255)[None, None].expand(1, 3, -1, -1)
            for n in ORDER for i in (0, 1)]
    x, ref = torch.cat(gray[0::2]), torch.cat(gray[1::2])
    np.testing.assert_allclose(PiqMetric("gmsd")(x, ref).tolist(), MATLAB["gmsd"], atol=6e-5)


def test_identity_is_best_and_noise_is_worse(piq, small):
    x, ref, xs, sat = small
    for key in WEIGHTLESS:
        m = PiqMetric(key)
        for a, b in ((x, ref), (xs, sat)):
            same, noisy = m(b, b).item(), m(a, b).item()
            assert same == pytest.approx(m.bounds.best, abs=1e-5), key
            assert m.improvement_sign() * (same - noisy) > 0, key


def test_gradients_are_finite_on_flat_regions_and_torch_s_elsewhere(piq, small):
    x, ref, xs, sat = small
    compared = []
    for key in WEIGHTLESS:
        m = PiqMetric(key)
        a = xs.clone().requires_grad_(True)
        m(a, sat).sum().backward()
        assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0, key
        # where torch's own gradient is finite, the adapter's is the same
        a = x.clone().requires_grad_(True)
        m(a, ref).sum().backward()
        b = x.clone().requires_grad_(True)
        getattr(piq, m.spec.attr)(b, ref, data_range=1.0, reduction="none").sum().backward()
        assert torch.isfinite(a.grad).all(), key
        if torch.isfinite(b.grad).all():
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-9, msg=key)
            compared.append(key)
    assert len(compared) >= len(WEIGHTLESS) - 1, compared


def test_finite_gradient_mode_keeps_forward_values_and_takes_zero_subgradients():
    t = torch.tensor([0.0, 4.0], requires_grad=True)
    with pa._FiniteGradients():
        y = torch.sqrt(t).sum() + (t ** 0.5).sum() + t.pow(1 / 3).sum() + torch.atan2(t, t).sum()
    y.backward()
    assert y.item() == pytest.approx(2 + 2 + 4 ** (1 / 3) + torch.pi / 4)
    expected = 0.25 + 0.25 + (1 / 3) * 4 ** (-2 / 3)  # atan2(t, t) is constant: 0 derivative
    torch.testing.assert_close(t.grad, torch.tensor([0.0, expected]))


def test_small_images_are_one_line_input_errors(piq):
    x = torch.rand(1, 3, 30, 64)
    with pytest.raises(InputError, match=r"^x: piq:vif needs images of at least 41 x 41 pixels, got 30 x 64$"):
        PiqMetric("vif")(x, x)


@pytest.mark.parametrize("name,first", [("lpips", "lpips_weights.pt"), ("dists", "dists_weights.pt")])
def test_weights_missing_offline_is_a_one_line_error(piq, monkeypatch, tmp_path, capsys, name, first):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    attempts = no_network(monkeypatch)
    with pytest.raises(MissingWeightsError) as err:
        create(f"piq:{name}")
    msg = str(err.value)
    assert "\n" not in msg and repr(first) in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "https://" in msg and "allow_download=True" in msg
    assert attempts == [] and "Downloading" not in capsys.readouterr().out


def test_backbone_missing_offline_names_torchvision_s_file(piq, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    no_network(monkeypatch)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "lpips_weights.pt").write_bytes(b"")
    with pytest.raises(MissingWeightsError, match=r"'vgg16-397923af\.pth'.*download\.pytorch\.org"):
        create("piq:lpips")


@pytest.fixture()
def fake_weights(piq, monkeypatch, tmp_path):
    """Random weights where piq would load LPIPS/DISTS/VGG16 ones (the files only need to exist)."""
    import torchvision
    import torchvision.models._api as tv_api

    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for fname in ("lpips_weights.pt", "dists_weights.pt", "vgg16-397923af.pth"):
        (folder / fname).write_bytes(b"")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).state_dict()

    def load(url, *args, **kwargs):
        if url.endswith("lpips_weights.pt"):
            return [torch.rand(1, c, 1, 1) for c in (64, 128, 256, 512, 512)]
        if url.endswith("dists_weights.pt"):
            return {"alpha": torch.rand(1, 1475, 1, 1) / 1475, "beta": torch.rand(1, 1475, 1, 1) / 1475}
        assert "vgg16" in url, url
        return vgg

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", load)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", load)
    return folder


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # piq's vgg16(pretrained=True)
@pytest.mark.parametrize("name", ["lpips", "dists"])
def test_weight_metrics_run_when_their_weights_are_present(fake_weights, name):
    m = create(f"piq:{name}")
    assert m.lower_better and m.kind == "fr" and not m.net.training
    assert all(not p.requires_grad for p in m.parameters())
    ref = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = (ref + 0.1).clamp(0, 1).requires_grad_(True)
    s = m(x, ref)
    assert s.shape == (2,) and torch.isfinite(s).all()
    s.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    if name == "lpips":
        assert (s > 0).all() and m(ref, ref).abs().max() < 1e-6


def test_shim_makes_torchvision_piq_and_lpips_import_in_a_fresh_process(piq):
    code = (
        "import torch\n"
        "from iqaguard.metrics._torchvision_compat import ensure_torchvision\n"
        "reason = ensure_torchvision()\n"
        "import torchvision, piq, lpips, torchvision.models, torchvision.transforms\n"
        "print('reason:', reason)\n"
        "if reason is not None:\n"
        "    from iqaguard.errors import MissingDependencyError\n"
        "    try:\n"
        "        torch.ops.torchvision.nms(torch.rand(2, 4), torch.rand(2), 0.5)\n"
        "    except MissingDependencyError as e:\n"
        "        print('nms:', e)\n"
        "else:\n"
        "    assert torchvision.extension._has_ops()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    if "reason: None" not in out.stdout:
        assert "nms: torchvision::nms is unavailable" in out.stdout


def test_without_the_shim_the_failure_is_one_line_naming_the_fix(piq):
    code = (
        "from iqaguard.metrics.piq_adapter import PiqMetric\n"
        "from iqaguard.errors import MissingDependencyError\n"
        "try:\n"
        "    PiqMetric('gmsd')\n"
        "except MissingDependencyError as e:\n"
        "    print('error:', e)\n"
    )
    env = dict(os.environ, IQAGUARD_TORCHVISION_SHIM="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    if out.stdout.strip():  # empty when torchvision's extension loads (a matching CPU torchvision)
        line = out.stdout.strip()
        assert line.startswith("error: piq metrics: importing piq failed (RuntimeError: operator torchvision::nms")
        assert "\n" not in line and "unset IQAGUARD_TORCHVISION_SHIM" in line


def test_stored_bounds_follow_the_protocol(piq):
    """The stored worst values are the worst over the builtin photographs: the first photograph
    (same JPEG, same first noise draw of seed 0 as in the full run) is never worse."""
    import iqaguard.data
    from iqaguard.data.io import list_images, load_image

    first = load_image(list_images(Path(iqaguard.data.__file__).parent / "photos")[0])
    for key, b in pa.calibrate_table([first]).items():
        stored, sign = PIQ_METRICS[key].bounds, (1 if PIQ_METRICS[key].lower_better else -1)
        assert b.best == pytest.approx(stored.best, abs=1e-5), key
        assert (b.worst - stored.worst) * sign <= 5e-5, key  # stored worst: at least as bad
