"""What the training scripts share: the builtin photographs of a split, fixed validation crops,
attacked/clean training pairs and the PSNR check of the purification defenses, and model cards
shared by several weight files (each script owns one ``# Model card: ...`` section of the card
and replaces only that section, or appends it, leaving the others alone)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch

SECTION_PREFIX = "\n# Model card:"


def section(text: str, heading: str) -> Tuple[int, int]:
    """``(start, end)`` of the section that starts with ``heading`` in ``text`` (``(-1, -1)``: none)."""
    start = text.find(heading)
    if start < 0:
        return -1, -1
    end = text.find(SECTION_PREFIX, start + len(heading))
    return start, (end if end >= 0 else len(text))


def write_section(card: Path, heading: str, lines: List[str]) -> None:
    """Replace the section ``heading`` of ``card`` by ``lines`` (its first line is the heading), or
    append it when the card has none."""
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    start, end = section(text, heading)
    if start < 0:
        text = text.rstrip("\n") + ("\n\n" if text else "") + "\n".join(lines)
    else:
        text = text[:start] + "\n".join(lines).rstrip("\n") + "\n" + text[end:]
    card.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def fixed_crops(images: Sequence[torch.Tensor], per_image: int, side: int, seed: int) -> torch.Tensor:
    """``per_image`` random ``side`` x ``side`` crops of every image ``[1, C, H, W]``, drawn from a
    generator seeded with ``seed`` (the same crops on every run), concatenated in image order."""
    g, out = torch.Generator().manual_seed(seed), []
    for im in images:
        h, w = im.shape[-2:]
        for _ in range(per_image):
            t = int(torch.randint(0, h - side + 1, (1,), generator=g))
            l = int(torch.randint(0, w - side + 1, (1,), generator=g))
            out.append(im[..., t:t + side, l:l + side])
    return torch.cat(out)


def photos(split: str, uint8: bool = False) -> List[torch.Tensor]:
    """The builtin photographs of a builtin-kadid split (seed-0 split by source), each ``[1, 3, H, W]``:
    float in [0, 1], or the exact uint8 pixels with ``uint8``."""
    from iqaguard.data.builtin import PHOTOS_DIR
    from iqaguard.data.io import load_image
    from iqaguard.data.kadid_builtin import split_sources
    ims = [load_image(PHOTOS_DIR / f"{s}.jpg") for s in split_sources(0)[split]]
    return [(im * 255).round().to(torch.uint8) for im in ims] if uint8 else ims


#: the attacks that make the purification defenses' training and check pairs: (name, kwargs) on builtin-nr
PAIR_ATTACKS = (("ifgsm", {"eps": 2 / 255}), ("ifgsm", {"eps": 4 / 255}), ("ifgsm", {"eps": 8 / 255}),
                ("pgd", {"eps": 4 / 255}), ("pgd", {"eps": 8 / 255}))


def adversarial_pairs(split: str, per_photo: int, side: int, seed: int,
                      attacks: Sequence[Tuple[str, Dict]] = PAIR_ATTACKS) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(clean, attacked)`` ``[N, 3, side, side]`` crops of the ``split`` photographs, attacked on builtin-nr.

    ``per_photo`` fixed random crops per photograph (seed ``seed``); crop ``i`` is attacked by
    ``attacks[i % len(attacks)]`` (``iqaguard.attacks.create(name, **kwargs)``, generator seeded by
    ``seed + i``; the default pairs: I-FGSM and PGD, 10 steps, at 2, 4, 8 /255), so every budget is
    represented. The pairs are cached under ``$IQAGUARD_CACHE`` (default ``~/.cache/iqaguard``)
    in ``pairs-<hash>.pt`` keyed by every argument, so several training scripts share one attack run.
    """
    import iqaguard
    key = hashlib.sha256(repr((split, per_photo, side, seed, tuple(attacks), 1)).encode()).hexdigest()[:16]
    root = Path(os.environ.get("IQAGUARD_CACHE", Path.home() / ".cache" / "iqaguard"))
    cache = root / f"pairs-{key}.pt"
    if cache.is_file():
        d = torch.load(cache, weights_only=True)
        return d["clean"], d["attacked"]
    clean = fixed_crops(photos(split), per_photo, side, seed)
    metric = iqaguard.metrics.create("builtin-nr")
    out = []
    for i in range(clean.shape[0]):
        name, kwargs = attacks[i % len(attacks)]
        a = iqaguard.attacks.create(name, **kwargs)
        out.append(a(metric, clean[i:i + 1], generator=torch.Generator().manual_seed(seed + i)).detach())
    attacked = torch.cat(out)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"clean": clean, "attacked": attacked}, cache)
    return clean, attacked


def psnr_check(purify: Callable[[torch.Tensor], torch.Tensor], split: str = "test", per_photo: int = 2,
               side: int = 96, seed: int = 7) -> Dict[str, float]:
    """Mean PSNR (RGB, dB) to the clean crop of the attacked crops, undefended and purified.

    The acceptance check of the neural purifications (issue: "the shipped weights improve PSNR to
    the clean image on attacked test images over no defense"): run once per shipped model, never
    used to choose anything. Returns ``{"attacked": dB, "purified": dB, "gain": dB, "n": crops}``.
    """
    from iqaguard.metrics import functional as FM
    clean, attacked = adversarial_pairs(split, per_photo, side, seed)
    with torch.no_grad():
        purified = torch.cat([purify(attacked[i:i + 1]) for i in range(attacked.shape[0])])
    a = float(FM.psnr(attacked, clean).mean())
    p = float(FM.psnr(purified, clean).mean())
    return {"attacked": round(a, 3), "purified": round(p, 3), "gain": round(p - a, 3), "n": int(clean.shape[0])}


def score_shipped(name: str, path: Path, net: torch.nn.Module) -> Tuple[Dict[str, float], str, int]:
    """``(psnr_check figures, sha256, parameter count)`` of the purification ``name`` loaded from the
    weights file ``path`` just written: the one test-split score of a shipped model."""
    import iqaguard
    test = psnr_check(iqaguard.defenses.create(name, weights=str(path)))  # once, after every choice was made on val
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return test, sha, sum(q.numel() for q in net.parameters())
