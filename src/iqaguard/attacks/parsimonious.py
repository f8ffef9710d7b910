"""Parsimonious attack: lazy greedy local search over the vertices of the L∞ ball, block by block.

Moon, An & Song, "Parsimonious Black-Box Adversarial Attacks via Efficient Combinatorial
Optimization", ICML 2019, used on IQA metrics by Guardians of Image Quality (Table 7, varied
parameter ε). The perturbation is a vertex of the ε-ball: every pixel of every channel is at
``x - ε`` or ``x + ε``. The image is cut into blocks (one channel each) and the attack maximises
the objective ``sign · f(x') / diam(f)`` over the set ``A`` of blocks at ``+ε`` (all others at
``-ε``): on random batches of blocks it runs the accelerated (lazy) greedy local search of the
paper, insertion steps (move a block to ``+ε``) then deletion steps (back to ``-ε``), repeated
while either improves; after a pass over all blocks the block size halves (hierarchical
refinement; the children inherit their parent's sign), down to single pixels.

Each image runs its own search; the rounds of all images share one oracle call (:func:`._search.drive`).
"""
from __future__ import annotations

import heapq
from typing import Generator, List, Optional

import torch

from ..registry import ATTACKS
from . import _search as S
from .budgets import Restriction, check_count, check_linf_eps, linf_box, linf_presets
from .query import QueryAttack, QueryOracle



@ATTACKS.register("parsimonious")
class Parsimonious(QueryAttack):
    """Parsimonious attack (Moon et al. 2019), L∞ vertices, raising the predicted quality.

    Distance measure: L∞ (every coordinate at ±ε). Varied parameter (the presets): ``eps``:
    ``weak`` ε = 2/255, ``medium`` 4/255, ``strong`` 8/255 (the L∞ budgets of Guardians of Image
    Quality appendix A.3.4; that benchmark calibrates the same ε to PSNR targets), each with
    1,000 queries per image.

    Args:
        eps: L∞ budget on the [0, 1] scale, ``0 < eps <= 64/255`` (default 4/255).
        max_queries: queries per image, >= 1 (default 1000); the search runs until it is spent.
        block_size: initial block side in pixels, >= 1 (default 16; the paper uses 32 on
            299x299 images); halved after each pass over all blocks, down to 1.
        batch_size: blocks per local search, >= 1 (default 64, the paper's value).

    Shapes: ``x`` ``[B, 3, H, W]`` in [0, 1] -> ``x_adv`` of the same shape; ``attack.queries``
    ``[B]`` holds the queries each image used.

    Example:
        >>> x_adv = Parsimonious(preset="medium")(metric, x)   # ||x_adv - x||_inf <= 4/255
    """

    restriction = Restriction.LINF
    varied = "eps"
    presets = linf_presets(max_queries=1000)

    def __init__(self, eps: float = 4 / 255, max_queries: int = 1000, block_size: int = 16,
                 batch_size: int = 64) -> None:
        check_linf_eps(eps)
        check_count("max_queries", max_queries)
        check_count("block_size", block_size)
        check_count("batch_size", batch_size)

    def search(self, oracle: QueryOracle, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Lazy greedy block search per image until the query budget is spent.

        Returns:
            ``[B, 3, H, W]`` with ``||x_adv - x||_inf <= eps`` (as computed) and values in [0, 1].
        """
        gen = S.seeded(generator)
        lo, hi = linf_box(x, float(self.eps))
        searches = [self._image(lo[i], hi[i], gen) for i in range(x.shape[0])]
        return torch.stack(S.drive(oracle, searches))

    def _image(self, lo: torch.Tensor, hi: torch.Tensor, gen: torch.Generator) -> S.Search:
        """The search of one image (a generator driven by :func:`._search.drive`)."""
        c, h, w = lo.shape
        plus = torch.zeros(c, h, w, dtype=torch.bool, device=lo.device)  # the set A, per pixel
        left = self.max_queries - 1
        value = float((yield lo.unsqueeze(0))[0])  # f(A = {}) : every pixel at -eps
        size = max(1, min(int(self.block_size), h, w))
        while left > 0:
            blocks = [(ch, r, q) for ch in range(c) for r in range(0, h, size) for q in range(0, w, size)]
            order = torch.randperm(len(blocks), generator=gen).tolist()
            for start in range(0, len(order), int(self.batch_size)):
                batch = [blocks[k] for k in order[start:start + int(self.batch_size)]]
                changed = True
                while changed and left > 0:
                    changed = False
                    for insert in (True, False):
                        found = [e for e in batch if bool(plus[e[0], e[1], e[2]]) != insert]
                        plus, value, left, moved = yield from self._greedy(
                            found, insert, plus, value, left, size, lo, hi)
                        changed = changed or moved
                if left <= 0:
                    break
            size = max(1, size // 2)
        return torch.where(plus, hi, lo)

    @staticmethod
    def _greedy(blocks: List[tuple], insert: bool, plus: torch.Tensor, value: float, left: int,
                size: int, lo: torch.Tensor, hi: torch.Tensor) -> Generator[torch.Tensor, torch.Tensor, tuple]:
        """Accelerated greedy: flip blocks of ``blocks`` to ``insert`` while a flip raises the objective.

        Marginal gains of all candidate blocks are queried at once; afterwards only the block on
        top of the (max-)heap is re-evaluated, and it is flipped if its fresh gain is positive and
        still at least the next stale gain (gains only shrink as the set grows, the lazy rule).
        """
        def flipped(e: tuple) -> torch.Tensor:
            m = plus.clone()
            m[e[0], e[1]:e[1] + size, e[2]:e[2] + size] = insert
            return m

        blocks = blocks[:left]
        if not blocks:
            return plus, value, left, False
        masks = [flipped(e) for e in blocks]
        f = (yield torch.stack([torch.where(m, hi, lo) for m in masks])).tolist()
        left -= len(blocks)
        heap = [(-(fi - value), k) for k, fi in enumerate(f)]
        heapq.heapify(heap)
        fresh, moved = set(range(len(blocks))), False
        while heap:
            gain, k = heapq.heappop(heap)
            if -gain <= 0:
                break
            if k not in fresh:  # stale gain: query it again against the current set
                if left <= 0:
                    break
                m = flipped(blocks[k])
                fk = float((yield torch.where(m, hi, lo).unsqueeze(0))[0])
                left -= 1
                fresh.add(k)
                if heap and fk - value < -heap[0][0]:
                    heapq.heappush(heap, (-(fk - value), k))
                    continue
                f[k] = fk
            if f[k] - value <= 0:
                continue
            plus, value, moved = flipped(blocks[k]), f[k], True
            fresh = set()
        return plus, value, left, moved
