"""NT: gradient-norm regularised fine-tuning of an IQA metric.

Liu et al., "Defense against adversarial attacks on no-reference image quality models with
gradient norm regularization", CVPR 2024; as evaluated by Guardians of Image Quality (appendix
A.3.5, eq. 11): ``L = L_IQA(f, x) + λ ‖∇ₓ f(x)‖₁²`` with ``λ = 0.0005``.

The penalty is computed exactly by double backpropagation (``create_graph=True``: the input
gradient is itself differentiated with respect to the weights), no finite-difference
approximation. Both terms use the score divided by the metric's range (``f / diam``), the units
of :func:`iqaguard.training.finetune.mse_loss`, so ``λ`` means the same for metrics of any scale;
``‖·‖₁`` sums over the whole crop (``3 x patch x patch`` values) and the square is averaged
over the batch.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Optional

import torch

from ...attacks.gradient import objective_gradient
from ...errors import InputError
from ...metrics.base import Metric
from ...registry import DEFENSES
from ...training.finetune import mse_loss
from .base import TrainedMetric


def gradient_penalty(metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor] = None,
                     create_graph: bool = True) -> torch.Tensor:
    """``mean_b ‖∇ₓ (f(x_b) / diam)‖₁²`` (a scalar; differentiable in the weights with ``create_graph``)."""
    # the attacks' objective gradient, d (±f / diam) / dx: its sign is lost in the L1 norm
    _, g = objective_gradient(metric, x.detach(), ref, create_graph=create_graph)
    return g.abs().flatten(1).sum(1).square().mean()


@DEFENSES.register("nt")
class NT(TrainedMetric):
    """Gradient-norm regularised fine-tuning, loss + λ‖∇ₓf‖₁² by double backpropagation (Liu et al. 2024).

    Recipe argument: ``lam`` (λ, default 0.0005, the value of Liu et al. that Guardians of Image
    Quality uses; one preset). Training and data arguments: :class:`TrainedMetric`.

    Example:
        >>> robust = iqaguard.defenses.create("nt", metric=iqaguard.metrics.create("builtin-nr"))
    """

    presets: ClassVar[List[Dict[str, Any]]] = [{"lam": 0.0005}]
    recipe_defaults: ClassVar[Dict[str, Any]] = {"lam": 0.0005}

    def check_recipe(self, recipe: Dict[str, Any]) -> None:
        lam = recipe["lam"]
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam >= 0:
            raise InputError(f"lam: expected a number >= 0, got {lam!r}")

    def loss(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return mse_loss(metric, x, ref, target) + self.recipe["lam"] * gradient_penalty(metric, x, ref)
