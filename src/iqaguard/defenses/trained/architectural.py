"""``robust-block``: Robustness as Architecture's architectural defense as a trained-metric recipe.

"Robustness as Architecture: Designing IQA Models to Withstand Adversarial Perturbations"
(§4, §5.1, §6.2): insert a RobustBlock (:mod:`.robust_block`) before the last convolutional
block, fine-tune, prune 10% of the filters (L2 for Linearity, PLS for KonCept in the paper) and
fine-tune again for five epochs to restore the correlation. Optional: replace the activations by
a smooth one (§7: ELU, SiLU or GELU, everywhere or only outside the pre-trained backbone).

Stages here: (1) the RobustBlock is inserted (new layers seeded by ``seed``) and the whole
network fine-tuned for ``epochs`` (a new block starts random: the first stage trains it with the
rest); (2) with ``prune`` set, :func:`.pruning.prune` removes ``share`` of the prunable filters
(PLS importance from ``prune_samples`` fixed training crops) and ``prune_epochs`` more epochs
follow. Every structural change is recorded (:mod:`iqaguard.architecture`), so the saved model
reloads with its architecture. ``position=None`` means before the last block; ``orth=None``
skips the block (pruning or activations alone, the paper's ablations; with ``prune=None`` too
it is a plain fine-tune, the baseline that separates the fine-tune's effect from the defense's).

Presets: 0 Cayley + L2 pruning (the paper's method), 1 AOC + L2, 2 AOL + L2 (Table 3's
orthogonalisations).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, List

import torch

from ...errors import InputError
from ...metrics.base import Metric
from ...registry import DEFENSES, EDITS
from ...training.finetune import MOSData, crops, network
from .activations import replace_activations
from .base import TrainedMetric
from .pruning import apply_pruning, prune
from .robust_block import insert_robust_block

PRESETS: List[Dict[str, Any]] = [{"orth": o, "prune": "l2"} for o in ("cayley", "aoc", "aol")]


@EDITS.register("robust-block")
def _replay_block(module: torch.nn.Module, rec: Dict[str, Any]) -> None:
    insert_robust_block(module, rec["position"], rec["orth"], target=rec.get("target") or None)


@EDITS.register("prune")
def _replay_prune(module: torch.nn.Module, rec: Dict[str, Any]) -> None:
    apply_pruning(module, rec["kept"])


@EDITS.register("activation")
def _replay_activation(module: torch.nn.Module, rec: Dict[str, Any]) -> None:
    replace_activations(module, rec["kind"], rec["scope"], rec.get("modules"))


@DEFENSES.register("robust-block")
class RobustBlockDefense(TrainedMetric):
    """RobustBlock before the last block, fine-tune, 10% pruning, fine-tune (Robustness as Architecture §4).

    Recipe arguments: ``position`` (1-based block index, ``None``: before the last), ``orth``
    (``"cayley"``, ``"aoc"``, ``"aol"`` or ``None``), ``prune`` (``"l1"``, ``"l2"``, ``"pls"`` or
    ``None``), ``share`` (0.1), ``prune_samples`` (200, PLS), ``prune_epochs`` (5),
    ``activation`` (``None``, ``"elu"``, ``"silu"``, ``"gelu"``), ``activation_scope``
    (``"full"`` or ``"partial"``). Training and data arguments: :class:`TrainedMetric`.
    """

    presets: ClassVar[List[Dict[str, Any]]] = PRESETS
    recipe_defaults: ClassVar[Dict[str, Any]] = {
        "position": None, "orth": "cayley", "prune": "l2", "share": 0.1, "prune_samples": 200,
        "prune_epochs": 5, "activation": None, "activation_scope": "partial"}

    def check_recipe(self, recipe: Dict[str, Any]) -> None:
        if recipe["orth"] not in (None, "cayley", "aoc", "aol"):
            raise InputError(f"orth: expected 'cayley', 'aoc', 'aol' or None, got {recipe['orth']!r}")
        if recipe["prune"] not in (None, "l1", "l2", "pls"):
            raise InputError(f"prune: expected 'l1', 'l2', 'pls' or None, got {recipe['prune']!r}")
        if recipe["activation"] not in (None, "elu", "silu", "gelu"):
            raise InputError(f"activation: expected 'elu', 'silu', 'gelu' or None, got {recipe['activation']!r}")

    def prepare(self, metric: Metric, train: MOSData) -> List[Dict[str, Any]]:
        net, r, edits = network(metric), self.recipe, []
        if r["orth"] is not None:
            edits.append(insert_robust_block(net, r["position"], r["orth"]))  # None: before the last block
        if r["activation"] is not None:
            edits.append(replace_activations(net, r["activation"], r["activation_scope"]))
        net.to(metric.device)
        return edits

    def stages(self, metric: Metric, train: MOSData, val: MOSData, run: Callable[..., Dict[str, Any]]) -> List[Dict[str, Any]]:
        r = self.recipe
        # the first fine-tune trains a new block or activation; with neither and no pruning it is the
        # plain fine-tune of the ablations' "+FT" baseline
        logs = [run()] if (r["orth"] is not None or r["activation"] is not None or r["prune"] is None) else []
        if r["prune"] is not None:
            net = network(metric)
            g = torch.Generator().manual_seed(self.fit_args["seed"] + 3)
            idx = torch.randint(0, len(train), (int(r["prune_samples"]),), generator=g).tolist()
            x, _ = crops(train, idx, self.fit_args["patch"], g, flip=False)
            dev = metric.device
            self.edits.append(prune(net, r["prune"], float(r["share"]), samples=x.to(dev),
                                    targets=train.y[idx].to(dev), forward=self._forward(metric)))
            net.to(dev)
            logs.append(run(epochs=r["prune_epochs"]))
        return logs

    @staticmethod
    def _forward(metric: Metric) -> Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]:
        """How pruning runs the network on a batch of crops: an FR metric's backbone sees the
        distorted crops (a metric without one is run against the crops themselves)."""
        if metric.kind == "fr":
            return lambda net, xb: net.backbone(xb) if hasattr(net, "backbone") else metric.score(xb, xb)
        return lambda net, xb: metric.score(xb)
