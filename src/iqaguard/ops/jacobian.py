"""The largest singular value ``‖J_g(x)‖₂`` of a network's input Jacobian, per image (FS-IQA Theorem 1).

``g`` maps a batch ``[B, ...]`` to features ``[B, D]`` image by image (a network in eval mode: no
batch statistics couple the images), so the Jacobian of each image is a ``D x d`` matrix
(``d = 3·H·W``) and the batch is ``B`` independent problems solved together.

* ``exact`` — every row of ``J`` by vector-Jacobian products (``D`` of them, ``chunk`` at a time
  through ``torch.func.vmap`` over one saved forward), the Gram matrix ``J Jᵀ`` in float64, and its
  top eigenvalue by a dense symmetric eigensolver: ``‖J‖₂ = sqrt(λ_max(J Jᵀ))``. Memory: the rows of
  one image, ``D·d`` floats (1.2 GB for D = 512 at 3×384×512), so images are done one at a time.
* ``fast`` — Lanczos iteration on the ``D x D`` operator ``A = J Jᵀ`` applied matrix-free (``A u =
  J (Jᵀ u)``: one VJP and one Jacobian-vector product per step, the latter as the VJP of the
  linear map ``u -> Jᵀu``, both reusing one saved forward),
  with full reorthogonalisation, from a random unit start (Golub & Van Loan, "Matrix
  Computations", §10.1). It stops when the residual of the top Ritz pair is below ``tol`` times
  its Ritz value, or after ``max_iter`` steps (at most ``D``: then the Krylov space is the whole
  space and the value is exact).

Safety of ``fast``: a Ritz value ``θ`` never exceeds ``λ_max`` (Cauchy interlacing), so ``sqrt(θ)``
alone underestimates the norm and would *overstate* the certified radius ``ε_x = σ_f / ‖J‖₂``.
For the top Ritz pair ``(θ, y)`` the residual ``r = ‖A y − θ y‖ = β_k |s_k|`` (``β_k`` the last
off-diagonal, ``s_k`` the last entry of ``T_k``'s top eigenvector) bounds the distance from ``θ``
to an eigenvalue of ``A`` (Krylov–Bogoliubov: some ``λ_j ∈ [θ − r, θ + r]``), and the top Ritz value
of a Krylov space converges to ``λ_max`` first (Kaniel–Paige; the random start has a non-zero
component on the top eigenvector with probability 1). :class:`JacobianNorm` therefore reports both
``norm = sqrt(θ)`` and ``upper = sqrt(θ + r)``; the certified defense divides by ``upper``, which
is ``>=`` the exact norm whenever the iteration has found the top eigenvalue. ``exact`` has
``upper == norm``. ``benchmarks/fsiqa_speed.py`` measures the margin on builtin images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..errors import InputError

MODES = ("exact", "fast")


@dataclass
class JacobianNorm:
    """Per image ``[B]`` float64: ``norm`` (the estimate of ``‖J‖₂``), ``upper`` (the value the
    certificate uses, ``>= norm``; see the module docstring) and ``steps`` (VJP rows for ``exact``,
    Lanczos steps for ``fast``)."""

    norm: torch.Tensor
    upper: torch.Tensor
    steps: torch.Tensor


def _flat(fn: Callable[..., torch.Tensor], aux: Sequence[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``z -> fn(z, *aux)`` with the output checked to be ``[B, D]`` (``aux`` held fixed, not differentiated)."""
    def g(z: torch.Tensor) -> torch.Tensor:
        out = fn(z, *aux)
        if out.dim() != 2 or out.shape[0] != z.shape[0]:
            raise InputError(f"jacobian_norm: the function must map [B, ...] to [B, D], got {tuple(out.shape)}")
        return out
    return g


def exact_norm(fn: Callable[..., torch.Tensor], x: torch.Tensor, chunk: int = 32,
               aux: Sequence[torch.Tensor] = ()) -> JacobianNorm:
    """``‖J‖₂`` of every image from all rows of ``J``, one image (and its rows of ``aux``) at a time."""
    norms, steps = [], []
    for i in range(x.shape[0]):
        g = _flat(fn, [a[i:i + 1] for a in aux])
        xi = x[i:i + 1].detach()
        out, vjp_fn = torch.func.vjp(g, xi)
        d_out = out.shape[1]
        eye = torch.eye(d_out, dtype=out.dtype, device=out.device)
        rows = []
        for s in range(0, d_out, chunk):
            cot = eye[s:s + chunk].unsqueeze(1)  # [k, 1, D]
            (r,) = torch.func.vmap(vjp_fn)(cot)
            rows.append(r.reshape(r.shape[0], -1).double())
        rows_t = torch.cat(rows)
        gram = rows_t @ rows_t.T
        del rows, rows_t
        lam = torch.linalg.eigvalsh(gram)[-1].clamp(min=0)
        norms.append(lam.sqrt())
        steps.append(d_out)
    n = torch.stack(norms).cpu()
    return JacobianNorm(n, n.clone(), torch.tensor(steps))


def fast_norm(fn: Callable[..., torch.Tensor], x: torch.Tensor, tol: float = 1e-3, max_iter: int = 64,
              generator: Optional[torch.Generator] = None, aux: Sequence[torch.Tensor] = ()) -> JacobianNorm:
    """``‖J‖₂`` of every image by matrix-free Lanczos on ``J Jᵀ`` (see the module docstring)."""
    g = _flat(fn, aux)
    x = x.detach()
    out, vjp_fn = torch.func.vjp(g, x)
    # J v as the VJP of the (linear) map u -> Jᵀu: a double backward over the same saved forward.
    # (torch.func.linearize gave non-repeatable products through in-place activations in torch 2.13.)
    _, jv_fn = torch.func.vjp(lambda u: vjp_fn(u)[0], torch.zeros_like(out))
    b, d_out = out.shape
    k_max = min(int(max_iter), d_out)

    def apply(u: torch.Tensor) -> torch.Tensor:  # [B, D] -> [B, D], per image J_i J_iᵀ u_i
        (v,) = vjp_fn(u.to(out.dtype))
        return jv_fn(v)[0].double()

    q = torch.randn((b, d_out), generator=generator, dtype=torch.float64, device=out.device)
    q = q / q.norm(dim=1, keepdim=True)
    basis = [q]
    alphas, betas = [], []
    theta = torch.zeros(b, dtype=torch.float64)
    resid = torch.full((b,), float("inf"), dtype=torch.float64)
    done = torch.zeros(b, dtype=torch.bool)
    steps = torch.zeros(b, dtype=torch.long)
    for k in range(k_max):
        w = apply(basis[-1])
        a = (w * basis[-1]).sum(1)
        alphas.append(a)
        for qj in basis:  # full reorthogonalisation (twice is enough: Giraud et al. 2005)
            w = w - (w * qj).sum(1, keepdim=True) * qj
        for qj in basis:
            w = w - (w * qj).sum(1, keepdim=True) * qj
        beta = w.norm(dim=1)
        steps = torch.where(done, steps, torch.full_like(steps, k + 1))
        t = torch.diag_embed(torch.stack(alphas, 1))
        if betas:
            off = torch.stack(betas, 1)
            t = t + torch.diag_embed(off, offset=1) + torch.diag_embed(off, offset=-1)
        evals, evecs = torch.linalg.eigh(t.cpu())
        th = evals[:, -1].clamp(min=0)
        r = beta.cpu().abs() * evecs[:, -1, -1].abs()
        theta = torch.where(done, theta, th)
        resid = torch.where(done, resid, r)
        done = done | (r <= tol * th.clamp(min=1e-300)) | (beta.cpu() <= 1e-12 * th.clamp(min=1e-300).sqrt())
        if bool(done.all()) or k + 1 == k_max:
            break
        betas.append(beta)
        basis.append(w / beta.clamp(min=1e-300).unsqueeze(1))
    if k_max == d_out:
        resid = torch.where(steps == d_out, torch.zeros_like(resid), resid)
    return JacobianNorm(theta.sqrt(), (theta + resid).sqrt(), steps)


def jacobian_norm(fn: Callable[..., torch.Tensor], x: torch.Tensor, mode: str = "fast", tol: float = 1e-3,
                  max_iter: int = 64, chunk: int = 32, generator: Optional[torch.Generator] = None,
                  aux: Sequence[torch.Tensor] = ()) -> JacobianNorm:
    """``‖J_fn(x_i)‖₂`` of every image ``x_i`` by ``mode`` ``"exact"`` or ``"fast"`` (module docstring).

    Args:
        fn: ``fn(z, *aux)``: ``[B, ...] -> [B, D]``, image-wise independent and differentiable in ``z``
            (a network in eval mode).
        x: ``[B, ...]`` inputs.
        aux: ``[B, ...]`` tensors passed to ``fn`` after ``z`` and held fixed (an FR metric's
            references), sliced with ``x`` where the images are done one at a time.
        mode: ``"exact"`` (all rows, dense eigensolver) or ``"fast"`` (Lanczos).
        tol: ``fast``: stop when the top Ritz residual is ``<= tol ×`` the Ritz value.
        max_iter: ``fast``: most Lanczos steps (capped at ``D``).
        chunk: ``exact``: rows per batched VJP.
        generator: ``fast``: the generator of the random start.
    """
    if mode not in MODES:
        raise InputError(f"mode: expected one of {MODES}, got {mode!r}")
    if mode == "exact":
        return exact_norm(fn, x, chunk, aux)
    return fast_norm(fn, x, tol, max_iter, generator, aux)
