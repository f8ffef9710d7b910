"""Training-based and architectural defenses: recipes that turn a metric into a new, trained metric
(:class:`.base.TrainedMetric`): ``adv-training`` (:mod:`.adv_training`), ``nt`` (:mod:`.nt`) and
``robust-block`` (:mod:`.architectural`: RobustBlock, pruning, smooth activations)."""
from __future__ import annotations

from . import adv_training, architectural, nt  # noqa: F401  (register the recipes and the architecture edits)
