"""Image I/O: any common format -> ``[1, 3, H, W]`` float32 RGB in ``[0, 1]``; lossless PNG out."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageFileError
from ..validation import check_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

PathLike = Union[str, Path]


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """Convert a PIL image to ``[1, 3, H, W]`` float32 in [0, 1].

    Grayscale is replicated to three channels; an alpha channel is composited over white;
    16-bit images are scaled by 65535.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        arr = arr / (65535.0 if arr.max() > 255 else 255.0)
        arr = np.repeat(arr[..., None], 3, axis=2)
    else:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, rgba)
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0).contiguous()


def load_image(path: PathLike) -> torch.Tensor:
    """Read an image file (PNG, JPEG, BMP, TIFF, WebP).

    EXIF orientation is applied, grayscale becomes RGB, alpha is composited over white.

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
            img.load()
            img = ImageOps.exif_transpose(img)
            return pil_to_tensor(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageFileError(f"cannot read image {p}: corrupt or unsupported file ({e})") from e


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` or ``[1, 3, H, W]`` float in [0, 1] -> ``[H, W, 3]`` uint8 (rounded)."""
    if x.dim() == 4:
        x = x[0]
    arr = (x.detach().float().clamp(0, 1).cpu() * 255.0).round().to(torch.uint8)
    return arr.permute(1, 2, 0).numpy()


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


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image of ``x`` as baseline JPEG (PIL/libjpeg, 4:2:0) at ``quality`` and decode.

    Args:
        x: ``[B, 3, H, W]`` float in [0, 1] (any device; computed on CPU).
        quality: libjpeg quality 1..95.

    Returns:
        ``[B, 3, H, W]`` float32 on ``x``'s device. Not differentiable (use BPDA).
    """
    import io as _io

    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality: expected 1..100, got {quality}")
    out = []
    for img in x:
        buf = _io.BytesIO()
        Image.fromarray(tensor_to_uint8(img)).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as dec:
            out.append(pil_to_tensor(dec))
    return torch.cat(out).to(x.device)
