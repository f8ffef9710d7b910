"""Train the FCN purification filter (iqaguard.defenses.purification.fcn) on attacked/clean pairs.

Usage (the defaults are the shipped recipe; the model card records the exact command)::

    nice -n 10 python scripts/train_fcn.py --threads 1

Training data, **train** split only (builtin-kadid seed-0 split by source): the cached pairs of
``_training.adversarial_pairs`` attacked on builtin-nr, (a) against colours, as the FCN's paper
does: 2 fixed 64x64 crops per photograph attacked by cAdv (20 Adam steps, lr 1e-3 and 5e-3
alternately) and (b) the default L-inf pairs, 8 fixed 96x96 crops per photograph attacked by
I-FGSM/PGD at 2/4/8 /255. Each batch: half cAdv, half L-inf pairs, random 64x64 crops with
random flips. Loss: minus the mean per-crop PSNR to the clean crop (:func:`psnr_loss`: a plain
MSE is dominated by the cAdv crops, ~100x the L-inf crops' MSE); Adam with a 5% linear warm-up
then a cosine-decayed lr, fixed seed.

Validation (**val** split, never test): every ``--eval-every`` steps the mean PSNR to the clean
crops of the purified val pairs (L-inf: ``adversarial_pairs("val", 2, 96, 3)``; cAdv: 1 crop of
64x64 per val photograph, seed 3); the shipped weights are the evaluation with the best mean of
the two PSNR gains (the only choice made on val). The test split is used once, afterwards, by
``_training.psnr_check`` (and the same check on cAdv test pairs), and written into the card.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from iqaguard.defenses.purification._neural import WEIGHTS_DIR
from iqaguard.training.checkpoint import save_model
from iqaguard.metrics import functional as FM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training import adversarial_pairs, psnr_check, write_section  # noqa: E402

Pair = Tuple[torch.Tensor, torch.Tensor]
#: the colour attacks of the FCN's training pairs (cAdv on builtin-nr, 20 steps)
CADV = (("cadv", {"lr": 1e-3}), ("cadv", {"lr": 5e-3}))


def crops(pool: Pair, n: int, side: int, g: torch.Generator) -> Pair:
    """``n`` random (clean, attacked) ``side`` crops (same window, same flip) of random pairs of ``pool``."""
    clean, att = pool
    idx = torch.randint(0, clean.shape[0], (n,), generator=g)
    h, w = clean.shape[-2:]
    cs, as_ = [], []
    for i in idx.tolist():
        t = int(torch.randint(0, h - side + 1, (1,), generator=g))
        left = int(torch.randint(0, w - side + 1, (1,), generator=g))
        c, a = clean[i, :, t:t + side, left:left + side], att[i, :, t:t + side, left:left + side]
        if bool(torch.rand((), generator=g) < 0.5):
            c, a = c.flip(-1), a.flip(-1)
        cs.append(c)
        as_.append(a)
    return torch.stack(cs), torch.stack(as_)


@torch.no_grad()
def val_psnr(fn: Callable[[torch.Tensor], torch.Tensor], pool: Pair, chunk: int = 16) -> Dict[str, float]:
    """Mean PSNR (dB) to the clean crops of ``pool``'s attacked crops, undefended and through ``fn``."""
    clean, att = pool
    out = torch.cat([fn(att[i:i + chunk]).clamp(0, 1) for i in range(0, att.shape[0], chunk)])
    a, p = float(FM.psnr(att, clean).mean()), float(FM.psnr(out, clean).mean())
    return {"attacked": round(a, 3), "purified": round(p, 3), "gain": round(p - a, 3)}


def fit(net: nn.Module, pools: Sequence[Pair], val: Dict[str, Pair], loss_fn: Callable, *, steps: int,
        batch: int, side: int, lr: float, seed: int, eval_every: int,
        forward: Callable = None) -> Tuple[nn.Module, List[Dict], Dict, float]:
    """Adam (warm-up, cosine lr) on ``batch`` crops per step, split evenly over ``pools``; keep the best-val state.

    Returns ``(best network, val history, best record, seconds)``; a record has ``step``, one PSNR
    dict per val pool and ``score`` (mean gain).
    """
    forward = forward or net
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    warm = max(1, steps // 20)  # linear warm-up over the first 5% of the steps, then cosine decay
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    history, best, best_state, t0 = [], None, None, time.time()
    per = [batch // len(pools) + (i < batch % len(pools)) for i in range(len(pools))]

    def evaluate(step: int) -> None:
        nonlocal best, best_state
        net.eval()
        rec = {"step": step, **{k: val_psnr(lambda x: first(forward(x)), v) for k, v in val.items()}}
        rec["score"] = round(sum(rec[k]["gain"] for k in val) / len(val), 3)
        net.train()
        history.append(rec)
        print(f"[{time.time() - t0:6.0f}s] {rec}", flush=True)
        if best is None or rec["score"] > best["score"]:
            best, best_state = rec, copy.deepcopy(net.state_dict())

    net.train()
    for step in range(steps):
        if step % eval_every == 0:
            evaluate(step)
        parts = [crops(p, n, side, g) for p, n in zip(pools, per)]
        clean = torch.cat([c for c, _ in parts])
        att = torch.cat([a for _, a in parts])
        loss = loss_fn(forward(att), clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    evaluate(steps)
    net.load_state_dict(best_state)
    net.eval()
    return net, history, best, time.time() - t0


def psnr_loss(y: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Minus the mean per-crop PSNR (dB): ``mean(10 log10(MSE_i + 1e-8))``.

    Unlike a plain MSE, which the few strongly attacked (colour) crops dominate (their MSE is ~100x
    that of an L-inf crop at 42 dB), every crop counts by its PSNR, the figure the check reports.
    """
    return 10 * torch.log10(((y - clean) ** 2).flatten(1).mean(1) + 1e-8).mean()


def first(y):
    """The restored image of a network that may return several (MPRNet: stage 3 first)."""
    return y[0] if isinstance(y, (list, tuple)) else y


def file_lines(path: Path) -> List[str]:
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return [f"- file: `{path.name}` ({path.stat().st_size / 1024:.1f} KB), sha256 `{sha}`"]


def fmt(d: Dict[str, float]) -> str:
    return f"attacked {d['attacked']:.2f} dB -> purified {d['purified']:.2f} dB (gain {d['gain']:+.2f} dB)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from iqaguard.defenses.purification.fcn import FCN, FCNet

    linf, cadv = adversarial_pairs("train", 8, 96, 0), adversarial_pairs("train", 2, 64, 0, attacks=CADV)
    val = {"linf": adversarial_pairs("val", 2, 96, 3), "cadv": adversarial_pairs("val", 1, 64, 3, attacks=CADV)}
    config = dict(FCN.arch)
    net = FCNet(config["widths"], config["kernel_size"], config["norm"], config["residual"])
    net, history, best, secs = fit(net, [cadv, linf], val, psnr_loss, steps=args.steps,
                                   batch=args.batch, side=args.side, lr=args.lr, seed=args.seed,
                                   eval_every=args.eval_every)
    path = args.out / "fcn.safetensors"
    save_model(net, path, config, trained_by="scripts/train_fcn.py", val_step=str(best["step"]))

    p_fcn = FCN(weights=path)  # the shipped model, scored once on the test split
    test = psnr_check(p_fcn)
    test_cadv = val_psnr(p_fcn, adversarial_pairs("test", 1, 64, 7, attacks=CADV))
    print(f"best val {best}; test L-inf {test}; test cAdv {test_cadv}", flush=True)

    cmd = "python scripts/train_fcn.py " + " ".join(argv if argv is not None else sys.argv[1:])
    n_params = sum(q.numel() for q in net.parameters())
    lines = [
        "# Model card: FCN", "",
        "The neural filter FCN (Gushchin et al. 2024, \"Adversarial purification for no-reference "
        "image-quality metrics\"; Guardians of Image Quality A.3.5) trained from scratch by "
        "`scripts/train_fcn.py` on attacked/clean crops of the builtin photographs.", "",
        f"- architecture: conv 3x3 3->64, LeakyReLU 0.2, conv 3x3 64->32, LeakyReLU 0.2, conv 3x3 32->3, "
        f"residual output `x + net(x)` (last layer zero-initialised: training starts at the identity); "
        f"{n_params} parameters; config `{config}`",
        f"- command: `{cmd}` (run under `nice -n 10`, {args.threads} CPU thread(s))",
        f"- data (train split only, attacked on builtin-nr): {cadv[0].shape[0]} cAdv pairs "
        f"(2 crops of 64x64 per photograph, cAdv 20 steps at lr 1e-3 / 5e-3) and {linf[0].shape[0]} L-inf pairs "
        "(8 crops of 96x96 per photograph, I-FGSM 2/4/8 and PGD 4/8 /255, 10 steps); batches half of each",
        f"- recipe: loss minus the mean per-crop PSNR to the clean crop, Adam lr {args.lr} (5% warm-up, "
        f"cosine decay), {args.steps} steps of batch "
        f"{args.batch} random {args.side}x{args.side} crops (random flips), seed {args.seed}",
        f"- selection on val only: PSNR every {args.eval_every} steps on {val['linf'][0].shape[0]} L-inf and "
        f"{val['cadv'][0].shape[0]} cAdv val pairs; shipped: step {best['step']} (best mean gain)",
        f"  - val L-inf: {fmt(best['linf'])}",
        f"  - val cAdv: {fmt(best['cadv'])}",
        "  - val curve (step: L-inf gain / cAdv gain dB): " + ", ".join(
            f"{r['step']}: {r['linf']['gain']:+.2f}/{r['cadv']['gain']:+.2f}" for r in history),
        f"- test (once, after training; `psnr_check`, {test['n']} test-split 96x96 L-inf pairs, seed 7): "
        f"{fmt(test)}",
        f"- test cAdv (once, {adversarial_pairs('test', 1, 64, 7, attacks=CADV)[0].shape[0]} test-split 64x64 "
        f"cAdv pairs, seed 7): {fmt(test_cadv)}",
        f"- training time: {secs / 60:.1f} min wall ({args.threads} CPU thread, shared machine)",
        *file_lines(path), ""]
    write_section(args.out / "MODEL_CARD.md", lines[0], lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
