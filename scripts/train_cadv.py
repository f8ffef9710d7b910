"""Train the cAdv colouriser (iqaguard.attacks.cadv) on the builtin photographs; measure its lr presets.

Usage (the defaults are the shipped recipe; the model card records the exact command)::

    nice -n 10 python scripts/train_cadv.py --seed 0 --threads 2            # train, validate, write the card
    nice -n 10 python scripts/train_cadv.py --calibrate --threads 2         # only the lr sweep (shipped weights)

Training data: random 64x64 crops (random horizontal flips) of the builtin photographs of the
builtin-kadid **train** split (``split_sources(0)["train"]``). The network learns the CIELAB
``ab`` channels from ``L`` plus colour hints, as the user-guided colouriser of Zhang et al. (2017)
does: per crop, no hints with probability 1/4, else the true ``ab`` at a random fraction of the
pixels, log-uniform in [0.001, 0.05]. Loss: L1 on ``ab / 110``; Adam with a cosine-decayed
learning rate; a fixed number of steps, no checkpoint selection.

Validation, never the test photographs: fixed 96x96 crops (2 per photograph) of the **val**
split. Reported: mean absolute ``ab`` error at hint densities 0 and 0.01 against the grey
(``ab = 0``) baseline, and, for the lr sweep, the attack on builtin-nr at 20 steps on 24 of
these crops (central 64x64): mean / min SSIM to the clean crop and the mean score gain per lr
(``--calibrate`` redoes only this sweep and puts it into the card). SSIM is the restriction's
(``functional.fidelity_ssim``, RGB). The presets themselves are calibrated by
``scripts/calibrate_attacks.py --attack cadv`` (160 steps: at 20 no lr reaches SSIM 0.8).
"""
from __future__ import annotations


import argparse
import hashlib
import math
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab

import iqaguard
from iqaguard.attacks.cadv import (AB_SCALE, WEIGHTS_FILE, CAdv, Colouriser, load_colouriser, random_hints,
                                  save_colouriser)
from iqaguard.metrics import functional as FM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training import fixed_crops, photos as _photos, section as card_section, write_section  # noqa: E402

CROP, VAL_CROP, VAL_PER_PHOTO = 64, 96, 2
CARD_HEADING = "# Model card: cAdv colouriser"
SWEEP = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3)
SWEEP_HEAD = "- lr sweep of the attack on builtin-nr"


def val_crops(images: List[torch.Tensor], seed: int) -> torch.Tensor:
    """``VAL_PER_PHOTO`` fixed random ``VAL_CROP`` crops of every image (drawn from ``seed + 1``), float."""
    return fixed_crops(images, VAL_PER_PHOTO, VAL_CROP, seed + 1).float() / 255


def batch(pool: List[torch.Tensor], n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` random ``CROP`` crops of random photographs, each flipped with probability 1/2."""
    out = []
    for i in torch.randint(0, len(pool), (n,), generator=g).tolist():
        h, w = pool[i].shape[-2:]
        t = int(torch.randint(0, h - CROP + 1, (1,), generator=g))
        l = int(torch.randint(0, w - CROP + 1, (1,), generator=g))
        c = pool[i][..., t:t + CROP, l:l + CROP]
        out.append(c.flip(-1) if bool(torch.rand(1, generator=g) < 0.5) else c)
    return torch.cat(out).float() / 255


def training_hints(ab: torch.Tensor, g: torch.Generator) -> tuple:
    """Per crop: no hints (probability 1/4) or the true ab at a log-uniform [0.001, 0.05] fraction of pixels."""
    n = ab.shape[0]
    dens = torch.exp(math.log(1e-3) + (math.log(5e-2) - math.log(1e-3)) * torch.rand(n, generator=g))
    dens = torch.where(torch.rand(n, generator=g) < 0.25, torch.zeros_like(dens), dens)
    u = torch.rand((n, 1, *ab.shape[-2:]), generator=g)
    mask = (u < dens.view(-1, 1, 1, 1)).to(ab)
    return ab * mask, mask


def train(pool: List[torch.Tensor], steps: int, batch_size: int, lr: float, seed: int) -> Colouriser:
    """``steps`` Adam steps (cosine-decayed ``lr``) of L1 on ``ab / 110``; seeded init and batches."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Colouriser()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
    for t in range(steps):
        lab = rgb_to_lab(batch(pool, batch_size, g))
        hints, mask = training_hints(lab[:, 1:], g)
        loss = F.l1_loss(net(lab[:, :1], hints, mask) / AB_SCALE, lab[:, 1:] / AB_SCALE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if t % 100 == 0 or t == steps - 1:
            print(f"step {t}: L1(ab/110) {loss.item():.4f}", flush=True)
    return net.eval().requires_grad_(False)


@torch.no_grad()
def ab_errors(net: Colouriser, x: torch.Tensor, seed: int) -> Dict[str, float]:
    """Mean |ab error| (ab units) of the colouriser at hint densities 0 and 0.01, and of grey (ab = 0)."""
    lab = rgb_to_lab(x)
    ab = lab[:, 1:]
    out = {"grey (ab=0)": float(ab.abs().mean())}
    for d in (0.0, 0.01):
        hints, mask = random_hints(ab, d, torch.Generator().manual_seed(seed + 2))
        out[f"hints {d:g}"] = float((net(lab[:, :1], hints, mask) - ab).abs().mean())
    return out


def sweep_crops(val: torch.Tensor) -> torch.Tensor:
    """The lr sweep's crops: the central 64x64 of the first val crop of every val photograph (24)."""
    o = (VAL_CROP - 64) // 2
    return val[::VAL_PER_PHOTO, :, o:o + 64, o:o + 64].contiguous()


def sweep(x: torch.Tensor, colouriser: Path, seed: int, chunk: int = 8) -> List[Dict[str, float]]:
    """The attack on builtin-nr (presets' 20 steps, no floor) for every lr of :data:`SWEEP`."""
    metric = iqaguard.metrics.create("builtin-nr")
    with torch.no_grad():
        clean = metric(x)
    rows = []
    for lr in SWEEP:
        a = CAdv(lr=lr, steps=20, colouriser=colouriser)
        adv = torch.cat([a(metric, x[i:i + chunk], generator=torch.Generator().manual_seed(seed + i))
                         for i in range(0, len(x), chunk)])
        with torch.no_grad():
            s, gain = FM.fidelity_ssim(adv, x), metric(adv) - clean
        lab_adv, lab_x = rgb_to_lab(adv), rgb_to_lab(x)
        rows.append({"lr": lr, "ssim_mean": float(s.mean()), "ssim_min": float(s.min()),
                     "gain": float(gain.mean()), "improved": float((gain > 0).float().mean()),
                     "dab": float((lab_adv[:, 1:] - lab_x[:, 1:]).abs().mean()),
                     "max_dL": float((lab_adv[:, 0] - lab_x[:, 0]).abs().max())})
        r = rows[-1]
        print(f"lr {lr:g}: SSIM mean {r['ssim_mean']:.4f} min {r['ssim_min']:.4f}; gain {r['gain']:.3f}, "
              f"improved {r['improved']:.0%}; mean |dab| {r['dab']:.2f}; max |dL| {r['max_dL']:.1e}", flush=True)
    return rows


def sweep_lines(rows: List[Dict[str, float]], n: int) -> List[str]:
    """The card's block for a sweep (it starts with :data:`SWEEP_HEAD`)."""
    return [f"{SWEEP_HEAD} ({n} val crops of 64x64, one per val photograph; 20 steps, hints 0.01, no floor; SSIM = "
            "`functional.fidelity_ssim` (RGB) to the clean crop, gain = builtin-nr score change, "
            "|Δab| and |ΔL| in CIELAB units; "
            f"command `python scripts/train_cadv.py --calibrate`):"] + [
        f"  - lr {r['lr']:g}: SSIM mean {r['ssim_mean']:.4f} (min {r['ssim_min']:.4f}), mean gain {r['gain']:.3f}, "
        f"improved {r['improved']:.0%}, mean |Δab| {r['dab']:.2f}, max |ΔL| {r['max_dL']:.1e}" for r in rows]


def section(text: str) -> tuple:
    """``(start, end)`` of this script's section of the model card text (``start`` -1: none)."""
    return card_section(text, CARD_HEADING)


def write_card(card: Path, lines: List[str]) -> None:
    """Replace this script's section of the model card (or append it), leaving the others as they are."""
    write_section(card, CARD_HEADING, lines)


def write_sweep(card: Path, rows: List[Dict[str, float]], n: int) -> None:
    """Put the sweep block into this script's card section, before its test-split line (replacing an old one)."""
    text = card.read_text(encoding="utf-8")
    start, end = section(text)
    if start < 0:
        raise SystemExit(f"{card} has no '{CARD_HEADING}' section: train first")
    lines = [ln for ln in text[start:end].rstrip("\n").split("\n")]
    keep, skipping = [], False
    for ln in lines:
        if ln.startswith(SWEEP_HEAD):
            skipping = True
            continue
        if skipping and ln.startswith("  - "):
            continue
        skipping = False
        keep.append(ln)
    at = next(i for i, ln in enumerate(keep) if ln.startswith("- test-split"))
    write_card(card, keep[:at] + sweep_lines(rows, n) + keep[at:])


def card_lines(argv: List[str], args: argparse.Namespace, n_train: int, n_val: int, err: Dict[str, float],
               train_s: float, path: Path) -> List[str]:
    """This script's model-card section for a training run (the sweep block is added by :func:`write_sweep`)."""
    sha = hashlib.sha256(path.read_bytes()).hexdigest()

    cmd = "python scripts/train_cadv.py " + " ".join(argv)
    n_params = sum(q.numel() for q in Colouriser().parameters())
    lines = [
        CARD_HEADING, "",
        "The colourisation network of the cAdv attack (Bhattad et al., \"Unrestricted Adversarial Examples "
        "via Semantic Manipulation\", ICLR 2020), after the user-guided colouriser of Zhang et al. (\"Real-Time "
        "User-Guided Image Colorization with Learned Deep Priors\", 2017), trained from scratch by "
        "`scripts/train_cadv.py`. The attack optimises a copy of these weights per image; it uses only the "
        "change `net_θ - net_θ0`, so the network's own colourisation error is not part of any attack.", "",
        f"- architecture: `Colouriser`, encoder-decoder at 1, 1/2, 1/4 resolution (16/32/64 channels, two "
        f"dilated convolutions, skips, LeakyReLU, no normalisation), {n_params} parameters; input L, ab hints, "
        "hint mask; output ab = 110 tanh(.), output layer zero-initialised (training starts from grey)",
        f"- command: `{cmd}` (run under `nice -n 10`)",
        f"- data: random {CROP}x{CROP} crops (random flips) of the {n_train} builtin photographs of "
        "the builtin-kadid train split (seed 0 split by source); no val or test photograph was trained on",
        f"- recipe: L1 on ab/110, Adam lr {args.lr} (cosine decay to 0), batch {args.batch}, {args.steps} steps, "
        "hints: none with probability 1/4, else true ab at a log-uniform 0.001..0.05 fraction of pixels; "
        f"seed {args.seed}, {args.threads} CPU threads; no checkpoint selection",
        f"- validation ({n_val} fixed {VAL_CROP}x{VAL_CROP} crops of the 24 val-split photographs), mean "
        "|ab error| in CIELAB units: " + ", ".join(f"{k} {v:.2f}" for k, v in err.items()),
    ]
    lines += ["- test-split photographs: not used here",
              f"- training time: {train_s / 60:.1f} min wall (2 CPU threads shared with other jobs)",
              f"- file: `{path.name}` ({path.stat().st_size / 1024:.1f} KB), sha256 `{sha}`", ""]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=WEIGHTS_FILE.parent, help="folder of the weights and the card")
    p.add_argument("--calibrate", action="store_true", help="only the lr sweep, with the weights in --out")
    p.add_argument("--no-sweep", action="store_true", help="train and validate, skip the lr sweep")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = args.out / WEIGHTS_FILE.name
    val = val_crops(_photos("val", uint8=True), args.seed)
    card = args.out / "MODEL_CARD.md"
    if args.calibrate:
        x = sweep_crops(val)
        write_sweep(card, sweep(x, path, args.seed), len(x))
        return 0

    train_pool = _photos("train", uint8=True)
    t0 = time.time()
    net = train(train_pool, args.steps, args.batch, args.lr, args.seed)
    train_s = time.time() - t0
    save_colouriser(net, path, {"steps": str(args.steps), "seed": str(args.seed)}).chmod(0o644)
    net = load_colouriser(path)
    err = ab_errors(net, val, args.seed)
    print(f"trained {args.steps} steps in {train_s / 60:.1f} min; val |ab error| {err}", flush=True)
    write_card(card, card_lines(argv if argv is not None else sys.argv[1:], args, len(train_pool), len(val),
                                err, train_s, path))
    if not args.no_sweep:
        x = sweep_crops(val)
        write_sweep(card, sweep(x, path, args.seed), len(x))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
