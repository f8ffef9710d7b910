"""Train a small MPRNet (iqaguard.defenses.purification.mprnet) to purify L-inf adversarial crops.

Usage (the defaults are the shipped recipe; the model card records the exact command)::

    nice -n 10 python scripts/train_mprnet.py --threads 1

Training data, **train** split only: the cached pairs ``_training.adversarial_pairs("train", 8, 96, 0)``
(8 fixed 96x96 crops per builtin photograph attacked on builtin-nr by I-FGSM/PGD at 2/4/8 /255),
random 48x48 crops with random flips. The network is the full 3-stage MPRNet at small widths
(``MPRNet.arch``: n_feat 16, scale_unetfeats 8, scale_orsnetfeats 8, 2 CABs per ORB). Loss: as the
official recipe, summed over the three stages' restored images, but minus the mean per-crop PSNR
(``train_fcn.psnr_loss``, so that the lightly attacked crops at ~48 dB count as much as the 8/255
ones) instead of its Charbonnier + edge loss; Adam with a 5% warm-up then cosine-decayed lr;
``tail`` zero-initialised so the stage-3 output starts at the input.

Validation (**val** split, never test): mean stage-3 PSNR to the clean crops of
``adversarial_pairs("val", 2, 96, 3)`` every ``--eval-every`` steps; the shipped weights are the
best evaluation. The test split is used once, afterwards (``_training.psnr_check``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from iqaguard.defenses.purification._neural import WEIGHTS_DIR
from iqaguard.training.checkpoint import save_model
from iqaguard.defenses.purification.mprnet import OFFICIAL_DENOISING, MPRNet, MPRNetwork

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training import adversarial_pairs, psnr_check, write_section  # noqa: E402
from train_fcn import file_lines, fit, fmt, psnr_loss  # noqa: E402  (the shared loop of the purification filters)


def stages_loss(outs, clean: torch.Tensor) -> torch.Tensor:
    """Sum over the three stages' images of :func:`train_fcn.psnr_loss` (minus the mean per-crop PSNR)."""
    return sum(psnr_loss(y, clean) for y in outs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--side", type=int, default=48)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    linf = adversarial_pairs("train", 8, 96, 0)
    val = {"linf": adversarial_pairs("val", 2, 96, 3)}
    config = dict(MPRNet.arch)
    torch.manual_seed(args.seed)
    net = MPRNetwork(**{k: config[k] for k in OFFICIAL_DENOISING})
    nn.init.zeros_(net.tail.weight)
    net, history, best, secs = fit(net, [linf], val, stages_loss, steps=args.steps, batch=args.batch,
                                   side=args.side, lr=args.lr, seed=args.seed, eval_every=args.eval_every)
    path = args.out / "mprnet.safetensors"
    save_model(net, path, config, trained_by="scripts/train_mprnet.py", val_step=str(best["step"]))

    test = psnr_check(MPRNet(weights=path))  # the shipped model, scored once on the test split
    print(f"best val {best}; test {test}", flush=True)

    cmd = "python scripts/train_mprnet.py " + " ".join(argv if argv is not None else sys.argv[1:])
    n_params = sum(q.numel() for q in net.parameters())
    lines = [
        "# Model card: MPRNet", "",
        "A small MPRNet (Zamir et al., \"Multi-Stage Progressive Image Restoration\", CVPR 2021; "
        "Guardians of Image Quality A.3.5) trained from scratch by `scripts/train_mprnet.py` to purify "
        "L-inf adversarial crops of the builtin photographs (the paper's benchmark uses the official "
        "denoising checkpoint; that file loads with `weights=<file>.pth`).", "",
        f"- architecture: full 3-stage MPRNet (CAB encoder-decoders, SAM, CSFF, ORSNet), official key names; "
        f"config `{config}`; {n_params} parameters; output: the stage-3 image",
        f"- command: `{cmd}` (run under `nice -n 10`, {args.threads} CPU thread(s))",
        f"- data (train split only): {linf[0].shape[0]} L-inf pairs (8 crops of 96x96 per photograph, "
        "attacked on builtin-nr by I-FGSM 2/4/8 and PGD 4/8 /255, 10 steps)",
        f"- recipe: loss minus the mean per-crop PSNR, summed over the 3 stages' images (the official "
        f"recipe sums a Charbonnier + edge loss), Adam lr {args.lr} (5% warm-up, cosine decay), "
        f"{args.steps} steps of batch {args.batch} random {args.side}x{args.side} crops (random flips), "
        f"`tail` zero-initialised, seed {args.seed}",
        f"- selection on val only: stage-3 PSNR every {args.eval_every} steps on {val['linf'][0].shape[0]} "
        f"val-split 96x96 L-inf pairs; shipped: step {best['step']}; val {fmt(best['linf'])}",
        "  - val curve (step: gain dB): " + ", ".join(f"{r['step']}: {r['linf']['gain']:+.2f}" for r in history),
        f"- test (once, after training; `psnr_check`, {test['n']} test-split 96x96 L-inf pairs, seed 7): {fmt(test)}",
        f"- training time: {secs / 60:.1f} min wall ({args.threads} CPU thread, shared machine)",
        *file_lines(path), ""]
    write_section(args.out / "MODEL_CARD.md", lines[0], lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
