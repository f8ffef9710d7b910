"""Adversarial training of an IQA metric with MOS adjustment.

Chistyakova et al., "Increasing the robustness of image quality assessment models through
adversarial training", Technologies 12:220, 2024; as evaluated by Guardians of Image Quality
(appendix A.3.5, eq. 10, Table 3): fine-tune on clean and attacked images 1:1, the attacked
ones made by a 2-step APGD (Croce & Hein 2020) that *increases the model's loss*, with the MOS of
an attacked image adjusted to ``y' = y - M(x, x')``.

``M``: ``"lpips"`` (LPIPS through the piq extra; when its weights or the extra are missing the
builtin full-reference model ``builtin-fr`` stands in, and the log records which one ran) or
``"ssim"`` (``1 - SSIM``). In the metric's units the adjusted target is ``t - a · M`` with ``a``
the slope of the MOS -> score line (:func:`iqaguard.training.finetune.units_line`), so a
lower-better metric's target moves the right way. Presets (Table 3's rows, weakest first within
each ``M``): APGD-LPIPS-2/4/8, APGD-SSIM-2/4/8 (ε in 1/255).
"""
from __future__ import annotations

import sys
from typing import Any, ClassVar, Dict, List, Optional

import torch

from ...errors import IqaguardError, InputError
from ...metrics.base import Metric
from ...registry import DEFENSES
from ...training.finetune import MOSData, mse_loss
from .base import TrainedMetric

PRESETS: List[Dict[str, Any]] = [{"fr": fr, "eps": e / 255} for fr in ("lpips", "ssim") for e in (2, 4, 8)]


def adjustment_metric(name: str, allow_download: Optional[bool] = None) -> Metric:
    """``M`` of eq. 10 as a distance (0 for identical images): LPIPS, its builtin stand-in, or 1 - SSIM.

    LPIPS goes through the piq adapter, which downloads nothing unless ``allow_download`` (or
    ``$IQAGUARD_ALLOW_DOWNLOAD=1`` when it is ``None``); offline, without its weight file, the
    adapter's one-line reason is printed and builtin-fr stands in.
    """
    from ... import metrics

    if name == "ssim":
        return metrics.create("ssim")
    try:
        return metrics.create("piq:lpips", allow_download=allow_download)
    except IqaguardError as e:
        print(f"adv-training: LPIPS unavailable ({str(e).splitlines()[0]}); using builtin-fr for the MOS adjustment",
              file=sys.stderr, flush=True)
        return metrics.create("builtin-fr")


def distance(m: Metric, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """``M(x, x')`` ``[B]``: the FR metric's distance (``1 - s`` for a higher-better similarity)."""
    with torch.no_grad():
        s = m(x_adv, x)
    return s if m.lower_better else 1.0 - s


@DEFENSES.register("adv-training")
class AdvTraining(TrainedMetric):
    """Adversarial fine-tuning on clean + 2-step-APGD images 1:1, MOS adjusted by y - M(x, x') (Chistyakova et al. 2024).

    Recipe arguments: ``eps`` (APGD's L∞ budget, default 4/255), ``fr`` (``"lpips"`` or
    ``"ssim"``, default ``"ssim"``), ``steps`` (APGD steps, default 2), ``allow_download`` (let
    LPIPS's weights be downloaded; default ``None``: ``$IQAGUARD_ALLOW_DOWNLOAD``, else offline). Training and data
    arguments: :class:`TrainedMetric`.
    """

    presets: ClassVar[List[Dict[str, Any]]] = PRESETS
    recipe_defaults: ClassVar[Dict[str, Any]] = {"eps": 4 / 255, "fr": "ssim", "steps": 2, "allow_download": None}

    def check_recipe(self, recipe: Dict[str, Any]) -> None:
        if recipe["fr"] not in ("lpips", "ssim"):
            raise InputError(f"fr: expected 'lpips' or 'ssim', got {recipe['fr']!r}")
        eps, steps = recipe["eps"], recipe["steps"]
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= 64 / 255:
            raise InputError(f"eps: expected a number in (0, 64/255], got {eps!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps: expected an integer >= 1, got {steps!r}")

    def resolve(self, recipe: Dict[str, Any]) -> Dict[str, Any]:
        """``M`` is resolved before the cache key: a variant adjusted by the builtin-fr stand-in is
        never reused once LPIPS's weights are installed (``adjustment`` is part of the key;
        ``allow_download`` is not, it only decides whether LPIPS may be fetched)."""
        recipe = dict(recipe)
        m = adjustment_metric(recipe["fr"], recipe.pop("allow_download"))
        # a plain dict: the helpers are not submodules (not saved, not moved with the trained metric)
        self.aux = {"m": m}
        recipe["adjustment"] = m.name
        return recipe

    def prepare(self, metric: Metric, train: MOSData) -> List[Dict[str, Any]]:
        from ...attacks.apgd import APGD

        self.aux.update(m=self.aux["m"].to(metric.device),
                        attack=APGD(eps=float(self.recipe["eps"]), steps=int(self.recipe["steps"])),
                        generator=torch.Generator().manual_seed(self.fit_args["seed"] + 7))
        return []

    def notes(self) -> Dict[str, Any]:
        return {"adjustment_metric": self.aux["m"].name}

    def loss(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        d = max(metric.bounds.diam, 1e-12)

        def objective(m: Metric, xa: torch.Tensor, r: Optional[torch.Tensor]) -> torch.Tensor:
            return ((m.score(xa, r) - target) / d) ** 2  # the attack raises the model's loss

        attack = self.aux["attack"]
        attack.objective = objective
        x_adv = attack(metric, x, ref=ref, generator=self.aux["generator"])
        adjusted = target - self.line[0] * distance(self.aux["m"], x, x_adv).to(target)
        return 0.5 * (mse_loss(metric, x, ref, target) + mse_loss(metric, x_adv, ref, adjusted))
