"""NES: projected signed gradient ascent on a natural-evolution-strategies gradient estimate.

Ilyas, Engstrom, Athalye & Lin, "Black-box Adversarial Attacks with Limited Queries and
Information", ICML 2018, used on IQA metrics by Guardians of Image Quality (Table 7: restriction
L∞, varied parameter ε). Each step estimates the gradient of the objective ``sign · f(x') /
diam(f)`` from antithetic Gaussian samples,
``g = 1 / (2 n σ) · Σ_i [F(x' + σ u_i) - F(x' - σ u_i)] u_i`` with ``u_i ~ N(0, I)``, and takes a
PGD step ``x' <- Π(x' + α · sign(g))`` onto the ε-ball around the clean image and [0, 1]. All
``2 n`` samples of all images of the batch are scored in one oracle call.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..registry import ATTACKS
from . import _search as S
from .budgets import Restriction, check_budget, check_count, check_linf_eps, linf_box, linf_presets, project_linf
from .query import QueryAttack, QueryOracle



@ATTACKS.register("nes")
class NES(QueryAttack):
    """NES gradient-estimation attack (Ilyas et al. 2018), L∞, raising the predicted quality.

    Distance measure: L∞. Varied parameter (the presets): ``eps``, the budgets of Guardians of
    Image Quality appendix A.3.4: ``weak`` ε = 2/255, ``medium`` 4/255, ``strong`` 8/255, each
    with 1,000 queries per image.

    Args:
        eps: L∞ budget on the [0, 1] scale, ``0 < eps <= 64/255`` (default 4/255).
        max_queries: queries per image, >= 2 (default 1000). Each step costs ``2 * n_samples``;
            a last step with fewer pairs uses what remains, so at most one query (an odd
            budget's last) is left unused.
        n_samples: antithetic pairs ``(+σu, -σu)`` per gradient estimate, >= 1 (default 25: the
            paper's 50 queries per estimate).
        sigma: standard deviation of the search distribution on the [0, 1] scale,
            ``0 < sigma <= 1`` (default 0.001, the paper's value).
        alpha: PGD step size, ``0 < alpha <= 1``; ``None`` (default) uses ``eps / 4``.

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape; ``attack.queries``
    ``[B]`` holds the queries each image used.

    Example:
        >>> x_adv = NES(preset="medium")(metric, x)   # ||x_adv - x||_inf <= 4/255
    """

    restriction = Restriction.LINF
    varied = "eps"
    presets = linf_presets(max_queries=1000)

    def __init__(self, eps: float = 4 / 255, max_queries: int = 1000, n_samples: int = 25,
                 sigma: float = 0.001, alpha: Optional[float] = None) -> None:
        check_linf_eps(eps)
        check_count("max_queries", max_queries, low=2)
        check_count("n_samples", n_samples)
        check_budget("sigma", sigma, 1.0, "1")
        if alpha is not None:
            check_budget("alpha", alpha, 1.0, "1 (the whole range)", ", or None (eps / 4)")

    @property
    def step_size(self) -> float:
        """The PGD step ``alpha`` actually used: ``alpha`` or ``eps / 4``."""
        return float(self.alpha) if self.alpha is not None else float(self.eps) / 4

    def search(self, oracle: QueryOracle, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Estimate-and-step until the query budget is spent.

        Returns:
            ``[B, 3, H, W]`` with ``||x_adv - x||_inf <= eps`` (as computed) and values in [0, 1].
        """
        gen, dev = S.seeded(generator), x.device
        b = x.shape[0]
        box = linf_box(x, float(self.eps))
        sigma = float(self.sigma)
        x_adv = x.clone()
        idx = torch.arange(b)
        left = self.max_queries
        while left >= 2:
            n = min(int(self.n_samples), left // 2)
            u = S.randn((b, n, *x.shape[1:]), gen, dev)
            plus = (x_adv.unsqueeze(1) + sigma * u).clamp(0, 1)
            minus = (x_adv.unsqueeze(1) - sigma * u).clamp(0, 1)
            cands = torch.cat([plus, minus], dim=1).flatten(0, 1)  # [B * 2n, 3, H, W], image-major
            f = oracle(cands, idx.repeat_interleave(2 * n)).view(b, 2, n).to(dev)
            diff = (f[:, 0] - f[:, 1]).view(b, n, 1, 1, 1)
            grad = (diff * u).sum(dim=1) / (2 * n * sigma)
            x_adv = project_linf(x_adv + self.step_size * grad.sign(), box)
            left -= 2 * n
        return x_adv
