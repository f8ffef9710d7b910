"""One-line, actionable errors of iqaguard.validation (dtype, device, non-finite values, shape)."""
import re

import pytest
import torch

import iqaguard.metrics
from iqaguard.errors import InputError
from iqaguard.validation import check_image, check_pair, resolve_device


def _err(fn, *args, **kw) -> str:
    with pytest.raises(InputError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def _img(*shape, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)


# ---------------------------------------------------------------- 1. dtype
def test_check_image_float32_contract_names_dtype_and_fix():
    msg = _err(check_image, _img(1, 3, 8, 8, dtype=torch.float64), "x", dtype=torch.float32)
    assert msg.startswith("x: expected float32 ") and "got float64; convert with x.float()" in msg
    msg = _err(check_image, _img(1, 3, 8, 8, dtype=torch.float16), "ref", dtype=torch.float32)
    assert "got float16; convert with ref.float()" in msg
    assert check_image(_img(1, 3, 8, 8), dtype=torch.float32).dtype == torch.float32


def test_check_pair_dtype_and_mixed_dtypes():
    x, y = _img(1, 3, 8, 8), _img(1, 3, 8, 8, dtype=torch.float64)
    assert "y: expected float32" in _err(check_pair, x, y, "x", "y", dtype=torch.float32)
    msg = _err(check_pair, x, y, "x", "y")
    assert msg.startswith("y: expected the same dtype as x (float32), got float64") and ".float()" in msg


def test_functional_layer_still_accepts_float64():
    """float64 stays allowed without ``dtype`` (functional gradcheck); nothing is converted."""
    x = _img(1, 3, 8, 8, dtype=torch.float64)
    assert check_image(x) is x


def test_uint8_message_names_argument_in_fix():
    msg = _err(check_image, torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "img")
    assert msg.startswith("img:") and "got dtype uint8" in msg and "img.float() / 255" in msg


# Metric.forward (src/iqaguard/metrics/base.py) must pass dtype=torch.float32 to check_image /
# check_pair for these to pass; that file is outside this change. Remove the marker once it does.


def test_metric_psnr_rejects_float64():
    x = _img(1, 3, 16, 16, dtype=torch.float64)
    msg = _err(iqaguard.metrics.create("psnr"), x, x)
    assert msg.startswith("x: expected float32 ") and "got float64; convert with x.float()" in msg


def test_metric_builtin_nr_rejects_float64():
    msg = _err(iqaguard.metrics.create("builtin-nr"), _img(1, 3, 32, 32, dtype=torch.float64))
    assert msg.startswith("x: expected float32 ") and "got float64; convert with x.float()" in msg


# ---------------------------------------------------------------- 2. device
@pytest.mark.parametrize("dev", ["cuda", "cuda:1", torch.device("cuda")])
def test_cuda_on_cpu_only_machine(dev):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    msg = _err(resolve_device, dev)
    shown = dev if isinstance(dev, str) else "cuda"
    assert msg.startswith(f"device {shown!r} requested but ")
    if torch.version.cuda is None:
        assert f"this torch build has no CUDA (torch {torch.__version__})" in msg
    else:
        assert "no GPU is visible" in msg
    assert msg.endswith("use device='cpu' or 'auto'")


def test_cuda_build_without_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    msg = _err(resolve_device, "cuda")
    assert msg.startswith("device 'cuda' requested but no GPU is visible")
    assert msg.endswith("use device='cpu' or 'auto'")
    assert resolve_device("auto").type == "cpu"


def test_cuda_index_beyond_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    msg = _err(resolve_device, "cuda:1")
    assert msg.startswith("device 'cuda:1' requested but only 1 CUDA device(s) are visible")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("auto").type == "cuda"


def test_mps_unavailable():
    if torch.backends.mps.is_available():
        pytest.skip("MPS is available here")
    msg = _err(resolve_device, "mps")
    assert msg.startswith("device 'mps' requested but ") and "MPS" in msg
    assert msg.endswith("use device='cpu' or 'auto'")


def test_auto_and_cpu_resolve():
    expect = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expect and resolve_device(None).type == expect
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(torch.device("cpu")).type == "cpu"


@pytest.mark.parametrize("bad", ["gpu0", "not-a-device", "", 1.5, [0], True])
def test_unknown_device_lists_valid_forms(bad):
    msg = _err(resolve_device, bad)
    assert msg.startswith("device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    assert msg.endswith(f"got {bad!r}")


# ---------------------------------------------------------------- 3. non-finite values
def test_nan_and_inf_are_counted():
    x = _img(1, 3, 4, 4)
    x[0, 0, 0, 0] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    x[0, 2, 0, 0] = float("-inf")
    msg = _err(check_image, x, "ref")
    assert msg.startswith("ref: contains 3 non-finite value(s) of 48 (1 NaN, 2 Inf)")
    assert "nan_to_num" in msg


def test_nan_through_a_metric_names_ref():
    x, ref = _img(1, 3, 16, 16), _img(1, 3, 16, 16)
    ref[..., :2, :2] = float("nan")
    msg = _err(iqaguard.metrics.create("psnr"), x, ref)
    assert msg.startswith("ref: contains 12 non-finite value(s)") and "(12 NaN, 0 Inf)" in msg


# ---------------------------------------------------------------- 4. shape
@pytest.mark.parametrize("shape,hint", [
    ((3, 8, 8), "x.unsqueeze(0)"),
    ((1, 8, 8), "x.unsqueeze(0)"),
    ((1, 1, 8, 8), "x.expand(-1, 3, -1, -1)"),
    ((2, 4, 8, 8), "x[:, :3]"),
    ((1, 8, 8, 3), "x.permute(0, 3, 1, 2)"),
    ((8, 8, 3), "x.permute(2, 0, 1).unsqueeze(0)"),
    ((8, 8), "x.expand(3, -1, -1).unsqueeze(0)"),
    ((1, 1, 3, 8, 8), "load_image"),
])
def test_shape_errors_name_expected_received_and_fix(shape, hint):
    msg = _err(check_image, torch.rand(*shape), "x")
    assert msg.startswith(f"x: expected shape [B, 3, H, W] (RGB batch), got {list(shape)}.")
    assert hint in msg


def test_rgb_without_batch_only_suggests_unsqueeze():
    msg = _err(check_image, torch.rand(3, 8, 8), "x")
    assert re.search(r"Add the batch dimension with x\.unsqueeze\(0\)\.$", msg)


def test_shape_error_through_a_metric():
    msg = _err(iqaguard.metrics.create("psnr"), torch.rand(3, 16, 16), torch.rand(3, 16, 16))
    assert "got [3, 16, 16]" in msg and "x.unsqueeze(0)" in msg


def test_other_messages_are_single_lines():
    for args in [(torch.zeros(0, 3, 4, 4),), (torch.full((1, 3, 4, 4), 2.0),), ([1, 2],)]:
        _err(check_image, *args)
    _err(check_image, _img(2, 3, 4, 4), "x", batch=1)
    _err(check_pair, _img(1, 3, 4, 4), _img(1, 3, 4, 5))
