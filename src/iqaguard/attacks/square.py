"""Square attack: query-efficient random search over square-shaped L∞ perturbations.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020, used on IQA metrics by Guardians of Image Quality (Table 7:
restriction L∞, varied parameter ε). The perturbation starts as vertical stripes of ±ε (one random
sign per column and channel); each iteration proposes to set a random square window to a new
random vertex ±ε of the L∞ ball (one sign per channel), and each image keeps its proposal only if
it raises that image's objective ``sign · f(x') / diam(f)``. The window covers a fraction ``p`` of
the image that halves on the paper's iteration checkpoints (rescaled to ``max_queries``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..errors import InputError
from ..registry import ATTACKS
from . import _search as S
from .budgets import Restriction, check_count, check_linf_eps, linf_box, linf_presets
from .query import QueryAttack, QueryOracle



@ATTACKS.register("square")
class Square(QueryAttack):
    """Square attack (Andriushchenko et al. 2020), L∞, raising the predicted quality.

    Distance measure: L∞. Varied parameter (the presets): ``eps``, the budgets of Guardians of
    Image Quality appendix A.3.4: ``weak`` ε = 2/255, ``medium`` 4/255, ``strong`` 8/255, each
    with 1,000 queries per image.

    Args:
        eps: L∞ budget on the [0, 1] scale, ``0 < eps <= 64/255`` (default 4/255).
        max_queries: queries per image, >= 1 (default 1000): two to start (the stripe
            initialisation and the clean image, the better one is the starting point: IQA
            metrics may score stripe noise below the clean image, unlike a classifier's margin),
            then one per iteration; the whole budget is used.
        p_init: initial fraction of the image a square covers, ``0 < p_init <= 1`` (default
            0.05, the paper's L∞ value); the side is ``round(sqrt(p * H * W))``, at least 1.

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape; ``attack.queries``
    ``[B]`` holds the queries each image used.

    Example:
        >>> x_adv = Square(preset="medium")(metric, x)   # ||x_adv - x||_inf <= 4/255
    """

    restriction = Restriction.LINF
    varied = "eps"
    presets = linf_presets(max_queries=1000)

    def __init__(self, eps: float = 4 / 255, max_queries: int = 1000, p_init: float = 0.05) -> None:
        check_linf_eps(eps)
        check_count("max_queries", max_queries)
        if isinstance(p_init, bool) or not isinstance(p_init, (int, float)) or not 0 < p_init <= 1:
            raise InputError(f"p_init: expected a fraction 0 < p_init <= 1 of the image, got {p_init!r}")

    def search(self, oracle: QueryOracle, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Random search from the stripe initialisation; one oracle call per iteration.

        Returns:
            ``[B, 3, H, W]`` with ``||x_adv - x||_inf <= eps`` (as computed) and values in [0, 1].
        """
        gen, dev = S.seeded(generator), x.device
        b, c, h, w = x.shape
        lo, hi = linf_box(x, float(self.eps))
        # the perturbation is kept as a sign per pixel and channel: x_adv = hi where +1, lo where -1,
        # x where 0; the stripes compete with the clean image (IQA metrics may dislike stripe noise)
        stripes = S.random_signs((b, c, 1, w), gen, dev).expand(b, c, h, w)
        start = 1 if self.max_queries == 1 else 2
        f = oracle(torch.cat([self._image(stripes, x, lo, hi), x])[: b * start],
                   torch.arange(b).repeat(start)).view(start, b)
        from_stripes = f[0] >= f[-1]
        signs = torch.where(from_stripes.view(b, 1, 1, 1), stripes, torch.zeros_like(stripes))
        # the image holds the perturbation: outside the proposed window a candidate is the
        # current best, inside it is hi or lo; only the window is computed (at batch size 1 a
        # full-image torch.where would cost a good part of a forward pass)
        best, best_f = self._image(signs, x, lo, hi), f.max(dim=0).values
        n_iters = self.max_queries - start
        for it in range(n_iters):
            p = S.square_fraction(float(self.p_init), it, n_iters)
            side = int(min(max(round(math.sqrt(p * h * w)), 1), h, w))
            rows = S.randint(h - side + 1, (b,), gen, dev)
            cols = S.randint(w - side + 1, (b,), gen, dev)
            new = S.random_signs((b, c, 1, 1), gen, dev)
            cand = best.clone()
            for i, (r, q) in enumerate(zip(rows.tolist(), cols.tolist())):
                win = (i, slice(None), slice(r, r + side), slice(q, q + side))
                cand[win] = torch.where(new[i] > 0, hi[win], lo[win])
            f = oracle(cand)
            better = f > best_f
            best = S.take(better, cand, best)
            best_f = torch.where(better, f, best_f)
        return best

    @staticmethod
    def _image(signs: torch.Tensor, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """``hi`` where ``signs`` is +1, ``lo`` where -1, ``x`` where 0 (inside the box by construction)."""
        return torch.where(signs > 0, hi, torch.where(signs < 0, lo, x))
