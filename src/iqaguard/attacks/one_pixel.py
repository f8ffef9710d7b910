"""One Pixel attack: differential evolution over the positions and colours of a few pixels.

Su, Vargas & Sakurai, "One Pixel Attack for Fooling Deep Neural Networks", IEEE Transactions on
Evolutionary Computation 23(5), 2019, used on IQA metrics by Guardians of Image Quality (Table 7:
restriction L0, varied parameter: pixel count). A candidate is ``pixels`` tuples
``(row, col, r, g, b)``; a population of candidates evolves by DE/rand/1 mutation
``v_i = z_r1 + F · (z_r2 - z_r3)`` (no crossover, as in the paper) and each trial replaces its
parent when it scores at least as high on the objective ``sign · f(x') / diam(f)``. The initial
population draws positions uniformly and colours from ``N(0.5, 0.5)`` clipped to [0, 1] (the
paper's ``N(128, 127)`` on the 0..255 scale).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import InputError
from ..registry import ATTACKS
from . import _search as S
from .budgets import Restriction, check_count
from .query import QueryAttack, QueryOracle


@ATTACKS.register("one-pixel")
class OnePixel(QueryAttack):
    """One Pixel attack (Su et al. 2019), L0, raising the predicted quality.

    Distance measure: L0, the number of changed pixel positions (any channel), at most
    ``pixels``. Varied parameter (the presets): ``pixels``: ``weak`` 1, ``medium`` 3, ``strong``
    5, the pixel counts of the One Pixel paper's experiments (Guardians of Image Quality Table 7
    varies the pixel count), each with 1,000 queries per image.

    Args:
        pixels: pixels changed per image, >= 1 (default 3).
        max_queries: queries per image, ``>= population + 1`` (default 1000): one for the clean
            image, ``population`` for the initial population, then one per trial; the whole
            budget is used (the last generation may evolve only part of the population).
        population: candidates per image, >= 4 (default 40; the paper uses 400 with 100
            generations, far beyond this budget).
        mutation: the DE scale factor ``F``, ``0 < mutation <= 2`` (default 0.5, the paper's).

    The clean image competes too: an image whose best candidate scores below it is returned
    unchanged. Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape;
    ``attack.queries`` ``[B]`` holds the queries each image used.

    Example:
        >>> x_adv = OnePixel(preset="medium")(metric, x)   # at most 3 pixels differ from x
    """

    restriction = Restriction.L0
    varied = "pixels"
    presets = {"weak": {"pixels": 1, "max_queries": 1000}, "medium": {"pixels": 3, "max_queries": 1000},
               "strong": {"pixels": 5, "max_queries": 1000}}

    def __init__(self, pixels: int = 3, max_queries: int = 1000, population: int = 40,
                 mutation: float = 0.5) -> None:
        check_count("pixels", pixels)
        check_count("population", population, low=4)
        check_count("max_queries", max_queries)
        if max_queries < population + 1:
            raise InputError(f"max_queries={max_queries!r}: One Pixel needs at least population + 1 = "
                             f"{population + 1} queries per image")
        if isinstance(mutation, bool) or not isinstance(mutation, (int, float)) or not 0 < mutation <= 2:
            raise InputError(f"mutation: expected a DE scale factor 0 < mutation <= 2, got {mutation!r}")

    @property
    def budget(self) -> int:
        """The L0 budget: changed pixels per image."""
        return int(self.pixels)

    def search(self, oracle: QueryOracle, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Differential evolution until the query budget is spent.

        Returns:
            ``[B, 3, H, W]`` differing from ``x`` in at most ``pixels`` pixel positions per image.
        """
        gen, dev = S.seeded(generator), x.device
        b, _, h, w = x.shape
        n, k = int(self.population), int(self.pixels)
        scale = torch.tensor([h, w, 1.0, 1.0, 1.0], device=dev)
        pop = torch.cat([S.rand((b, n, k, 2), gen, dev), (0.5 + 0.5 * S.randn((b, n, k, 3), gen, dev)).clamp(0, 1)],
                        dim=-1) * scale
        idx = torch.arange(b)
        f = oracle(torch.cat([x.unsqueeze(1), self._render(x, pop)], dim=1).flatten(0, 1),
                   idx.repeat_interleave(n + 1)).view(b, n + 1).to(dev)
        clean_f, fit = f[:, 0], f[:, 1:]
        left = self.max_queries - 1 - n
        while left > 0:
            m = min(n, left)
            trial = self._mutate(pop, gen, scale)[:, :m]
            ft = oracle(self._render(x, trial).flatten(0, 1), idx.repeat_interleave(m)).view(b, m).to(dev)
            win = ft >= fit[:, :m]
            pop[:, :m] = torch.where(win.view(b, m, 1, 1), trial, pop[:, :m])
            fit[:, :m] = torch.where(win, ft, fit[:, :m])
            left -= m
        best = fit.argmax(dim=1)
        out = self._render(x, pop[torch.arange(b, device=dev), best].unsqueeze(1)).squeeze(1)
        keep = (fit.gather(1, best.view(b, 1)).squeeze(1) > clean_f).view(b, 1, 1, 1)
        return torch.where(keep, out, x)

    def _mutate(self, pop: torch.Tensor, gen: torch.Generator, scale: torch.Tensor) -> torch.Tensor:
        """DE/rand/1 trials ``z_r1 + F (z_r2 - z_r3)`` (r1, r2, r3 distinct, not the parent), clipped."""
        b, n = pop.shape[:2]
        keys = S.rand((b, n, n), gen, pop.device) + 2 * torch.eye(n, device=pop.device)  # parent sorts last
        r = keys.argsort(dim=2)[..., :3]
        pick = [pop[torch.arange(b, device=pop.device).view(b, 1), r[..., j]] for j in range(3)]
        trial = pick[0] + float(self.mutation) * (pick[1] - pick[2])
        return torch.minimum(trial.clamp(min=0), scale * (1 - 1e-6))

    @staticmethod
    def _render(x: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Images ``[B, K, 3, H, W]`` of candidates ``[B, K, pixels, 5]`` applied to ``x`` ``[B, 3, H, W]``."""
        b, kc, p, _ = cand.shape
        _, c, h, w = x.shape
        pos = cand[..., 0].long().clamp(0, h - 1) * w + cand[..., 1].long().clamp(0, w - 1)  # [B, K, p]
        img = x.unsqueeze(1).expand(b, kc, c, h, w).reshape(b, kc, c, h * w).clone()
        rgb = cand[..., 2:].clamp(0, 1).transpose(2, 3)  # [B, K, 3, p]
        img.scatter_(3, pos.unsqueeze(2).expand(b, kc, c, p), rgb)
        return img.view(b, kc, c, h, w)
