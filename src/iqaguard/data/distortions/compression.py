"""KADID-10k compression (types 9-10; Lin, Hosu & Saupe, QoMEX 2019, Table 1 "Compression").

Both codecs are Pillow's (libjpeg and OpenJPEG). JPEG 2000 is registered only when Pillow was
built with OpenJPEG (``PIL.features.check("jpg_2000")``); without it type 9 is absent from
:data:`DISTORTIONS` and asking for it raises an ``InputError`` naming the known types.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, features

from ._core import register
from ._ops import from_uint8, to_uint8

HAS_JPEG2000 = bool(features.check("jpg_2000"))


def _roundtrip(img: np.ndarray, **save_kwargs: object) -> np.ndarray:
    """Encode the 8-bit image with Pillow (``save_kwargs`` incl. ``format``) and decode it."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, **save_kwargs)
    buf.seek(0)
    with Image.open(buf) as dec:
        return from_uint8(np.asarray(dec.convert("RGB")))


def jpeg2000(img: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG 2000 (OpenJPEG, one quality layer, 5 wavelet levels) at compression ratio ``ratio``
    relative to the 24-bit image (deterministic; ``rng`` unused)."""
    return _roundtrip(img, format="JPEG2000", quality_mode="rates", quality_layers=[float(ratio)],
                      irreversible=True)


if HAS_JPEG2000:
    register(9, "jpeg2000", (30.0, 60.0, 120.0, 220.0, 400.0), "compression ratio")(jpeg2000)


@register(10, "jpeg", (40, 25, 15, 8, 4), "libjpeg quality")
def jpeg(img: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    """Baseline JPEG (libjpeg, 4:2:0 chroma subsampling) at ``quality`` (deterministic)."""
    return _roundtrip(img, format="JPEG", quality=int(quality), subsampling="4:2:0")
