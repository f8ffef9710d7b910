"""``iqaguard certify IMAGE --metric M --defense D``: the certified score of one image (registered in cli.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .bench.cli import fail, out_console, require_defense, say
from .errors import IqaguardError


def certify_cmd(image: Path = typer.Argument(..., help="input image file (the distorted image of an FR pair)"),
                metric: str = typer.Option("builtin-nr", "--metric", "-m", help="metric (iqaguard list metrics)"),
                defense: str = typer.Option("ms", "--defense", "-d",
                                            help="certified defense: rs, drs, ddrs, densepure, ms, dms, rs-reg, cert-reg"),
                ref: Optional[Path] = typer.Option(None, "--ref", help="reference image (full-reference metrics)"),
                preset: Optional[int] = typer.Option(None, "--preset", "-p",
                                                     help="0: sigma 0.12, eps 0.05, n 1000 (Guardians of Image "
                                                          "Quality); 1-3: sigma 0.1 / 0.25 / 0.5, n 2000 (FS-IQA)"),
                sigma: Optional[float] = typer.Option(None, help="noise level on the [0, 1] scale"),
                n: Optional[int] = typer.Option(None, help="noise samples"),
                eps: Optional[float] = typer.Option(None, help="L2 perturbation the interval is certified for (ms, dms)"),
                alpha: Optional[float] = typer.Option(None, help="failure probability of the certificate"),
                seed: int = typer.Option(0, "--seed", min=0, help="seed of the noise draws")) -> None:
    """Certify METRIC smoothed by DEFENSE on IMAGE: print the smoothed score, its certified interval and the
    certified radius (rs family) or perturbation size (ms family)."""
    import torch

    from . import defenses, metrics
    from .cli import _load
    from .defenses.certified.base import Smoothed
    try:
        require_defense(defense, Smoothed, "certified")
        m = metrics.create(metric)
        kw = {k: v for k, v in {"sigma": sigma, "n": n, "eps": eps, "alpha": alpha}.items() if v is not None}
        c = defenses.create(defense, metric=m, preset=preset, **kw)
        x = _load(image)
        r_img = _load(ref) if ref is not None else None
        if m.kind == "fr" and r_img is None:
            raise IqaguardError(f"--ref: {metric} is full-reference; give the reference image with --ref")
        r = c.certify(x, ref=r_img, generator=torch.Generator().manual_seed(seed))
    except IqaguardError as e:
        fail(e)
    row = r.as_rows()[0]
    size = (f"certified L2 radius {row['radius']:.4f}" if row["radius"] is not None
            else f"for every L2 perturbation <= {row['eps']:.4f}")
    direction = "lower" if m.lower_better else "higher"
    out_console.print(f"{metric} ({direction} is better) smoothed by {defense}: score {row['score']:.4f}")
    if row["abstain"]:
        say(f"abstained: the {row['samples']} samples certify no interval at alpha {c.alpha} "
            f"(more samples with --n, or a smaller sigma / eps)"
            + (f", or the backbone's Jacobian norm is below tau {c.tau:g}" if hasattr(c, "tau") else ""))
    elif hasattr(c, "p_valid"):  # RS-Reg / Cert-Reg: a probabilistic certificate of the smoothed output
        out_console.print(f"within {size}, the smoothed output stays in [{row['lower']:.4f}, {row['upper']:.4f}] "
                          f"with probability >= {c.p_valid:g} over the noise (the bound behind it holds with "
                          f"probability >= {1 - c.alpha:g}; {row['samples']} noise samples, sigma {c.sigma:g})")
    else:
        out_console.print(f"certified interval [{row['lower']:.4f}, {row['upper']:.4f}] {size}, "
                          f"with probability >= {1 - c.alpha:g} ({row['samples']} noise samples, sigma {c.sigma:g})")
