"""The diffusion core shared by DiffPure and the diffusion-based certified defenses (DDRS, DensePure).

* :class:`Diffusion` — a DDPM (Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models",
  NeurIPS 2020) with ε-prediction and the *linear* β schedule ``1e-4 .. 0.02`` over ``T = 1000``
  steps, the schedule of OpenAI's guided-diffusion (ADM, Dhariwal & Nichol 2021) ImageNet
  checkpoints that DiffPure (Nie et al., ICML 2022) uses for its ImageNet experiments
  (``noise_schedule=linear``, ``diffusion_steps=1000``). Timesteps are 0-based indices as in
  guided-diffusion: index ``i`` is the paper's step ``i + 1``, ``ᾱ[i] = Π_{s<=i} (1 - β[s])`` and
  the network is conditioned on ``i``. Images on the model scale are in [-1, 1].
* the score network is :class:`~iqaguard.defenses.purification._unet.UNetModel`, a time-conditioned
  U-Net in guided-diffusion's layout (its own module).

Memory of adaptive attacks: :meth:`Diffusion.purify` checkpoints every reverse step
(``torch.utils.checkpoint``) while autograd records, so a backward through ``t`` steps stores only
the ``t`` step inputs and recomputes one step's activations at a time. :func:`peak_memory_adaptive`
measures the peak of one such backward (shipped model, ``t=50``, one 3x384x512 image, CPU:
1.9 GiB; at 128x128: 207 MiB at t=1, 217 MiB at t=10, and 1061 MiB at t=10 without checkpointing).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..base import Generators, draw

Steps = Union[int, torch.Tensor]


# ====================================================================== schedule and sampler
def linear_betas(steps: int = 1000, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """guided-diffusion's ``linear`` schedule (float64 ``[steps]``): ``linspace(s*start, s*end)``, ``s = 1000/steps``."""
    scale = 1000.0 / steps
    return torch.linspace(scale * start, scale * end, steps, dtype=torch.float64)


class Diffusion:
    """DDPM sampler around an ε-prediction network ``net(x_t, t) -> [B, C | 2C, H, W]``.

    Reverse-step variance: a network with ``2C`` outputs (``learn_sigma``, as the ADM checkpoints
    DiffPure uses) gives guided-diffusion's *learned range* — ``log σ² = v log β_t + (1 - v) log β̃_t``
    with ``v = (out + 1) / 2`` from the second half — which is what DiffPure's DDPM path
    (``diffusion.p_sample`` of guided-diffusion) samples with. A network with ``C`` outputs uses the
    fixed posterior variance ``β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)`` (Ho et al.'s
    ``σ_t² = β̃_t``, the lower bound of the range; ``variance="large"`` gives ``β_t``).

    Args:
        net: the score network (time-conditioned on the 0-based index).
        betas: the β schedule (default :func:`linear_betas`).
        variance: ``"small"`` (β̃_t) or ``"large"`` (β_t) for a network without learned variance.
    """

    def __init__(self, net: nn.Module, betas: Optional[torch.Tensor] = None, variance: str = "small") -> None:
        self.net = net
        b = (linear_betas() if betas is None else betas).to(torch.float64)
        self.num_steps = int(b.shape[0])
        self.variance = variance
        #: checkpoint each reverse step while autograd records (False: keep every step's activations)
        self.checkpoint = True
        a = torch.cumprod(1.0 - b, 0)
        a_prev = torch.cat([a.new_ones(1), a[:-1]])
        post_var = b * (1.0 - a_prev) / (1.0 - a)
        self.betas = b
        self.alphas_cumprod = a
        self.post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]))  # β̃_0 = 0 clipped to β̃_1
        self._coef = {
            "sqrt_a": a.sqrt(), "sqrt_1ma": (1.0 - a).sqrt(),
            "sqrt_recip_a": (1.0 / a).sqrt(), "sqrt_recipm1_a": (1.0 / a - 1.0).sqrt(),
            "mean_x0": b * a_prev.sqrt() / (1.0 - a), "mean_xt": (1.0 - a_prev) * (1.0 - b).sqrt() / (1.0 - a),
            "log_var_small": self.post_log_var, "log_var_large": torch.log(torch.cat([post_var[1:2], b[1:]])),
            "log_beta": torch.log(b),
        }

    # ------------------------------------------------------------------ helpers
    def _c(self, name: str, t: Steps, like: torch.Tensor) -> torch.Tensor:
        """Coefficient ``name`` at ``t`` (int or ``[B]`` long), broadcast to ``like`` ``[B, ...]``."""
        v = self._coef[name]
        if isinstance(t, int):
            return float(v[t])  # type: ignore[return-value]  # a Python scalar: no device transfer
        return v[t.cpu()].to(dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))

    def _steps(self, t: Steps, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long) if isinstance(t, int) else t.to(x.device)

    def model_output(self, x_t: torch.Tensor, t: Steps) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(ε̂, v)``: the predicted noise and, for a ``learn_sigma`` network, the variance output (else None)."""
        out = self.net(x_t, self._steps(t, x_t))
        c = x_t.shape[1]
        return (out[:, :c], out[:, c:]) if out.shape[1] == 2 * c else (out, None)

    # ------------------------------------------------------------------ the process
    def q_sample(self, x0: torch.Tensor, t: Steps, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε`` (model scale; ``t`` a 0-based index or ``[B]`` indices)."""
        return self._c("sqrt_a", t, x0) * x0 + self._c("sqrt_1ma", t, x0) * noise

    def predict_x0(self, x_t: torch.Tensor, t: Steps, eps: torch.Tensor) -> torch.Tensor:
        """``x̂0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t)``."""
        return self._c("sqrt_recip_a", t, x_t) * x_t - self._c("sqrt_recipm1_a", t, x_t) * eps

    def denoise_one_shot(self, x_noisy: torch.Tensor, t: Steps, clip: bool = False) -> torch.Tensor:
        """``x̂0`` from one ε prediction at step ``t`` (Carlini et al., ICLR 2023, DDRS): model scale in and out.

        ``x_noisy`` must be a forward-process sample at ``t``: for ``x + δ``, ``δ ~ N(0, σ²)`` on the
        [0, 1] scale, pass ``sqrt(ᾱ_t) (2 (x + δ) - 1)`` with ``t = t_for_sigma(σ)``.
        """
        x0 = self.predict_x0(x_noisy, t, self.model_output(x_noisy, t)[0])
        return x0.clamp(-1, 1) if clip else x0

    def p_sample(self, x_t: torch.Tensor, t: int, noise: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """One reverse step ``x_t -> x_{t-1}``: posterior mean of the predicted (clipped) ``x̂0`` plus ``σ_t noise``.

        ``μ = β_t sqrt(ᾱ_{t-1}) / (1 - ᾱ_t) x̂0 + (1 - ᾱ_{t-1}) sqrt(α_t) / (1 - ᾱ_t) x_t``; no noise
        at ``t = 0`` (the last step returns the mean), ``clip`` = guided-diffusion's ``clip_denoised``.
        """
        eps, v = self.model_output(x_t, t)
        x0 = self.predict_x0(x_t, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean = self._c("mean_x0", t, x_t) * x0 + self._c("mean_xt", t, x_t) * x_t
        if t == 0:
            return mean
        if v is not None:
            frac = (v + 1) / 2
            log_var = frac * self._c("log_beta", t, x_t) + (1 - frac) * self._c("log_var_small", t, x_t)
        else:
            log_var = self._c(f"log_var_{self.variance}", t, x_t)
        std = torch.exp(0.5 * log_var) if isinstance(log_var, torch.Tensor) else math.exp(0.5 * log_var)
        return mean + std * noise

    def t_for_sigma(self, sigma: float) -> int:
        """The 0-based step whose noise level matches Gaussian noise ``sigma`` on the [0, 1] scale.

        ``x + δ`` maps to ``2x - 1 + 2δ``; scaled by ``sqrt(ᾱ_t)`` it is a forward sample when
        ``sqrt((1 - ᾱ_t) / ᾱ_t) = 2σ``: the index minimising the difference (Carlini et al. 2023, §3).
        """
        level = ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        return int(torch.argmin((level - 2.0 * float(sigma)).abs()))

    def purify(self, x: torch.Tensor, t: int, generator: Generators = None, clip: bool = True) -> torch.Tensor:
        """DiffPure on ``x`` ``[B, C, H, W]`` in [0, 1]: diffuse to step ``t`` (index ``t - 1``), reverse ``t`` steps.

        As DiffPure's guided-diffusion runner: ``x_t = sqrt(ᾱ[t-1]) x0 + sqrt(1 - ᾱ[t-1]) ε``, then
        :meth:`p_sample` at ``t-1, ..., 0`` (``sample_step=1``). Draws ``ε`` then the noise of steps
        ``t-1 .. 1`` with :func:`~iqaguard.defenses.base.draw` (per-image generators reproduce
        single-image results). Each reverse step is checkpointed while autograd records.
        """
        shape = x.shape[1:]
        h = self.q_sample(2 * x - 1, t - 1, draw(x, generator, shape, normal=True))
        grad = torch.is_grad_enabled()
        for i in reversed(range(t)):
            z = draw(x, generator, shape, normal=True) if i > 0 else torch.zeros_like(h)
            if self.checkpoint and grad and h.requires_grad:
                h = checkpoint(self.p_sample, h, i, z, clip, use_reentrant=False, preserve_rng_state=False)
            else:
                h = self.p_sample(h, i, z, clip)
        return (h + 1) / 2


def pad_to(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """``x`` padded at the bottom/right to multiples of ``multiple`` (reflect; replicate when too small)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


# ====================================================================== memory of one adaptive backward
def _peak_worker(t: int, size: Sequence[int], device: str, weights: Optional[str]) -> Dict[str, Any]:
    import resource
    import time

    import iqaguard
    from .diffpure import DiffPure

    dev = torch.device(device)
    p = DiffPure(t=t, **({"weights": weights} if weights else {})).to(dev)
    metric = iqaguard.metrics.create("builtin-nr").to(dev)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(dev).requires_grad_(True)
    dm = iqaguard.defend(metric, p)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        start = torch.cuda.memory_allocated(dev)
    t0 = time.perf_counter()
    dm(x).sum().backward()
    out: Dict[str, Any] = {"t": t, "size": list(size), "device": str(dev), "seconds": round(time.perf_counter() - t0, 2),
                           "grad_finite": bool(torch.isfinite(x.grad).all())}
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        out["peak_mib"] = round((torch.cuda.max_memory_allocated(dev) - start) / 2 ** 20, 1)
        out["method"] = "torch.cuda.max_memory_allocated delta"
    else:
        out["peak_mib"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, 1)
        out["method"] = "ru_maxrss delta (Linux KiB) in a fresh subprocess"
    return out


def peak_memory_adaptive(t: int = 50, size: Tuple[int, int] = (384, 512), device: str = "cpu",
                         weights: Optional[str] = None) -> Dict[str, Any]:
    """Peak memory of one adaptive backward, ``∇_x builtin-nr(DiffPure(t)(x))``, on one ``3 x H x W`` image.

    Runs in a fresh Python subprocess (so the CPU figure, the ``ru_maxrss`` growth during the
    backward, is not masked by this process's earlier peak; glibc's ``MALLOC_MMAP_THRESHOLD_`` is
    fixed at 64 KiB there so that freed buffers leave the resident set); on CUDA the
    ``torch.cuda.max_memory_allocated`` growth. Returns ``{"t", "size", "device", "peak_mib",
    "seconds", "grad_finite", "method"}``.
    """
    import json
    import os
    import subprocess
    import sys
    code = ("import json, torch; torch.set_num_threads(1); "
            "from iqaguard.defenses.purification._diffusion import _peak_worker; "
            f"print(json.dumps(_peak_worker({int(t)}, {list(size)!r}, {str(device)!r}, {weights!r})))")
    # a fixed mmap threshold makes glibc return every freed tensor buffer to the OS, so the peak RSS
    # tracks live tensors rather than heap fragmentation (glibc's dynamic threshold otherwise keeps
    # recomputed steps' freed buffers in the heap: 7.6 GiB instead of the live peak at t=50, 384x512)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])
