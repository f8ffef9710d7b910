"""Calibrate the worst values of the weightless FR metrics (Guardians of Image Quality appendix A.3.2).

For every option setting of ``psnr``, ``ssim`` and ``ms-ssim`` this runs
:func:`iqaguard.metrics.bounds.calibrate_bounds` on a folder of pristine photographs (JPEG q=10
versions and uniform-noise images, seeded) and prints the ``CALIBRATED_WORST`` table that
``src/iqaguard/metrics/classic.py`` stores.

By default the photographs are the builtin ones (``src/iqaguard/data/photos``) of the
builtin-kadid **train and validation** splits only: the test photographs of
``iqaguard.data.kadid_builtin.split_sources(0)`` (24 of 159), on which builtin-nr/fr and the
demo are evaluated, are left out, so no bound is fitted on test data (135 photographs, about
10 minutes on 2 CPU cores). ``--include-test`` uses all of them (the earlier protocol).

Usage::

    python scripts/calibrate_classic_bounds.py                      # builtin train+val photographs
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


def held_out_sources(seed: int = 0) -> List[str]:
    """Stems of the builtin-kadid test photographs (``split_sources(seed)["test"]``)."""
    from iqaguard.data.kadid_builtin import split_sources

    return split_sources(seed)["test"]


def skimage_images() -> List[torch.Tensor]:
    """A few RGB natural photographs shipped with scikit-image (offline)."""
    from PIL import Image
    from skimage import data

    return [pil_to_tensor(Image.fromarray(getattr(data, name)())) for name in SKIMAGE_PHOTOS]


def settings():
    """(registry name, options key, metric) for every option setting."""
    for luma in (True, False):
        yield "psnr", (luma,), PSNR(y_channel=luma)
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
    ap.add_argument("--include-test", action="store_true",
                    help="builtin photographs: keep the builtin-kadid test photographs too")
    args = ap.parse_args(argv)

    if args.skimage:
        images, source = skimage_images(), "skimage.data: " + ", ".join(SKIMAGE_PHOTOS)
    else:
        folder = args.folder or builtin_folder()
        files = list_images(folder)
        note = ""
        if args.folder is None and not args.include_test:
            held_out = set(held_out_sources(0))
            files = [p for p in files if p.stem not in held_out]
            note = f", builtin-kadid train+val only: the {len(held_out)} test photographs of split_sources(0) excluded"
        if not files:
            print(f"no images in {folder}; pass a folder or --skimage", file=sys.stderr)
            return 2
        images, source = [load_image(p) for p in files], f"{folder} ({len(files)} images{note})"

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
