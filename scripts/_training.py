"""What the training scripts share: fixed validation crops, and model cards shared by several
weight files (each script owns one ``# Model card: ...`` section of the card and replaces only
that section, or appends it, leaving the others alone)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

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
