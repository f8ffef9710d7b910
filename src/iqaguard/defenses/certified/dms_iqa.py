"""DMS-IQA: denoised median smoothing with a denoiser trained for the metric.

Shumitskaya, Pautov, Vatolin & Antsiferova, "Stochastic BIQA: Median Randomized Smoothing for
Certified Blind Image Quality Assessment" (Computer Vision and Image Understanding 259, 2025;
summarised in FS-IQA's Related Work): median smoothing of ``f ∘ D`` (the certificate of
:class:`~iqaguard.defenses.certified.ms.MedianSmoothing`, unchanged), where the denoiser ``D`` is
trained with a composite loss of three parts (:func:`dms_iqa_loss`):

* pixel MSE between ``D(x + e)`` and ``x``;
* MSE between the metric's score of the denoised image and the true subjective score;
* a differentiable rank loss between those scores and the subjective scores (:func:`rank_loss`).

The paper's text does not fix the rank loss or the weights; iqaguard's choices (written down
here and in ``docs/certified.md``): the pairwise hinge ``mean_{y_i > y_j} max(0, -(p_i - p_j))``
over every pair of the batch with distinct targets (zero exactly when the batch is ordered
like its targets), and both score terms divided by the metric's range (``diam``, squared for
the MSE), so the three terms are on comparable scales for any metric; weights 1, 1, 1.

The denoiser is tied to its metric: the shipped one (``defenses/weights/dms-iqa-builtin-nr.safetensors``,
trained by ``scripts/train_dms_iqa.py --metric builtin-nr`` from the DRS/DMS DnCNN) is the
default for ``builtin-nr``; any other metric needs its own file (``denoiser=load_denoiser(path)``)
or the training command, which the missing-weights error names.
"""
from __future__ import annotations

from typing import Callable

import torch

from ...registry import DEFENSES
from ...training.finetune import rank_loss
from .denoiser import dms_iqa_weights, load_denoiser
from .ms import DenoisedMedianSmoothing


def dms_iqa_loss(denoised: torch.Tensor, clean: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                 diam: float, w_score: float = 1.0, w_rank: float = 1.0) -> torch.Tensor:
    """The DMS-IQA denoiser loss (Stochastic BIQA §4): pixel MSE + score MSE + rank loss.

    Args:
        denoised: ``D(x + e)``, ``[B, 3, H, W]``.
        clean: ``x``, same shape.
        pred: ``[B]`` the metric's scores of ``denoised``.
        target: ``[B]`` subjective scores mapped to the metric's units and orientation.
        diam: the metric's range ``|best - worst|`` (the score terms are divided by it).
        w_score, w_rank: weights of the score MSE and the rank loss.
    """
    pixel = torch.mean((denoised - clean) ** 2)
    score = torch.mean(((pred - target) / diam) ** 2)
    return pixel + w_score * score + w_rank * rank_loss(pred, target) / diam


@DEFENSES.register("dms-iqa")
class DMSIQA(DenoisedMedianSmoothing):
    """Median smoothing of ``f ∘ D`` with ``D`` trained for ``f`` by the DMS-IQA loss (module docstring).

    Arguments as :class:`~iqaguard.defenses.certified.ms.MedianSmoothing`; without ``denoiser`` the
    shipped denoiser of the metric is loaded (``MissingWeightsError`` naming
    ``scripts/train_dms_iqa.py --metric <name>`` when there is none).
    """

    def default_denoiser(self, metric) -> Callable[[torch.Tensor], torch.Tensor]:
        path, cmd = dms_iqa_weights(metric.name)
        return load_denoiser(path, train_cmd=cmd)
