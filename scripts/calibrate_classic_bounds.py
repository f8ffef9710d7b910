"""Calibrate the worst values of the weightless FR metrics (seed 002 appendix A.3.2).

For every option setting of ``psnr``, ``ssim`` and ``ms-ssim`` this runs
:func:`iqaguard.metrics.bounds.calibrate_bounds` on a folder of pristine photographs (JPEG q=10
versions and uniform-noise images, seeded) and prints the ``CALIBRATED_WORST`` table that
``src/iqaguard/metrics/classic.py`` stores.

Usage::

    python scripts/calibrate_classic_bounds.py                      # builtin photographs
    python scripts/calibrate_classic_bounds.py path/to/folder --seed 0
    python scripts/calibrate_classic_bounds.py --skimage            # skimage.data photos
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List

import torch

from iqaguard.data.io import list_images, load_image, pil_to_tensor
from iqaguard.metrics.bounds import calibrate_bounds
from iqaguard.metrics.classic import MSSSIM, PSNR, SSIM

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def builtin_folder() -> Path:
    """``src/iqaguard/data/photos`` of the installed package."""
    import iqaguard.data

    return Path(iqaguard.data.__file__).parent / "photos"


def skimage_images() -> List[torch.Tensor]:
    """A few RGB natural photographs shipped with scikit-image (offline)."""
    from PIL import Image
    from skimage import data

    return [pil_to_tensor(Image.fromarray(getattr(data, name)())) for name in SKIMAGE_PHOTOS]


def settings():
    """(registry name, options key, metric) for every option setting."""
    for luma in (True, False):
        yield "psnr", (luma,), PSNR(luma=luma)
        for down in (True, False):
            yield "ssim", (luma, down), SSIM(luma=luma, downsample=down)
        yield "ms-ssim", (luma,), MSSSIM(luma=luma)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path, default=None, help="folder of pristine photographs")
    ap.add_argument("--skimage", action="store_true", help="use scikit-image's sample photographs")
    ap.add_argument("--seed", type=int, default=0, help="seed of the noise images")
    ap.add_argument("--jpeg-quality", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    args = ap.parse_args(argv)

    if args.skimage:
        images, source = skimage_images(), "skimage.data: " + ", ".join(SKIMAGE_PHOTOS)
    else:
        folder = args.folder or builtin_folder()
        files = list_images(folder)
        if not files:
            print(f"no images in {folder}; pass a folder or --skimage", file=sys.stderr)
            return 2
        images, source = [load_image(p) for p in files], f"{folder} ({len(files)} images)"

    table = {}
    for name, key, metric in settings():
        b = calibrate_bounds(metric, images, seed=args.seed, jpeg_quality=args.jpeg_quality)
        table[(name, key)] = b.worst
        print(f"{name:8s} {str(key):14s} worst={b.worst:.4f} best={b.best:.4f}", file=sys.stderr)

    print(f"# source: {source}; seed {args.seed}; JPEG q={args.jpeg_quality}")
    print("CALIBRATED_WORST = {")
    for (name, key), worst in table.items():
        print(f"    ({name!r}, {key!r}): {round(worst, 4)!r},")
    print("}")
    if args.json:
        rows = [{"metric": n, "options": list(k), "worst": w} for (n, k), w in table.items()]
        args.json.write_text(json.dumps({"source": source, "seed": args.seed, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
