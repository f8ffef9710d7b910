"""The black-box family: attacks that only query the metric's score.

A :class:`QueryAttack` never sees the metric: its :meth:`~QueryAttack.search` gets a
:class:`QueryOracle`, which scores candidate images under ``torch.no_grad()`` (so no backward pass
can ever run), counts the queries of every image and refuses any beyond ``max_queries``. Queries
are batched: one oracle call scores many candidates in one forward pass. After a call,
``attack.queries`` holds the number of queries each image used (stored with benchmark rows).
"""
from __future__ import annotations

from abc import abstractmethod

from typing import Optional

import torch

from ..errors import IqaguardError
from ..metrics.base import Metric
from .base import Attack


class QueryBudgetExceeded(IqaguardError):
    """A search asked the oracle for more queries than ``max_queries`` allows (a bug in the attack)."""


class QueryOracle:
    """Scores candidates of a batch of images and counts the queries per image.

    Args:
        metric: the attacked metric (only its scores are ever returned).
        ref: reference images ``[B, 3, H, W]`` of an FR metric, else ``None``.
        n_images: ``B``, the number of images attacked.
        max_queries: queries allowed per image.
    """

    def __init__(self, metric: Metric, ref: Optional[torch.Tensor], n_images: int, max_queries: int) -> None:
        self._metric, self._ref, self.max_queries = metric, ref, int(max_queries)
        self.counts = torch.zeros(n_images, dtype=torch.long)

    def remaining(self) -> torch.Tensor:
        """``[B]`` queries each image has left."""
        return self.max_queries - self.counts

    @torch.no_grad()
    def __call__(self, candidates: torch.Tensor, idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Objective ``sign * f / diam`` ``[K]`` of ``candidates [K, 3, H, W]`` of images ``idx [K]``.

        ``idx`` (default ``0..K-1``) says which attacked image each candidate belongs to; an image
        may appear several times (several candidates in one batched query).

        Raises:
            QueryBudgetExceeded: some image would exceed ``max_queries``.
        """
        k = candidates.shape[0]
        idx = torch.arange(k) if idx is None else idx.to(torch.long).cpu()
        new = self.counts + torch.bincount(idx, minlength=self.counts.numel())
        if bool((new > self.max_queries).any()):
            raise QueryBudgetExceeded(f"query budget of {self.max_queries} per image exceeded")
        self.counts = new
        ref = None if self._ref is None else self._ref[idx.to(self._ref.device)]
        return Attack.objective(self._metric, candidates.detach(), ref).detach()


class QueryAttack(Attack):
    """Base of the query attacks (Square, NES, ...): subclasses implement :meth:`search`.

    Subclasses take a ``max_queries`` parameter (queries per image).
    """

    max_queries: int = 1000

    def run(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
        oracle = QueryOracle(metric, ref, x.shape[0], self.max_queries)
        with torch.no_grad():
            out = self.search(oracle, x, generator)
        self.queries = oracle.counts.clone()
        return out

    @abstractmethod
    def search(self, oracle: QueryOracle, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Find ``x_adv`` using ``oracle`` only (called under ``torch.no_grad()``)."""
