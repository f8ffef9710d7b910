"""Patch-RS: random search for an image-specific square patch (the patch variant of Sparse-RS).

Croce, Andriushchenko, Singh, Flammarion & Hein, "Sparse-RS: a versatile framework for
query-efficient sparse black-box adversarial attacks", AAAI 2022, used on IQA metrics by
Guardians of Image Quality (Table 7). A ``size x size`` patch replaces the image at some
position; random search alternates between the two parts of the patch attack: most iterations
propose to repaint a random square inside the patch with a random vertex colour of the RGB cube
``{0, 1}^3`` (the square's side follows the Square attack's halving schedule), every
``loc_every``-th proposes to move the patch by a random shift whose range shrinks with the same
schedule. Each image keeps a proposal only if it raises its objective ``sign · f(x') / diam(f)``.
The patch starts at a random position, holding either the image's own pixels there (``init="image"``,
the default: the first accepted repaint is then a small change, and IQA metrics score a patch of
colour noise far below the clean image) or vertical stripes of random vertex colours
(``init="stripes"``, as Sparse-RS starts a classifier attack).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..errors import InputError
from ..registry import ATTACKS
from . import _search as S
from .budgets import Restriction, check_count
from .query import QueryAttack, QueryOracle

#: patch sides of the presets: the L0 counts at which a patch changing every channel by a mean
#: square of 1/3 (a random vertex colour over a uniform image) brings a 512x384 image to the
#: PSNR budgets 35 / 30 / 25 dB of Guardians of Image Quality: k = 3 * 512 * 384 * 10^(-PSNR/10)
#: = 187 / 590 / 1865 pixels, i.e. sides 14 / 24 / 43
_SIZES = {"weak": 14, "medium": 24, "strong": 43}


@ATTACKS.register("patch-rs")
class PatchRS(QueryAttack):
    """Patch-RS (Croce et al. 2022), an L0 patch, raising the predicted quality.

    Distance measure: L0, the changed pixel positions, at most ``size ** 2`` (one square patch).
    Varied parameter (the presets): ``size``, the patch side: ``weak`` 14, ``medium`` 24,
    ``strong`` 43 pixels (see :data:`_SIZES`: the PSNR budgets of Guardians of Image Quality
    appendix A.3.4 turned into pixel counts on its 512x384 images), each with 1,000 queries.

    Args:
        size: patch side in pixels, >= 1 (default 24); capped at ``min(H, W)``.
        max_queries: queries per image, >= 2 (default 1000): two to start (the clean image and
            the initial patch), then one per iteration; the whole budget is used.
        p_init: initial fraction of the patch a repainted square covers, ``0 < p_init <= 1``
            (default 0.4).
        loc_every: every ``loc_every``-th iteration moves the patch, >= 2 (default 5).
        init: the starting patch content, ``"image"`` (default) or ``"stripes"`` (see above).

    The clean image competes too: an image whose best patch scores below it is returned
    unchanged. Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape;
    ``attack.queries`` ``[B]`` holds the queries each image used.

    Example:
        >>> x_adv = PatchRS(preset="medium")(metric, x)   # one 24x24 patch at most
    """

    restriction = Restriction.L0
    varied = "size"
    presets = {name: {"size": s, "max_queries": 1000} for name, s in _SIZES.items()}

    def __init__(self, size: int = 24, max_queries: int = 1000, p_init: float = 0.4, loc_every: int = 5,
                 init: str = "image") -> None:
        check_count("size", size)
        check_count("max_queries", max_queries, low=2)
        check_count("loc_every", loc_every, low=2)
        if isinstance(p_init, bool) or not isinstance(p_init, (int, float)) or not 0 < p_init <= 1:
            raise InputError(f"p_init: expected a fraction 0 < p_init <= 1 of the patch, got {p_init!r}")
        if init not in ("image", "stripes"):
            raise InputError(f"init: expected 'image' or 'stripes', got {init!r}")

    @property
    def budget(self) -> int:
        """The L0 budget: ``size ** 2`` changed pixels per image."""
        return int(self.size) ** 2

    def search(self, oracle: QueryOracle, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Random search over the patch's content and position until the budget is spent.

        Returns:
            ``[B, 3, H, W]`` differing from ``x`` in at most ``size ** 2`` pixel positions per image.
        """
        gen, dev = S.seeded(generator), x.device
        b, c, h, w = x.shape
        s = min(int(self.size), h, w)
        rows, cols = S.randint(h - s + 1, (b,), gen, dev), S.randint(w - s + 1, (b,), gen, dev)
        if self.init == "stripes":
            patch = S.randint(2, (b, c, 1, s), gen, dev).float().expand(b, c, s, s).clone()
        else:  # the image's own pixels under the patch
            r = rows.view(b, 1, 1, 1) + torch.arange(s, device=dev).view(1, 1, s, 1)
            q = cols.view(b, 1, 1, 1) + torch.arange(s, device=dev).view(1, 1, 1, s)
            patch = x.flatten(2).gather(2, (r * w + q).expand(b, c, s, s).reshape(b, c, s * s)).view(b, c, s, s)
        best = self._paste(x, patch, rows, cols)
        f = oracle(torch.cat([x, best]), torch.arange(b).repeat(2)).view(2, b).to(dev)
        clean_f, best_f = f[0], f[1]
        n_iters = self.max_queries - 2
        for it in range(n_iters):
            p = S.square_fraction(float(self.p_init), it, n_iters)
            if (it + 1) % int(self.loc_every) == 0:  # move the patch
                reach = max(1, round(math.sqrt(p) * max(h - s, w - s)))
                dr = S.randint(2 * reach + 1, (b,), gen, dev) - reach
                dc = S.randint(2 * reach + 1, (b,), gen, dev) - reach
                c_rows, c_cols, c_patch = (rows + dr).clamp(0, h - s), (cols + dc).clamp(0, w - s), patch
            else:  # repaint a square of the patch with a random vertex colour
                side = int(min(max(round(math.sqrt(p) * s), 1), s))
                r0, q0 = S.randint(s - side + 1, (b,), gen, dev), S.randint(s - side + 1, (b,), gen, dev)
                colour = S.randint(2, (b, c, 1, 1), gen, dev).float()
                c_patch = torch.where(S.window_mask(r0, q0, side, s, s), colour, patch)
                c_rows, c_cols = rows, cols
            cand = self._paste(x, c_patch, c_rows, c_cols)
            f = oracle(cand).to(dev)
            better = f > best_f
            patch, best = S.take(better, c_patch, patch), S.take(better, cand, best)
            rows, cols = torch.where(better, c_rows, rows), torch.where(better, c_cols, cols)
            best_f = torch.where(better, f, best_f)
        return torch.where((best_f > clean_f).view(b, 1, 1, 1), best, x)

    @staticmethod
    def _paste(x: torch.Tensor, patch: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """A copy of ``x`` with ``patch`` ``[B, 3, s, s]`` at top-left ``(rows[b], cols[b])``.

        Only the window of each image is written (a full-image mask and ``torch.where`` would
        cost a good part of a batch-1 forward pass)."""
        out = x.clone()
        s = patch.shape[-1]
        for i, (r, q) in enumerate(zip(rows.tolist(), cols.tolist())):
            out[i, :, r:r + s, q:q + s] = patch[i]
        return out
