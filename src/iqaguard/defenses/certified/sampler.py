"""The one sampler of the smoothing defenses: ``N`` Gaussian draws per image, scored in chunks.

``noisy_scores(metric, x, ...)`` returns the ``[B, N]`` scores ``f(D(x + e_k))`` with
``e_k ~ N(0, σ² I)`` (``D`` an optional denoiser, the identity otherwise; the reference of an FR
metric is never noised: the defense protects the distorted input). The draws come from an
explicit generator — one for the batch or one per image (image ``i`` then gets exactly the
draws it would get alone, whatever the batch and the chunk size) — and are evaluated ``chunk``
samples at a time,
so memory stays bounded at any ``N``: a chunk of ``k`` samples of ``B`` images holds
``B·k·3·H·W`` floats of noise plus the metric's activations for ``B·k`` images. The noisy images
are not clipped to [0, 1]: the certificates are stated for ``f(x + e)`` over all of ``R^d``
(Cohen et al. 2019, §3), and the metrics accept any real input.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch

from ...errors import InputError
from ...metrics.base import Metric
from ..base import Generators, check_generator

#: default memory budget of one chunk's noise, in bytes (the metric's activations come on top)
CHUNK_BYTES = 256 * 2 ** 20


def default_chunk(x: torch.Tensor, budget: int = CHUNK_BYTES) -> int:
    """Samples per image and chunk so that one chunk's noise of the whole batch fits ``budget`` bytes."""
    per = x[0].numel() * x.element_size() * x.shape[0]
    return max(1, int(budget // max(per, 1)))


def _check_draws(sigma: float, n: int, generator: Generators, batch: int) -> None:
    """One-line errors for a bad sample count, noise level or generator (list) of a sampler call."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n: expected a positive number of samples, got {n!r}")
    if not sigma > 0:
        raise InputError(f"sigma: expected a noise level > 0, got {sigma!r}")
    check_generator(generator, batch)


def noisy_chunks(x: torch.Tensor, sigma: float, n: int, generator: Generators = None,
                 chunk: Optional[int] = None) -> Iterator[torch.Tensor]:
    """The ``n`` noisy copies ``x + σ e`` of every image, ``[B, m, 3, H, W]`` chunks of ``m <= chunk`` samples.

    One draw per sample index, so an image's stream does not depend on the chunk size (see the
    module docstring); ``generator`` as :func:`noisy_scores`.
    """
    _check_draws(sigma, n, generator, x.shape[0])
    b, shape = x.shape[0], x.shape[1:]
    gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * b
    k = chunk or default_chunk(x)
    for start in range(0, n, k):
        m = min(k, n - start)
        buf = torch.empty((b, m, *shape), dtype=x.dtype, device=x.device)
        for j in range(m):  # sample index first: an image's stream does not depend on the chunk size
            for i, g in enumerate(gens):
                dev = g.device if g is not None else torch.device("cpu")
                if dev == x.device:
                    buf[i, j].normal_(generator=g)  # in place: no per-sample allocation
                else:
                    buf[i, j].copy_(torch.randn(shape, generator=g, device=dev, dtype=x.dtype))
        yield buf.mul_(sigma).add_(x.unsqueeze(1))


def feature_noise(z: torch.Tensor, sigma: float, n: int, generator: Generators = None) -> torch.Tensor:
    """``[B, n, D]`` noisy copies ``z + σ e`` of ``[B, D]`` feature vectors (FS-IQA's feature-space sampling).

    Feature vectors are small (``n·D`` floats: 4 MB at N = 2000, D = 512), so each image's ``n``
    draws are one call on its generator (``generator`` as :func:`noisy_scores`; with one generator
    per image, image ``i`` gets the same draws in any batch) instead of :func:`noisy_chunks`'s
    per-sample loop, which exists to bound the memory of image-sized noise.
    """
    _check_draws(sigma, n, generator, z.shape[0])
    if isinstance(generator, (list, tuple)):
        noise = torch.stack([torch.randn((n, *z.shape[1:]), generator=g, dtype=z.dtype,
                                         device=g.device if g is not None else torch.device("cpu")).to(z.device)
                             for g in generator])
    else:
        dev = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn((z.shape[0], n, *z.shape[1:]), generator=generator, dtype=z.dtype, device=dev).to(z.device)
    return noise.mul_(sigma).add_(z.unsqueeze(1))


def repeat_rows(t: torch.Tensor, m: int) -> torch.Tensor:
    """``[B, ...]`` -> ``[B*m, ...]`` with each row repeated ``m`` times (image-major, as a flattened chunk)."""
    return t.unsqueeze(1).expand(t.shape[0], m, *t.shape[1:]).reshape(t.shape[0] * m, *t.shape[1:])


def noisy_scores(metric: Metric, x: torch.Tensor, sigma: float, n: int, generator: Generators = None,
                 ref: Optional[torch.Tensor] = None, chunk: Optional[int] = None,
                 denoiser: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """``[B, n]`` scores of ``n`` noisy copies of every image of ``x``.

    Args:
        metric: the base metric (called through ``metric.score``: inputs are validated once here).
        x: ``[B, 3, H, W]`` images in [0, 1]; differentiable when grad is enabled (EOT attacks).
        sigma: noise standard deviation on the [0, 1] scale, > 0.
        n: samples per image, >= 1.
        generator: ``None`` (torch's global generator), a ``torch.Generator`` or ``B`` of them.
        ref: reference images of an FR metric (``[B, 3, H, W]``), repeated for every sample.
        chunk: samples per image per forward (default :func:`default_chunk`).
        denoiser: applied to each noisy batch before the metric (DRS, DMS).

    Returns:
        ``[B, n]`` float scores, sample ``k`` of image ``i`` at ``[i, k]``.
    """
    b, out = x.shape[0], []
    for noisy in noisy_chunks(x, sigma, n, generator, chunk):
        m = noisy.shape[1]
        z = noisy.reshape(b * m, *x.shape[1:])
        del noisy
        if denoiser is not None:
            z = denoiser(z)
        out.append(metric.score(z, repeat_rows(ref, m) if ref is not None else None).view(b, m))
    return torch.cat(out, dim=1)
