"""Shared pieces of the query (black-box) attacks: seeded sampling, the square-size schedule of
the Square attack (also used by Patch-RS), and a driver that batches per-image searches.

All random numbers are drawn on the CPU from one :class:`torch.Generator` (a fixed default seed 0
when none is given) and then moved to the images' device, so that a seed gives the same attack on
CPU and CUDA.
"""
from __future__ import annotations

from typing import Generator, List, Optional, Sequence

import torch

from .base import seeded  # noqa: F401  (the query attacks call it as S.seeded)
from .gradient import take  # noqa: F401  (per-image selection: S.take)

from .query import QueryOracle

#: iteration checkpoints (out of 10,000) at which the Square attack halves its square size
#: (Andriushchenko et al. 2020, §3.1 / appendix: p is halved at i in {10, 50, ..., 8000})
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def rand(shape: Sequence[int], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) samples drawn on the CPU with ``gen``, moved to ``device``."""
    return torch.rand(tuple(shape), generator=gen).to(device)


def randn(shape: Sequence[int], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal samples drawn on the CPU with ``gen``, moved to ``device``."""
    return torch.randn(tuple(shape), generator=gen).to(device)


def randint(high: torch.Tensor | int, shape: Sequence[int], gen: torch.Generator,
            device: torch.device) -> torch.Tensor:
    """Integers uniform in ``[0, high)`` (``high`` an int or a broadcastable tensor of them)."""
    u = torch.rand(tuple(shape), generator=gen, dtype=torch.float64)
    hi = torch.as_tensor(high, dtype=torch.float64)
    return (u * hi).floor().clamp(max=hi - 1).long().to(device)


def random_signs(shape: Sequence[int], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform random signs in {-1, +1}."""
    return torch.randint(0, 2, tuple(shape), generator=gen).to(device=device, dtype=torch.float32) * 2 - 1


def square_fraction(p_init: float, it: int, n_iters: int) -> float:
    """Fraction ``p`` of the image a square covers at iteration ``it`` of ``n_iters``.

    The Square attack's schedule: ``p_init`` halved at each checkpoint of :data:`_HALVINGS`, the
    checkpoints being rescaled from the paper's 10,000 iterations to ``n_iters``.
    """
    i = int(it / max(n_iters, 1) * 10000)
    for k, t in enumerate(_HALVINGS):
        if i <= t:
            return p_init / 2 ** k
    return p_init / 2 ** len(_HALVINGS)


def window_mask(rows: torch.Tensor, cols: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """``[B, 1, H, W]`` bool: the ``size x size`` window at top-left ``(rows[b], cols[b])``."""
    r = torch.arange(h, device=rows.device).view(1, h, 1)
    c = torch.arange(w, device=rows.device).view(1, 1, w)
    r0, c0 = rows.view(-1, 1, 1), cols.view(-1, 1, 1)
    return ((r >= r0) & (r < r0 + size) & (c >= c0) & (c < c0 + size)).unsqueeze(1)


#: a per-image search: yields candidates ``[K, 3, H, W]`` (K >= 1), receives their objectives ``[K]``
Search = Generator[torch.Tensor, torch.Tensor, torch.Tensor]


def drive(oracle: QueryOracle, searches: List[Search]) -> List[torch.Tensor]:
    """Run one sequential search per image, batching their queries: one oracle call per round.

    Each round collects the pending candidates of every unfinished search, scores them all in one
    oracle call and sends each search its own objectives. A search ends by returning its result;
    it must itself stay within its image's query budget (the oracle refuses otherwise).
    """
    results: List[Optional[torch.Tensor]] = [None] * len(searches)
    pending: dict = {}
    for i, s in enumerate(searches):
        _advance(s, i, None, pending, results)
    while pending:
        order = sorted(pending)
        cands = torch.cat([pending[i] for i in order])
        idx = torch.cat([torch.full((pending[i].shape[0],), i, dtype=torch.long) for i in order])
        values = oracle(cands, idx)
        sent, start = dict(pending), 0
        pending.clear()
        for i in order:
            k = sent[i].shape[0]
            _advance(searches[i], i, values[start:start + k], pending, results)
            start += k
    return [r for r in results if r is not None]  # every search has returned once none is pending


def _advance(search: Search, i: int, value: Optional[torch.Tensor], pending: dict,
             results: List[Optional[torch.Tensor]]) -> None:
    try:
        pending[i] = next(search) if value is None else search.send(value)
    except StopIteration as stop:
        results[i] = stop.value

