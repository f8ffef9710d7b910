"""Train the shipped DISCO purification network (iqaguard.defenses "disco").

Usage (the defaults are the shipped recipe; the model card records the exact command)::

    nice -n 10 python scripts/train_disco.py --threads 1

A small DISCO / LIIF network (EDSR-baseline encoder without up-sampling, MLP ``imnet`` with
feature unfolding, local ensemble and cell decoding, as the official DISCO configs) with a
residual output and a zero-initialised last MLP layer, so training starts at the identity. Data,
augmentation, loss, optimiser and the choice of the step count on the **val** pairs are those of
``scripts/train_real_esrgan.py`` (its ``fit``): ``adversarial_pairs("train", 8, 96, 0)``, random
sub-crops (48x48: DISCO's ``inp_size``) with flips and rotations, L1 to the clean crop, Adam at
a constant learning rate, the best of the val checkpoints ``adversarial_pairs("val", 2, 96, 3)``
kept. The test pairs are scored once, after the choice (``psnr_check``). Writes
``defenses/weights/disco.safetensors`` and the "DISCO" section of ``defenses/weights/MODEL_CARD.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from iqaguard.training.checkpoint import save_model
from iqaguard.defenses.purification.disco import LIIF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training import score_shipped, write_section  # noqa: E402
from train_real_esrgan import fit, fit_arguments  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-feats", type=int, default=32)
    p.add_argument("--n-resblocks", type=int, default=4)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64], help="imnet hidden widths")
    args = fit_arguments(p, steps=1200, val_every=100, lr=1e-3, last_lr_scale=1.0, loss="l1",
                         last="the last imnet layer").parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    config = {"n_colors": 3, "n_feats": args.n_feats, "n_resblocks": args.n_resblocks, "hidden_list": args.hidden,
              "feat_unfold": True, "local_ensemble": True, "cell_decode": True, "residual": True}
    net = LIIF(**config)
    last = net.imnet.layers[-1]
    torch.nn.init.zeros_(last.weight)  # residual output: training starts at the identity
    torch.nn.init.zeros_(last.bias)

    best, curve, train_s = fit(net, lambda a: net((a - 0.5) / 0.5) * 0.5 + 0.5, args, last)
    net.load_state_dict(best[2])
    net.eval()
    path = args.out / "disco.safetensors"
    save_model(net, path, config, steps=str(best[1]))

    if args.explore:
        print(f"best val {best[0]:.3f} dB at step {best[1]}; curve {curve}")
        return 0
    test, sha, n_params = score_shipped("disco", path, net)
    print(f"best val {best[0]:.3f} dB at step {best[1]}; test {test}; {path} sha256 {sha}")

    cmd = "python scripts/train_disco.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Model card: DISCO", "",
        "The network of the `disco` purification: a small DISCO local implicit function (Ho & Vasconcelos, "
        "\"DISCO: Adversarial Defense with Local Implicit Functions\", NeurIPS 2022; official `encoder` / "
        "`imnet` key names) trained from scratch by `scripts/train_disco.py` to map attacked builtin "
        "photographs back to the clean ones.", "",
        f"- architecture: EDSR-baseline encoder (no up-sampling) {args.n_resblocks} residual blocks x "
        f"{args.n_feats} features; imnet MLP hidden {args.hidden}; feature unfolding 3x3, local ensemble, cell "
        "decoding (the official options); residual output (input + LIIF, last MLP layer zero-initialised); "
        f"{n_params} parameters (official DISCO: 16 blocks x 64, hidden 256 x 4)",
        f"- command: `{cmd.strip()}` (run under `nice -n 10`)",
        "- data: `adversarial_pairs(\"train\", 8, 96, 0)`: 888 (clean, attacked) 96x96 crops of the builtin-kadid "
        "train-split photographs, attacked on builtin-nr by I-FGSM 2/4/8 and PGD 4/8 /255 (10 steps); random "
        f"{args.crop}x{args.crop} sub-crops, flips, 90-degree rotations",
        f"- recipe: L1 loss to the clean crop (DISCO's own loss), Adam lr {args.lr} constant, batch {args.batch}, "
        f"seed {args.seed}, {args.threads} CPU thread(s); up to {args.steps} steps / {args.max_minutes:g} min, "
        f"validated every {args.val_every} steps",
        f"- step choice (val split only, `adversarial_pairs(\"val\", 2, 96, 3)`, 48 crops): best val PSNR "
        f"{best[0]:.3f} dB at step {best[1]} (identity = attacked: {curve[0][1]:.3f} dB); curve "
        + ", ".join(f"{s}: {v}" for s, v in curve),
        f"- test (scored once after the choice, `psnr_check`: `adversarial_pairs(\"test\", 2, 96, 7)`, "
        f"{test['n']} crops): attacked {test['attacked']:.3f} dB -> purified {test['purified']:.3f} dB to the clean "
        f"crops (gain {test['gain']:+.3f} dB)",
        f"- training time: {train_s / 60:.1f} min wall (CPU shared with other jobs)",
        f"- file: `{path.name}` ({path.stat().st_size / 1024:.1f} KB), sha256 `{sha}`", ""]
    write_section(args.out / "MODEL_CARD.md", lines[0], lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
