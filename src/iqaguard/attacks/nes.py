"""NES: projected signed gradient ascent on a natural-evolution-strategies gradient estimate.

Ilyas, Engstrom, Athalye & Lin, "Black-box Adversarial Attacks with Limited Queries and
Information", ICML 2018, used on IQA metrics by Guardians of Image Quality (Table 7: restriction
L∞, varied parameter ε). Each step estimates the gradient of the objective ``sign · f(x') /
diam(f)`` from antithetic Gaussian samples,
``g = 1 / (2 n σ) · Σ_i [F(x' + σ u_i) - F(x' - σ u_i)] u_i`` with ``u_i ~ N(0, I)``, averages it
with the previous estimates by momentum, ``m <- μ m + (1 - μ) g``, and takes a PGD step
``x' <- Π(x' + α · sign(m))`` onto the ε-ball around the clean image and [0, 1]. The step size
``α`` is halved (down to ``α / 200``) when the mean objective of the samples of a step is below
that of ``plateau - 1`` steps before. Momentum 0.9 and the plateau schedule (window 5, factor 2,
floor 1/200 of the initial step) are those of the authors' implementation of the query-limited
attack; σ = 0.001 and 50 queries per estimate are the paper's. All ``2 n`` samples of all images
of the batch are scored in one oracle call.

Returned image: the best iterate, not the last (a departure from Ilyas et al., whose classifier
attack stops at the first misclassification; an IQA attack maximises a score, and PGD here keeps
its best iterate too). The mean of the ``2 n`` antithetic samples around an iterate is its
objective up to ``O(σ²)``, so every iterate but the last is scored for free; one query per image
is kept back to score the last exactly. The clean image is the first iterate, so NES never
returns an image scored below the clean one (on builtin-fr's nearly undistorted images its last
iterate was, on 20 of 20).
"""
from __future__ import annotations

import numbers
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Tuple

import torch

from ..errors import InputError
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
        max_queries: queries per image, >= 3 (default 1000). Each step costs ``2 * n_samples``,
            one query scores the last iterate; a last step with fewer pairs uses what remains,
            so at most one query is left unused.
        n_samples: antithetic pairs ``(+σu, -σu)`` per gradient estimate, >= 1 (default 25: the
            paper's 50 queries per estimate).
        sigma: standard deviation of the search distribution on the [0, 1] scale,
            ``0 < sigma <= 1`` (default 0.001, the paper's value).
        alpha: initial PGD step size, ``0 < alpha <= 1``; ``None`` (default) uses ``eps / 4``.
        momentum: weight ``μ`` of the previous estimates, ``0 <= momentum < 1`` (default 0.9;
            0 steps on each estimate alone).
        plateau: window of the step-size schedule in steps, >= 2 (default 5), or ``None`` for a
            constant step.

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape; ``attack.queries``
    ``[B]`` holds the queries each image used.

    Example:
        >>> x_adv = NES(preset="medium")(metric, x)   # ||x_adv - x||_inf <= 4/255
    """

    restriction = Restriction.LINF
    varied = "eps"
    presets = linf_presets(max_queries=1000)

    def __init__(self, eps: float = 4 / 255, max_queries: int = 1000, n_samples: int = 25,
                 sigma: float = 0.001, alpha: Optional[float] = None, momentum: float = 0.9,
                 plateau: Optional[int] = 5) -> None:
        check_linf_eps(eps)
        check_count("max_queries", max_queries, low=3)
        check_count("n_samples", n_samples)
        check_budget("sigma", sigma, 1.0, "1")
        if alpha is not None:
            check_budget("alpha", alpha, 1.0, "1 (the whole range)", ", or None (eps / 4)")
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 <= momentum < 1:
            raise InputError(f"momentum: expected a number 0 <= momentum < 1, got {momentum!r}")
        if plateau is not None:
            check_count("plateau", plateau, low=2)

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
        b, shape = x.shape[0], x.shape[1:]
        box = linf_box(x, float(self.eps))
        sigma, mu = float(self.sigma), float(self.momentum)
        x_adv = x.clone()
        idx = torch.arange(b)
        est = torch.zeros_like(x)  # the momentum average of the estimates
        step = torch.full((b,), self.step_size, dtype=x.dtype, device=dev)
        floor = self.step_size / 200
        window = int(self.plateau or 0)
        history = torch.zeros(b, max(window, 1), dtype=torch.float64, device=dev)
        filled = torch.zeros(b, dtype=torch.long, device=dev)
        left = self.max_queries - 1  # one query per image scores the last iterate
        best, best_f = x.clone(), torch.full((b,), -float("inf"), dtype=torch.float64, device=dev)
        with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
            while left >= 2:
                n = min(int(self.n_samples), left // 2)
                cands, u = self._samples(x_adv, n, sigma, gen, pool)
                f = oracle(cands.view(b * 2 * n, *shape), idx.repeat_interleave(2 * n)).view(b, 2, n).to(dev)
                del cands
                best, best_f = self._keep(best, best_f, x_adv, f.double().mean(dim=(1, 2)))
                diff = (f[:, 0] - f[:, 1]).to(u.dtype)
                g = torch.bmm(diff.view(b, 1, n), u.view(b, n, -1)).view_as(x)  # sum_i diff_i u_i
                est.mul_(mu).add_(g, alpha=(1 - mu) / (2 * n * sigma))
                if window:
                    step, filled = self._plateau(step, floor, history, filled, f.double().mean(dim=(1, 2)))
                x_adv = project_linf(torch.addcmul(x_adv, step.view(-1, 1, 1, 1), est.sign()), box)
                left -= 2 * n
        best, _ = self._keep(best, best_f, x_adv, oracle(x_adv, idx).to(dev).double())
        return best

    @staticmethod
    def _keep(best: torch.Tensor, best_f: torch.Tensor, x_adv: torch.Tensor,
              value: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(best, best_f)`` with ``x_adv`` taken for the images whose objective ``value [B]`` is higher."""
        up = value > best_f
        return torch.where(up.view(-1, 1, 1, 1), x_adv, best), torch.where(up, value, best_f)

    @staticmethod
    def _samples(x_adv: torch.Tensor, n: int, sigma: float, gen: torch.Generator,
                 pool: ThreadPoolExecutor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``n`` antithetic pairs per image: candidates ``[B, 2n, 3, H, W]`` (``x' + σ u_i`` in the
        first n slots, ``x' - σ u_i`` in the last n, clipped to [0, 1]) and the directions ``u``
        ``[B, n, 3, H, W]``, i.i.d. standard normal.

        Each direction is drawn on the CPU by its own generator, seeded from ``gen`` (so a seed
        gives the same directions on any device and with any number of threads); the directions
        are drawn in parallel on ``pool`` and, on the CPU, each one's two candidates are written
        while it is still in cache (drawing all of them sequentially with ``gen``, then building
        the candidates in whole-batch passes, added 11-13% to the forward passes of builtin-nr
        at 3x384x512).
        """
        b, shape, dev = x_adv.shape[0], x_adv.shape[1:], x_adv.device
        seeds = torch.randint(0, 2 ** 62, (b, n), generator=gen).tolist()
        u = torch.empty((b, n, *shape), dtype=x_adv.dtype)
        on_cpu = dev.type == "cpu"
        cands = torch.empty((b, 2 * n, *shape), dtype=x_adv.dtype, device=dev)

        def draw(ji: Tuple[int, int]) -> None:
            j, i = ji
            u[j, i].normal_(generator=torch.Generator().manual_seed(seeds[j][i]))
            if on_cpu:
                torch.add(x_adv[j], u[j, i], alpha=sigma, out=cands[j, i]).clamp_(0, 1)
                torch.add(x_adv[j], u[j, i], alpha=-sigma, out=cands[j, n + i]).clamp_(0, 1)

        list(pool.map(draw, [(j, i) for j in range(b) for i in range(n)]))
        if not on_cpu:
            u = u.to(dev)
            torch.add(x_adv.unsqueeze(1), u, alpha=sigma, out=cands[:, :n])
            torch.add(x_adv.unsqueeze(1), u, alpha=-sigma, out=cands[:, n:])
            cands.clamp_(0, 1)
        return cands, u

    @staticmethod
    def _plateau(step: torch.Tensor, floor: float, history: torch.Tensor, filled: torch.Tensor,
                 value: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Record each image's mean sample objective ``value [B]`` in ``history [B, window]``
        (updated in place) and halve the step of every image whose value fell below the one
        ``window - 1`` steps before; its window starts again empty."""
        history[:, :-1] = history[:, 1:].clone()
        history[:, -1] = value
        filled = filled + 1
        drop = (filled >= history.shape[1]) & (history[:, -1] < history[:, 0])
        step = torch.where(drop, (step / 2).clamp_min(floor), step)
        return step, torch.where(drop, torch.zeros_like(filled), filled)
