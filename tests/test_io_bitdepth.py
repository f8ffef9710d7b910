"""Bit depth of loaded images comes from the file's mode, not from the pixel maximum."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from iqaguard.data.io import load_image, pil_to_tensor
from iqaguard.errors import ImageFileError

_CT = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filter_rows(arr: np.ndarray, ftype: int) -> bytes:
    """PNG-filter ``arr`` ([h, w, c] uint16) row by row with filter ``ftype`` (0..4)."""
    bpp = arr.shape[2] * 2
    out, prev = bytearray(), None
    for row in arr:
        line = row.astype(">u2").tobytes()
        up = prev if prev is not None else bytes(len(line))
        f = bytearray()
        for i, x in enumerate(line):
            a = line[i - bpp] if i >= bpp else 0
            b = up[i]
            c = up[i - bpp] if i >= bpp else 0
            pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[ftype]
            f.append((x - pred) & 0xFF)
        out += bytes([ftype]) + f
        prev = line
    return bytes(out)


def write_png16(path, arr: np.ndarray, ftype: int = 0, interlace: bool = False) -> None:
    """Hand-encode a 16-bit PNG (numpy + zlib): gray, gray+alpha, RGB or RGBA."""
    arr = np.asarray(arr, dtype=np.uint16)
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, c = arr.shape
    if interlace:
        raw = b"".join(
            _filter_rows(arr[y0::dy, x0::dx], ftype)
            for x0, y0, dx, dy in _ADAM7
            if arr[y0::dy, x0::dx].size
        )
    else:
        raw = _filter_rows(arr, ftype)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, _CT[c], 0, 0, int(interlace))
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _dark(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint16)


def _expect(arr: np.ndarray) -> np.ndarray:
    """[h, w, 3] expected float32 values: value / 65535."""
    f = arr.astype(np.float32) / np.float32(65535.0)
    return np.repeat(f[..., None], 3, axis=2) if f.ndim == 2 else f


def _loaded(path) -> np.ndarray:
    t = load_image(path)
    assert t.shape[:2] == (1, 3) and str(t.dtype) == "torch.float32"
    return t[0].permute(1, 2, 0).numpy()


def test_pil_reports_16bit_gray_as_i16(tmp_path):
    write_png16(tmp_path / "g.png", _dark((5, 7)))
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode in ("I;16", "I;16B", "I")


def test_dark_16bit_gray_scaled_by_65535(tmp_path):
    arr = _dark((9, 11))
    arr[0, 0] = 255
    write_png16(tmp_path / "g.png", arr)
    assert np.array_equal(_loaded(tmp_path / "g.png"), _expect(arr))


def test_dark_16bit_gray_saved_by_pil(tmp_path):
    arr = _dark((6, 4), seed=3)
    Image.fromarray(arr).save(tmp_path / "g.png")
    assert np.array_equal(_loaded(tmp_path / "g.png"), _expect(arr))


@pytest.mark.parametrize("ftype", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("interlace", [False, True])
def test_dark_16bit_rgb_full_precision(tmp_path, ftype, interlace):
    arr = _dark((10, 13, 3), seed=ftype)
    write_png16(tmp_path / "c.png", arr, ftype=ftype, interlace=interlace)
    assert np.array_equal(_loaded(tmp_path / "c.png"), _expect(arr))


def test_bright_16bit_rgb_full_precision(tmp_path):
    arr = np.random.default_rng(7).integers(0, 65536, (8, 9, 3)).astype(np.uint16)
    arr[0, 0] = (65535, 256, 1)
    write_png16(tmp_path / "c.png", arr, ftype=4)
    assert np.array_equal(_loaded(tmp_path / "c.png"), _expect(arr))


def test_bright_16bit_gray(tmp_path):
    arr = np.random.default_rng(8).integers(0, 65536, (8, 9)).astype(np.uint16)
    arr[0, 0] = 65535
    write_png16(tmp_path / "g.png", arr)
    assert np.array_equal(_loaded(tmp_path / "g.png"), _expect(arr))


def test_16bit_rgba_opaque_and_gray_alpha(tmp_path):
    rgb = _dark((5, 6, 3), seed=1)
    opaque = np.full((5, 6, 1), 65535, np.uint16)
    write_png16(tmp_path / "rgba.png", np.concatenate([rgb, opaque], axis=2), ftype=3)
    assert np.array_equal(_loaded(tmp_path / "rgba.png"), _expect(rgb))
    gray = _dark((5, 6), seed=2)
    write_png16(tmp_path / "la.png", np.stack([gray, opaque[..., 0]], axis=2), ftype=4)
    assert np.array_equal(_loaded(tmp_path / "la.png"), _expect(gray))


def test_16bit_rgba_alpha_composited_over_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint16)
    rgba[..., 3] = 0  # fully transparent -> white
    rgba[0, 0] = (100, 200, 255, 65535)
    write_png16(tmp_path / "a.png", rgba)
    out = _loaded(tmp_path / "a.png")
    assert np.array_equal(out[0, 0], np.array([100, 200, 255], np.float32) / np.float32(65535.0))
    assert np.array_equal(out[1, 1], np.ones(3, np.float32))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_8bit_png_scaled_by_255(tmp_path, mode):
    shape = (7, 5) if mode == "L" else (7, 5, 3)
    arr = np.random.default_rng(4).integers(0, 256, shape).astype(np.uint8)
    arr.flat[0] = 3
    arr.flat[1] = 10  # small maximum region must not change the scale
    Image.fromarray(arr, mode=mode).save(tmp_path / "e.png")
    expect = arr.astype(np.float32) / np.float32(255.0)
    if mode == "L":
        expect = np.repeat(expect[..., None], 3, axis=2)
    assert np.array_equal(_loaded(tmp_path / "e.png"), expect)


def test_dark_8bit_png_scaled_by_255(tmp_path):
    arr = np.full((4, 4, 3), 2, np.uint8)
    Image.fromarray(arr).save(tmp_path / "d.png")
    assert np.array_equal(_loaded(tmp_path / "d.png"), np.full((4, 4, 3), np.float32(2) / np.float32(255)))


def test_pil_to_tensor_i16_dark_uses_65535():
    arr = np.array([[0, 1, 255]], np.uint16)
    t = pil_to_tensor(Image.fromarray(arr))
    assert np.array_equal(t[0, 0].numpy(), arr.astype(np.float32) / np.float32(65535.0))


def test_corrupt_16bit_png_is_one_line_image_file_error(tmp_path):
    p = tmp_path / "bad.png"
    write_png16(p, _dark((4, 4, 3)))
    data = p.read_bytes()
    p.write_bytes(data[:45])  # truncated IDAT
    with pytest.raises(ImageFileError) as ei:
        load_image(p)
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)
