"""The trained-metric defense kind: a recipe that turns a metric into a new, fine-tuned metric.

``iqaguard.defenses.create("nt", metric=m)`` (or ``"adv-training"``, ``"robust-block"``) returns a
:class:`TrainedMetric`, itself a :class:`~iqaguard.metrics.base.Metric` with the base metric's kind,
direction and bounds. The first creation trains it (:func:`iqaguard.training.finetune.finetune`
on ``dataset``'s train split, validation split logged) and saves it under
``$IQAGUARD_CACHE/trained/<recipe>-<key>.safetensors`` with its architecture and recipe in the
metadata (:mod:`iqaguard.training.checkpoint`); ``key`` hashes the base metric (its name and the
digest of its weights), the data, the recipe's parameters and the seed, so every later creation
with the same inputs (a benchmark worker, a resumed run) loads that file instead of training.

Attacks on a trained metric are white-box on the new weights (the benchmark's adaptive mode);
the non-adaptive mode scores the trained metric on images attacked on the base metric.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import torch

from ...errors import InputError
from ...metrics.base import Metric
from ...training import checkpoint
from ...training.finetune import MOSData, correlations, finetune, load_mos_data, mse_loss, network, units_line
from ..base import preset_entry

#: bump when a change of the training code changes what a recipe produces (invalidates caches)
TRAINING_VERSION = 2


def cache_root() -> Path:
    """``$IQAGUARD_CACHE/trained``, else ``~/.cache/iqaguard/trained``."""
    base = os.environ.get("IQAGUARD_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "iqaguard") / "trained"


class TrainedMetric(Metric):
    """A metric fine-tuned by a recipe, trained once and cached (module docstring); subclasses define the recipe.

    Args:
        metric: the base metric (not changed: the recipe trains a copy).
        preset: index into the class's ``presets``; explicit keyword arguments override it.
        dataset: a registered dataset with MOS and ``train``/``val`` splits.
        dataset_kwargs: its extra arguments.
        images, val_images: training and validation subset sizes (seeded random subsets).
        epochs: fine-tuning epochs (``ceil(images / batch)`` steps each).
        batch, patch, lr: crops per step, crop side, AdamW learning rate (cosine decay).
        seed: seeds the subsets, the crops, new layers and attacks.
        cache: load / save the trained model under :func:`cache_root` (``False``: always train,
            save nothing).
        progress: progress lines with ETA on stderr while training.
        **recipe: the recipe's own parameters (see the subclass).
    """

    presets: ClassVar[List[Dict[str, Any]]] = [{}]
    #: deterministic (no EOT needed) and attacked through its own exact gradients
    randomized: ClassVar[bool] = False
    differentiable: ClassVar[bool] = True
    #: the recipe's parameters and their defaults
    recipe_defaults: ClassVar[Dict[str, Any]] = {}

    def __init__(self, metric: Metric, preset: Optional[int] = None, *, dataset: str = "builtin-kadid",
                 dataset_kwargs: Optional[Dict[str, Any]] = None, images: int = 400, val_images: int = 100,
                 epochs: float = 5, batch: int = 8, patch: int = 128, lr: float = 5e-5, seed: int = 0,
                 cache: bool = True, progress: bool = True, **recipe: Any) -> None:
        super().__init__()
        if not isinstance(metric, Metric):
            raise InputError(f"metric: expected an iqaguard Metric (iqaguard.metrics.create(...)), got "
                             f"{type(metric).__name__}")
        unknown = set(recipe) - set(self.recipe_defaults)
        if unknown:
            raise InputError(f"unknown argument(s) {sorted(unknown)} for defense {self.registry_name!r}; recipe "
                             f"arguments: {sorted(self.recipe_defaults)}; training arguments: dataset, dataset_kwargs, "
                             "images, val_images, epochs, batch, patch, lr, seed, cache, progress")
        self.recipe = {**self.recipe_defaults, **preset_entry(self.presets, preset), **recipe}
        self.check_recipe(self.recipe)
        self.recipe = self.resolve(self.recipe)
        for k, v in (("images", images), ("val_images", val_images), ("batch", batch), ("patch", patch)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if "images" in k else 1):
                raise InputError(f"{k}: expected an integer >= {2 if 'images' in k else 1}, got {v!r}")
        if not (isinstance(epochs, (int, float)) and epochs > 0) or not (isinstance(lr, float) and lr > 0):
            raise InputError(f"epochs and lr must be positive numbers, got epochs={epochs!r}, lr={lr!r}")
        self.preset = preset
        self.data_args = {"dataset": dataset, "dataset_kwargs": dataset_kwargs or {}, "images": images,
                          "val_images": val_images}
        self.fit_args = {"epochs": epochs, "batch": batch, "patch": patch, "lr": lr, "seed": seed}
        self.base_name = metric.name
        self.kind, self.lower_better, self.bounds = metric.kind, metric.lower_better, metric.bounds
        self.min_size = metric.min_size
        self.name = f"{metric.name}+{self.registry_name}"
        self.key = self.cache_key(metric)
        self.path = cache_root() / f"{self.registry_name}-{self.key}.safetensors"
        self.progress = progress
        if cache and self.path.is_file():
            self.inner, config = checkpoint.restore(metric, self.path)
            self.log = config.get("trained", {})
        else:
            self.inner, self.log = self.run_recipe(metric)
            if cache:
                self.save(self.path)
        for p in self.inner.parameters():
            p.requires_grad_(False)
        self.eval()

    # ------------------------------------------------------------------ recipe hooks
    def check_recipe(self, recipe: Dict[str, Any]) -> None:
        """Validate the recipe's parameters (one InputError line); subclasses override."""

    def resolve(self, recipe: Dict[str, Any]) -> Dict[str, Any]:
        """The recipe as the cache key should see it, once checked (default: unchanged); a recipe
        whose result depends on what is installed records that here."""
        return recipe

    def prepare(self, metric: Metric, train: MOSData) -> List[Dict[str, Any]]:
        """Structural edits before fine-tuning; returns their records (default: none)."""
        return []

    def loss(self, metric: Metric, x: torch.Tensor, ref: Optional[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """The training loss on one batch (default: the squared error in units of the score range)."""
        return mse_loss(metric, x, ref, target)

    def notes(self) -> Dict[str, Any]:
        """What the recipe records in the log after training (default: nothing)."""
        return {}

    def stages(self, metric: Metric, train: MOSData, val: MOSData, run) -> List[Dict[str, Any]]:
        """The fine-tuning stages; the default is one ``run()`` with :meth:`loss`. Returns the logs
        (a recipe that prunes after a first fine-tune runs two)."""
        return [run()]

    # ------------------------------------------------------------------ training and caching
    @property
    def params(self) -> Dict[str, Any]:
        """Recipe, data and fitting parameters (what the cache key hashes, stored with benchmark rows)."""
        return {"recipe": self.registry_name, **self.recipe, **self.data_args, **self.fit_args}

    def cache_key(self, metric: Metric) -> str:
        blob = json.dumps({"metric": metric.name, "weights": checkpoint.state_digest(metric),
                           "params": self.params, "version": TRAINING_VERSION}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run_recipe(self, base: Metric) -> Tuple[Metric, Dict[str, Any]]:
        """Train a copy of ``base`` by the recipe; returns ``(trained metric, log)``."""
        seed = self.fit_args["seed"]
        if self.progress:
            print(f"training {self.name} (recipe {self.recipe}; cached as {self.path.name})", file=sys.stderr, flush=True)
        train, val = load_mos_data(self.data_args["dataset"], self.data_args["images"], self.data_args["val_images"],
                                   seed, base.kind == "fr", self.data_args["dataset_kwargs"], self.progress)
        metric = copy.deepcopy(base).eval()
        self.line = line = units_line(metric, train, self.fit_args["patch"], seed)  # the base metric's units
        before = correlations(metric, val)
        torch.manual_seed(seed)
        self.edits = list(self.prepare(metric, train))

        def run(**over: Any) -> Dict[str, Any]:
            args = {**self.fit_args, **over}
            return finetune(metric, train, val, loss_fn=self.loss, line=line, tag=self.name,
                            progress=self.progress, **args)[1]

        logs = self.stages(metric, train, val, run)
        log = {"val_before": before, "val_after": correlations(metric, val), "stages": logs,
               "train_seconds": round(sum(lg.get("seconds", 0.0) for lg in logs), 1), "edits": self.edits,
               "train_images": len(train), "val_images": len(val), **self.notes()}
        return metric.eval(), log

    def save(self, path: Path) -> Path:
        """Save the trained network with its architecture (the base's config plus the edits) and log."""
        base_cfg = dict(getattr(self.inner, "config", {}) or {})
        config = {**base_cfg, "edits": self.log.get("edits", []), "trained": {**self.log, "params": self.params,
                                                                              "base": self.base_name}}
        return checkpoint.save_model(network(self.inner), path, config)

    # ------------------------------------------------------------------ Metric
    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.inner.score(x, ref)

    def predict(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None, generator: Any = None) -> torch.Tensor:
        """Scores without autograd (the benchmark's call for metric-wrapping defenses)."""
        self.check_inputs(x, ref)
        with torch.no_grad():
            return self.score(x, ref)

    def extra_repr(self) -> str:
        return f"base={self.base_name!r}, recipe={self.recipe!r}, key={self.key!r}"
