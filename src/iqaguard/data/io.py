"""Image I/O: any common format -> ``[1, 3, H, W]`` float32 RGB in ``[0, 1]``; lossless PNG out."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageFileError
from ..ops.jpeg import jpeg_roundtrip, to_uint8 as tensor_to_uint8  # noqa: F401  (public names of this module)
from ..validation import check_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

PathLike = Union[str, Path]


# PIL modes whose samples are 16-bit (PNG 16-bit grayscale opens as "I;16"; older Pillow and
# some TIFFs give "I"). The scale comes from the mode, never from the pixel maximum: a dark
# 16-bit image (all values <= 255) must still be divided by 65535.
_MODES_16BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")

# PIL (checked with Pillow 10-13) opens 16-bit *colour* PNGs as 8-bit "RGB"/"RGBA" keeping only
# the high byte of each sample (16-bit gray+alpha becomes 8-bit "RGBA"), so a dark 16-bit RGB
# image loads as black. Such files are decoded twice by PIL's own PNG decoder (which does the
# zlib, filtering and Adam7 work) with a different unpacker to recover the low bytes:
# PNG tile rawmode -> (rawmode that yields the low bytes, its layout).
_PNG16_LOW_RAWMODE = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}


def _float_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``[H, W, C]`` float in [0, 1], C in 1..4 (L, LA, RGB, RGBA) -> ``[1, 3, H, W]`` float32.

    Grayscale is replicated to three channels; alpha is composited over white.
    """
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    c = arr.shape[2]
    if c in (2, 4):
        alpha = arr[..., -1:]
        arr = arr[..., :-1] * alpha + (1.0 - alpha)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = np.clip(arr, 0.0, 1.0).astype(np.float32, copy=False)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0).contiguous()


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """Convert a PIL image to ``[1, 3, H, W]`` float32 in [0, 1].

    Grayscale is replicated to three channels; an alpha channel is composited over white.
    The scale follows the image mode: 16-bit modes (``I;16*``, ``I``) are divided by 65535,
    8-bit modes (``L``, ``RGB``, ``P``, ``RGBA``, ``LA``, ...) by 255, whatever the pixel maximum.
    """
    if img.mode in _MODES_16BIT:
        arr = np.asarray(img).astype(np.float32) / 65535.0
        return _float_to_tensor(arr)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return _float_to_tensor(arr)


def _png16_rawmode(img: Image.Image) -> str | None:
    """The 16-bit colour rawmode of an opened, not yet loaded PNG, else None."""
    if img.format != "PNG" or not img.tile or len(img.tile) != 1:
        return None
    args = img.tile[0][3]
    raw = args[0] if isinstance(args, tuple) else args
    return raw if raw in _PNG16_LOW_RAWMODE else None


def _load_png16_color(p: Path, rawmode: str) -> torch.Tensor:
    """Full-precision read of a 16-bit RGB / RGBA / gray+alpha PNG (see ``_PNG16_LOW_RAWMODE``)."""
    fix = "re-save it as an 8-bit PNG or a 16-bit grayscale PNG"
    with Image.open(p) as img:
        img.load()
        high = np.asarray(ImageOps.exif_transpose(img)).astype(np.uint16)
    with Image.open(p) as img:
        t = img.tile[0]
        args = t[3]
        low_raw = _PNG16_LOW_RAWMODE[rawmode]
        new_args = (low_raw,) + tuple(args[1:]) if isinstance(args, tuple) else low_raw
        img.tile = [type(t)(*t[:3], new_args)] if hasattr(t, "_fields") else [(t[0], t[1], t[2], new_args)]
        img.load()
        low = np.asarray(ImageOps.exif_transpose(img)).astype(np.uint16)
    if rawmode == "LA;16B":
        # raw bytes per pixel: L high, L low, A high, A low
        full = np.stack([low[..., 0] * 256 + low[..., 1], low[..., 2] * 256 + low[..., 3]], axis=2)
        check = np.stack([high[..., 0], high[..., 3]], axis=2)
    else:
        full = high * 256 + low
        check = high
    if full.shape[:2] != check.shape[:2] or not np.array_equal(full >> 8, check):
        raise ImageFileError(f"cannot read 16-bit colour PNG {p} at full precision with this Pillow ({fix})")
    return _float_to_tensor(full.astype(np.float32) / 65535.0)


def load_image(path: PathLike) -> torch.Tensor:
    """Read an image file (PNG, JPEG, BMP, TIFF, WebP).

    EXIF orientation is applied, grayscale becomes RGB, alpha is composited over white.
    16-bit files are divided by 65535 and 8-bit files by 255 (decided by the file's mode, not its
    values); 16-bit colour PNGs keep their full precision.

    Returns:
        ``[1, 3, H, W]`` float32 tensor in ``[0, 1]``.

    Raises:
        ImageFileError: the file is missing, not an image, or corrupt (the message names the path).
    """
    p = Path(path)
    if not p.is_file():
        raise ImageFileError(f"image file not found: {p} (check the path or the dataset root)")
    try:
        with Image.open(p) as img:
            rawmode = _png16_rawmode(img)
            if rawmode is None:
                img.load()
                img = ImageOps.exif_transpose(img)
                return pil_to_tensor(img)
        return _load_png16_color(p, rawmode)
    except ImageFileError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, IndexError) as e:
        msg = str(e).replace("\n", " ")
        raise ImageFileError(f"cannot read image {p}: corrupt or unsupported file ({msg})") from e


def save_png(x: torch.Tensor, path: PathLike) -> Path:
    """Write one image ``[1, 3, H, W]`` (or ``[3, H, W]``) as a lossless 8-bit PNG.

    Values are quantised to 8 bits (round to nearest); parent folders are created.
    """
    if x.dim() == 3:
        x = x.unsqueeze(0)
    check_image(x, "x", batch=1)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tensor_to_uint8(x)).save(p, format="PNG", compress_level=6)
    return p


def list_images(folder: PathLike, recursive: bool = False) -> list[Path]:
    """Sorted image files under ``folder`` with a known extension."""
    root = Path(folder)
    if not root.is_dir():
        raise ImageFileError(f"image folder not found: {root}")
    it = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
