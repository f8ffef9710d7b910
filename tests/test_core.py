"""Registry, validation and image I/O contracts."""
import numpy as np
import pytest
import torch
from PIL import Image

from iqaguard.data.io import jpeg_roundtrip, list_images, load_image, save_png
from iqaguard.errors import ImageFileError, InputError, UnknownNameError
from iqaguard.registry import Registry
from iqaguard.validation import check_image, check_pair, resolve_device


def test_registry_create_names_and_close_matches():
    reg = Registry("widget")

    @reg.register("gaussian-blur")
    class Blur:
        def __init__(self, sigma=1.0):
            self.sigma = sigma

    @reg.register("pyiqa:")
    def prefixed(name, **kw):
        return ("pyiqa", name, kw)

    assert reg.create("gaussian-blur", sigma=2.0).sigma == 2.0
    assert reg.create("pyiqa:lpips", device="cpu") == ("pyiqa", "lpips", {"device": "cpu"})
    assert reg.names() == ["gaussian-blur", "pyiqa:<name>"]
    with pytest.raises(UnknownNameError) as e:
        reg.create("gausian-blur")
    assert "gaussian-blur" in str(e.value) and "Did you mean" in str(e.value)
    with pytest.raises(ValueError):
        reg.register("gaussian-blur")(object)


@pytest.mark.parametrize("bad,needle", [
    (np.zeros((1, 3, 4, 4), dtype=np.float32), "torch.Tensor"),
    (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "dtype"),
    (torch.zeros(3, 4, 4), "shape"),
    (torch.zeros(1, 1, 4, 4), "shape"),
    (torch.full((1, 3, 4, 4), 2.0), "range"),
    (torch.full((1, 3, 4, 4), float("nan")), "NaN"),
])
def test_check_image_errors_name_argument_and_problem(bad, needle):
    with pytest.raises(InputError) as e:
        check_image(bad, "img")
    assert str(e.value).startswith("img:") and needle in str(e.value)


def test_check_pair_shape_mismatch():
    with pytest.raises(InputError, match="same shape"):
        check_pair(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    assert check_image(torch.rand(2, 3, 5, 5)).shape == (2, 3, 5, 5)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(InputError):
        resolve_device("not-a-device")


def _write(path, arr, **kw):
    Image.fromarray(arr).save(path, **kw)
    return path


@pytest.mark.parametrize("ext,fmt", [(".png", "PNG"), (".bmp", "BMP"), (".tif", "TIFF"), (".webp", "WEBP")])
def test_load_image_lossless_formats_roundtrip(tmp_path, ext, fmt):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    kw = {"lossless": True} if fmt == "WEBP" else {}
    x = load_image(_write(tmp_path / f"a{ext}", arr, format=fmt, **kw))
    assert x.shape == (1, 3, 7, 9) and x.dtype == torch.float32
    assert torch.equal((x[0].permute(1, 2, 0) * 255).round().to(torch.uint8), torch.from_numpy(arr))


def test_load_image_jpeg_grayscale_alpha_and_exif(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    x = load_image(_write(tmp_path / "g.png", gray))
    assert x.shape == (1, 3, 3, 4) and torch.equal(x[:, 0], x[:, 2])
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent -> white background
    x = load_image(_write(tmp_path / "a.png", rgba))
    assert torch.allclose(x, torch.ones_like(x))
    # EXIF orientation 6 = rotate 90 CW: a 4x2 (HxW) stored image must come back as 2x4
    img = Image.fromarray(np.zeros((4, 2, 3), dtype=np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "o.jpg", exif=exif)
    assert load_image(tmp_path / "o.jpg").shape == (1, 3, 2, 4)


def test_load_image_missing_and_corrupt(tmp_path):
    with pytest.raises(ImageFileError, match="not found: .*nope.png"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageFileError, match="bad.png"):
        load_image(bad)


def test_save_png_is_lossless_at_8_bits(tmp_path):
    x = torch.randint(0, 256, (1, 3, 6, 5)).float() / 255
    p = save_png(x, tmp_path / "sub" / "x.png")
    assert torch.equal(load_image(p), x)
    assert list_images(tmp_path / "sub") == [p]
    with pytest.raises(InputError):
        save_png(torch.rand(2, 3, 4, 4), tmp_path / "y.png")


def test_jpeg_roundtrip_quality_orders_error():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g)
    errs = [float((jpeg_roundtrip(x, q) - x).pow(2).mean()) for q in (10, 50, 90)]
    assert errs[0] > errs[1] > errs[2]
