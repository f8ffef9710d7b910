"""Randomized smoothing through the diffusion model: DDRS (one-shot denoising) and DensePure.

Both use the DDPM of the DiffPure purification (:mod:`iqaguard.defenses.purification._diffusion`,
its shipped weights or a user's ``weights=`` file) and certify like RS
(:mod:`iqaguard.defenses.certified.rs`: binned score, Clopper–Pearson, ``R = σ Φ⁻¹(p̲_A)``):

* **DDRS** — Carlini, Tramèr, Dvijotham, Rice, Sun & Kolter, "(Certified!!) Adversarial Robustness
  for Free!" (ICLR 2023): a noisy copy ``x + δ``, ``δ ~ N(0, σ² I)`` on the [0, 1] scale, is on the
  model scale ``2(x + δ) - 1``, and scaled by ``sqrt(ᾱ_t)`` it is a forward-diffusion sample at the
  step ``t*`` with ``sqrt((1 - ᾱ_t)/ᾱ_t) = 2σ``; one ε prediction gives ``x̂0`` (clipped to [-1, 1]),
  which the metric scores. Named "Diffusion DRS" in Guardians of Image Quality (appendix A.3.5).
* **DensePure** — Chen, Kolter et al., "DensePure: Understanding Diffusion Models towards
  Adversarial Robustness" (ICLR 2023): from the same ``x_{t*}``, ``k`` independent reverse-diffusion
  runs (``t*`` ancestral DDPM steps each); each run's image is scored and binned, and the majority
  class of the ``k`` runs is that noise sample's vote (ties: the lowest class). The RS certificate
  counts those votes.

Noisy copies are not clipped before the denoiser (Carlini et al. feed ``x + δ`` unclipped).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ...errors import InputError
from ...metrics.base import frozen
from ...registry import DEFENSES
from ..base import Generators, check_int, draw
from .certificates import class_value, classes, counts
from .rs import RandomizedSmoothing
from .sampler import noisy_chunks, repeat_rows


def _diffusion(weights: Optional[str]):
    """The DiffPure purification whose network and schedule the smoothing uses."""
    from ..purification.diffpure import DiffPure

    return DiffPure(weights=weights) if weights is not None else DiffPure()


class OneShotDenoiser:
    """``D(z)``: Carlini et al.'s one-shot diffusion denoiser for Gaussian noise ``sigma`` ([0, 1] scale)."""

    def __init__(self, sigma: float, weights: Optional[str] = None) -> None:
        self.purifier = _diffusion(weights)
        self.diffusion = self.purifier.diffusion
        self.t = self.diffusion.t_for_sigma(sigma)
        self.scale = float(self.diffusion.alphas_cumprod[self.t].sqrt())
        self.name = f"one-shot diffusion denoiser (t*={self.t})"

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        from ..purification._diffusion import pad_to

        self.purifier.follow(z)
        zp, (h, w) = pad_to(z, self.purifier.network.multiple)
        x0 = self.diffusion.denoise_one_shot(self.scale * (2 * zp - 1), self.t, clip=True)
        return ((x0 + 1) / 2)[..., :h, :w]


@DEFENSES.register("ddrs")
class DiffusionDenoisedSmoothing(RandomizedSmoothing):
    """RS with Carlini et al.'s one-shot diffusion denoiser before the metric (DDRS).

    Args:
        metric, preset, sigma, n, alpha, bins, n0, attack_samples, chunk, generator: as
            :class:`~iqaguard.defenses.certified.rs.RandomizedSmoothing`.
        weights: the diffusion model's file (default: DiffPure's shipped weights).
    """

    def __init__(self, metric: Any, weights: Optional[str] = None, **kwargs: Any) -> None:
        if kwargs.get("denoiser") is not None:
            raise InputError("denoiser: DDRS uses the diffusion model's one-shot denoiser; pass weights=<file> instead")
        super().__init__(metric, **kwargs)
        self.denoiser = OneShotDenoiser(self.sigma, weights)


@DEFENSES.register("densepure")
class DensePure(RandomizedSmoothing):
    """RS whose every noise sample votes by the majority of ``k`` reverse-diffusion runs (DensePure).

    Args:
        metric, preset, sigma, n, alpha, bins, n0, attack_samples, chunk, generator: as
            :class:`~iqaguard.defenses.certified.rs.RandomizedSmoothing`.
        k: reverse-diffusion runs per noise sample (default 5, odd to limit ties).
        weights: the diffusion model's file (default: DiffPure's shipped weights).

    Cost: each noise sample costs ``k · t*`` network evaluations (``t*`` about 60 at σ = 0.12).
    """

    def __init__(self, metric: Any, k: int = 5, weights: Optional[str] = None, **kwargs: Any) -> None:
        if kwargs.get("denoiser") is not None:
            raise InputError("denoiser: DensePure uses the diffusion model's reverse process; pass weights=<file>")
        super().__init__(metric, **kwargs)
        self.k = check_int("k", k, low=1)
        self.purifier = _diffusion(weights)
        self.t = self.purifier.diffusion.t_for_sigma(self.sigma)

    @property
    def params(self):
        return {**super().params, "k": self.k, "t_star": self.t}

    def _reverse(self, z: torch.Tensor, generator: Generators) -> torch.Tensor:
        """One reverse-diffusion run from ``x_{t*}`` of the noisy images ``z`` ([0, 1] scale in and out)."""
        from ..purification._diffusion import pad_to

        d = self.purifier.diffusion
        self.purifier.follow(z)
        zp, (h, w) = pad_to(z, self.purifier.network.multiple)
        x = float(d.alphas_cumprod[self.t].sqrt()) * (2 * zp - 1)
        for i in reversed(range(self.t + 1)):
            noise = draw(x, generator, x.shape[1:], normal=True) if i > 0 else torch.zeros_like(x)
            x = d.p_sample(x, i, noise)
        return ((x + 1) / 2)[..., :h, :w]

    def samples(self, x: torch.Tensor, n: int, ref: Optional[torch.Tensor] = None,
                generator: Generators = None) -> torch.Tensor:
        """``[B, n]``: per noise sample, the class value of the majority class of its ``k`` reverse runs.

        The reverse runs of image ``i``'s copies draw from ``generator[i]`` when a list is given (so
        an image's result does not depend on the batch), else from the one generator.
        """
        b, out = x.shape[0], []
        with frozen(self.metric), torch.no_grad():
            for noisy in noisy_chunks(x, self.sigma, n, generator, self.chunk):
                m = noisy.shape[1]
                z = noisy.reshape(b * m, *x.shape[1:])
                gens = [g for g in generator for _ in range(m)] if isinstance(generator, (list, tuple)) else generator
                r = repeat_rows(ref, m) if ref is not None else None
                runs = torch.stack([self.metric.score(self._reverse(z, gens), r) for _ in range(self.k)], dim=1)
                vote = counts(classes(runs, self.edges), self.bins + 2).argmax(dim=1)
                out.append(class_value(vote, self.edges).view(b, m))
        return torch.cat(out, dim=1).to(x.dtype)
