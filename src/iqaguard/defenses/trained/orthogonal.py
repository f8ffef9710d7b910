"""Orthogonal (and almost-orthogonal) circular convolutions ``[B, c, s, s] -> [B, c, s, s]``.

The orthogonal stage of the RobustBlock ("Robustness as Architecture: Designing IQA Models to
Withstand Adversarial Perturbations", §4 "RobustBlock", §6.1 Table 3 compares the three):

* ``"cayley"`` — :class:`CayleyConv2d`, Trockman & Kolter, "Orthogonalizing Convolutional Layers
  with the Cayley Transform" (ICLR 2021), §3: exactly orthogonal, computed in the Fourier domain.
* ``"aoc"`` — :class:`AOCConv2d`, Boissin et al. 2025, "An Adaptive Orthogonal Convolution Scheme
  for Efficient and Flexible CNN Architectures" (arXiv:2501.07930), from the optional
  ``orthogonium`` package: exactly orthogonal (up to float rounding) under circular padding.
* ``"aol"`` — :class:`AOLConv2d`, Prach & Lampert, "Almost-Orthogonal Layers for Efficient
  General-Purpose Lipschitz Networks" (ECCV 2022), Theorem 1: spectral norm <= 1, *not* orthogonal.

All three are linear (no bias), shift-equivariant on the ``s x s`` torus (circular boundary), keep
the input's dtype and device and are differentiable in input and parameters.
:func:`circular_conv_singular_values` returns every singular value of such an operator.
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError, MissingDependencyError, UnknownNameError


def _check_kernel(kernel_size: int, channels: int) -> None:
    if not isinstance(channels, int) or channels < 1:
        raise InputError(f"orthogonal convolution: channels must be an int >= 1, got {channels!r}")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise InputError(f"orthogonal convolution: kernel_size must be an odd int >= 1 (centred taps), "
                         f"got {kernel_size!r}")


def _check_input(x: torch.Tensor, channels: int, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != channels or x.shape[-1] != x.shape[-2]:
        raise InputError(f"{name}: expected a square [B, {channels}, s, s] tensor, got shape {tuple(x.shape)}")


class CayleyConv2d(nn.Module):
    """Orthogonal circular convolution by the Cayley transform in the Fourier domain.

    Trockman & Kolter (ICLR 2021), §3: for a free kernel ``V [c, c, k, k]`` and an ``s x s`` input,
    the per-frequency ``c x c`` matrix of the circular convolution is ``V_hat(f) = sum_p V[:, :, p]
    exp(2 pi i <f, p - k // 2> / s)`` (the DFT of the kernel zero-padded, or for ``s < k`` folded,
    onto the ``s x s`` torus; taps centred as in ``nn.Conv2d(padding=k // 2)``). ``A(f) = V_hat(f)
    - V_hat(f)^H`` is skew-Hermitian, so the Cayley transform ``Q(f) = (I + A(f))^{-1} (I - A(f))``
    is unitary; ``Q(-f) = conj(Q(f))`` because ``V`` is real. The layer multiplies the input's
    ``rfft2`` by ``Q(f)`` per frequency and returns the ``irfft2``: an exactly orthogonal operator on
    ``R^{c s^2}`` for every ``s >= 1`` (all singular values 1 up to float rounding).

    ``Q`` is computed in complex64 (complex128 for float64 inputs) with ``torch.linalg.solve``;
    ``I + A`` has singular values ``>= 1``, so the solve is well conditioned.

    Args:
        channels: ``c`` (input = output channels), >= 1.
        kernel_size: odd ``k`` >= 1 of the free kernel.

    Init: ``V`` as ``nn.Conv2d``'s default (Kaiming-uniform), a random orthogonal operator.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        _check_kernel(kernel_size, channels)
        self.channels, self.kernel_size = channels, kernel_size
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def _phases(self, n: int, s: int, dtype: torch.dtype) -> torch.Tensor:
        """``exp(2 pi i f (p - k // 2) / s)`` for ``f < n``, ``p < k``: ``[n, k]``."""
        f = torch.arange(n, device=self.weight.device, dtype=torch.float64)
        p = torch.arange(self.kernel_size, device=self.weight.device, dtype=torch.float64) - self.kernel_size // 2
        ang = 2 * math.pi * torch.remainder(f[:, None] * p[None, :], s) / s
        return torch.polar(torch.ones_like(ang), ang).to(dtype)

    def frequency_matrices(self, s: int, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
        """The unitary ``Q(f)`` for the ``rfft2`` frequencies of an ``s x s`` input: ``[s, s // 2 + 1, c, c]``."""
        e_row, e_col = self._phases(s, s, dtype), self._phases(s // 2 + 1, s, dtype)
        v_hat = torch.einsum("ap,bq,ijpq->abij", e_row, e_col, self.weight.to(dtype))
        a = v_hat - v_hat.transpose(-1, -2).conj()
        eye = torch.eye(self.channels, dtype=dtype, device=a.device)
        return torch.linalg.solve(eye + a, eye - a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, c, s, s]`` -> ``[B, c, s, s]`` (same dtype), norm-preserving."""
        _check_input(x, self.channels, "CayleyConv2d")
        s = x.shape[-1]
        cdtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        real = torch.float64 if x.dtype == torch.float64 else torch.float32
        q = self.frequency_matrices(s, cdtype)
        x_hat = torch.fft.rfft2(x.to(real))
        y_hat = torch.einsum("abij,njab->niab", q, x_hat)
        return torch.fft.irfft2(y_hat, s=(s, s)).to(x.dtype)


class AOCConv2d(nn.Module):
    """Adaptive Orthogonal Convolution (Boissin et al. 2025) with circular padding, from ``orthogonium``.

    Wraps ``orthogonium.layers.conv.AOC.AdaptiveOrthoConv2d(c, c, k, stride=1, padding="same",
    padding_mode="circular", bias=False)``, which for stride 1 is a ``FastBlockConv2d``: a BCOP-style
    kernel (block convolutions built from ``2k`` orthogonal projectors) whose circular convolution
    is orthogonal on every ``s x s`` input. The projectors are
    orthogonalised by QR (``BatchedQROrthogonalization``) without power-iteration pre-scaling: QR's
    factor is exact and scale-invariant, and the default power iteration would update its ``u, v``
    state on every forward call (outputs would depend on call history). For ``c = 1`` orthogonium
    has no free projector and builds a fixed delta kernel: a one-pixel circular shift.

    Args:
        channels: ``c`` >= 1; kernel_size: odd ``k`` >= 1. Inputs: any ``s >= 1`` for ``k <= 3``
            (circular padding needs ``s >= k // 2``).

    Raises:
        MissingDependencyError: ``orthogonium`` is not installed.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        _check_kernel(kernel_size, channels)
        try:
            from orthogonium.layers.conv.AOC import AdaptiveOrthoConv2d
            from orthogonium.model_factory.classparam import ClassParam
            from orthogonium.reparametrizers import BatchedIdentity, BatchedQROrthogonalization, OrthoParams
        except ImportError:
            raise MissingDependencyError("orth='aoc' needs the orthogonium package: pip install orthogonium") from None
        self.channels, self.kernel_size = channels, kernel_size
        params = OrthoParams(spectral_normalizer=BatchedIdentity,
                             orthogonalizer=ClassParam(BatchedQROrthogonalization))
        self.conv = AdaptiveOrthoConv2d(channels, channels, kernel_size, stride=1, padding="same", bias=False,
                                        padding_mode="circular", ortho_params=params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, c, s, s]`` -> ``[B, c, s, s]``, norm-preserving."""
        _check_input(x, self.channels, "AOCConv2d")
        return self.conv(x)


class AOLConv2d(nn.Module):
    """Almost-Orthogonal Layer (Prach & Lampert, ECCV 2022), convolutional form, circular padding.

    Theorem 1: for a matrix ``P`` and ``d_i = (sum_j |P^T P|_ij)^{-1/2}``, ``P diag(d)`` has spectral
    norm <= 1. For a convolution kernel ``P [c, c, k, k]``, ``P^T P`` is the kernel's correlation with
    itself over all ``(2k - 1)^2`` spatial offsets, ``R[i, j, t] = sum_o sum_p P[o, i, p + t] P[o, j, p]``,
    and ``d_i = (sum_j sum_t |R[i, j, t]|)^{-1/2}``; the layer convolves with ``P diag(d)`` (input
    channel ``i`` scaled by ``d_i``). The bound holds for circular padding on any ``s x s`` torus too
    (wrapped offsets only merge terms of the same absolute sum). The result is 1-Lipschitz but
    **not orthogonal**: singular values lie in ``[0, 1]`` and some are usually well below 1.

    Args:
        channels: ``c`` >= 1; kernel_size: odd ``k`` >= 1. Inputs: any ``s >= 1`` for ``k <= 3``
            (circular padding needs ``s >= k // 2``).

    Init: a Dirac (identity) kernel, so ``d = 1`` and the layer starts as the identity; a random
    (Kaiming) kernel would start as a strong contraction (largest singular value about 0.7 for
    ``c = 4``), shrinking the pre-trained features the block is inserted between.
    """

    def __init__(self, channels: int, kernel_size: int = 3, eps: float = 1e-12) -> None:
        super().__init__()
        _check_kernel(kernel_size, channels)
        self.channels, self.kernel_size, self.eps = channels, kernel_size, float(eps)
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size))
        nn.init.dirac_(self.weight)

    def rescaled_weight(self) -> torch.Tensor:
        """``P diag(d)`` ``[c, c, k, k]``, the kernel actually applied."""
        p = self.weight
        pt = p.transpose(0, 1)  # [c_in, c_out, k, k]
        corr = F.conv2d(pt, pt, padding=self.kernel_size - 1)  # [c_in, c_in, 2k-1, 2k-1]
        d = (corr.abs().sum(dim=(1, 2, 3)) + self.eps).rsqrt()
        return p * d.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, c, s, s]`` -> ``[B, c, s, s]`` with ``||y|| <= ||x||``."""
        _check_input(x, self.channels, "AOLConv2d")
        r = self.kernel_size // 2
        h = F.pad(x, (r, r, r, r), mode="circular") if r else x
        return F.conv2d(h, self.rescaled_weight().to(x.dtype))


#: The orthogonalisations selectable by ``orth=`` (``RobustBlock``, :func:`make_orthogonal`).
ORTHOGONAL_KINDS: Dict[str, Callable[..., nn.Module]] = {"cayley": CayleyConv2d, "aoc": AOCConv2d, "aol": AOLConv2d}


def check_kind(kind: object) -> str:
    """``kind`` if it is a key of :data:`ORTHOGONAL_KINDS`, else :class:`UnknownNameError` (one line)."""
    if not isinstance(kind, str) or kind not in ORTHOGONAL_KINDS:
        raise UnknownNameError(f"unknown orthogonal convolution {kind!r}; choose one of: {', '.join(ORTHOGONAL_KINDS)}")
    return kind


def make_orthogonal(kind: str, channels: int, kernel_size: int = 3) -> nn.Module:
    """Build the ``[B, channels, s, s] -> [B, channels, s, s]`` layer of ``kind`` (see :data:`ORTHOGONAL_KINDS`).

    Raises:
        UnknownNameError: ``kind`` is not ``"cayley"``, ``"aoc"`` or ``"aol"``.
        InputError: ``channels < 1`` or an even / non-positive ``kernel_size``.
        MissingDependencyError: ``"aoc"`` without ``orthogonium`` installed.
    """
    return ORTHOGONAL_KINDS[check_kind(kind)](channels, kernel_size)


@torch.no_grad()
def circular_conv_singular_values(layer: nn.Module, size: int) -> torch.Tensor:
    """All ``c * size^2`` singular values of a circular convolution layer on ``size x size`` inputs.

    A shift-equivariant linear map on the torus block-diagonalises under the 2-D DFT: its
    frequency-``f`` block is ``M(f)[o, i] = FFT2(h_i[o])(f)``, where ``h_i`` is the layer's response
    to the unit impulse on channel ``i`` at pixel ``(0, 0)``. The ``c`` impulse responses are taken
    in one batch, transformed in float64 and ``torch.linalg.svdvals`` is applied per frequency.

    Args:
        layer: a bias-free, linear, circularly shift-equivariant module ``[B, c, s, s] -> [B, c, s, s]``
            with a ``channels`` (or ``in_channels``) attribute, e.g. :func:`make_orthogonal`'s layers.
        size: ``s`` >= 1.

    Returns:
        float64 ``[c * size^2]`` (CPU), descending within each frequency.
    """
    c = getattr(layer, "channels", getattr(layer, "in_channels", None))
    if not isinstance(c, int) or c < 1:
        raise InputError(f"circular_conv_singular_values: {type(layer).__name__} has no int 'channels' attribute")
    if not isinstance(size, int) or size < 1:
        raise InputError(f"circular_conv_singular_values: size must be an int >= 1, got {size!r}")
    p = next(iter(layer.parameters()), None)
    floating = p is not None and p.is_floating_point()
    device, dtype = (p.device, p.dtype) if floating else (torch.device("cpu"), torch.float32)
    impulses = torch.zeros(c, c, size, size, device=device, dtype=dtype)
    impulses[torch.arange(c), torch.arange(c), 0, 0] = 1.0
    h = layer(impulses).double()  # [i, o, s, s]
    m = torch.fft.fft2(h).permute(2, 3, 1, 0)  # [s, s, o, i]
    return torch.linalg.svdvals(m).reshape(-1).cpu()


__all__ = ["AOCConv2d", "AOLConv2d", "CayleyConv2d", "ORTHOGONAL_KINDS", "check_kind", "circular_conv_singular_values",
           "make_orthogonal"]
