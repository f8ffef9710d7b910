"""Training inside the package: one loop (:mod:`.loop`), checkpoints with the architecture in their
metadata (:mod:`.checkpoint`) and metric fine-tuning on MOS data (:mod:`.finetune`).

The builtin models (``scripts/train_builtin.py``), the denoisers, the FS-IQA heads and the
training-based defenses (:mod:`iqaguard.defenses.trained`) all optimise through :func:`fit`.
"""
from __future__ import annotations

from .checkpoint import read_checkpoint, restore, save_model, state_digest
from .finetune import MOSData, finetune, load_mos_data, mse_loss, network
from .loop import FitResult, fit, fit_epochs, fit_steps

__all__ = ["FitResult", "MOSData", "finetune", "fit", "fit_epochs", "fit_steps", "load_mos_data", "mse_loss",
           "network", "read_checkpoint", "restore", "save_model", "state_digest"]
