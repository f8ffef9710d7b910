"""Checkpoints: a trained network in one safetensors file with its architecture in the metadata.

The metadata's ``config`` JSON holds the constructor config (a builtin model's ``widths`` and
``use_mscn``) and ``edits``, the ordered structural changes since construction
(:mod:`iqaguard.architecture`), plus whatever the caller records (recipe, data, log). Loading
builds the network, replays the edits and loads the state dict strictly: a file saved from a
builtin model with a RobustBlock or pruned filters loads with
``iqaguard.metrics.create("builtin-nr", weights=path)``, and :func:`restore` loads any saved
variant into a copy of its base metric.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..architecture import apply_edits, edits_of
from ..errors import InputError, MissingWeightsError
from ..metrics.base import Metric


def save_model(module: nn.Module, path: Path, config: Dict[str, Any], **metadata: str) -> Path:
    """Write ``module``'s state dict and ``config`` (JSON in the metadata, plus any string
    ``metadata``) to ``path`` atomically (a temporary file renamed into place: an interrupted save
    leaves no half-written file)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    tmp = path.with_name(path.name + ".part")
    save_file(state, str(tmp), metadata={"config": json.dumps(config, sort_keys=True, default=str), **metadata})
    tmp.replace(path)
    return path


def read_checkpoint(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``(state_dict, config)`` of a file written by :func:`save_model`.

    Raises:
        MissingWeightsError: no such file.
        InputError: not a safetensors file with a JSON config.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"trained model {path} not found: train it again (the defense retrains on creation)")
    try:
        with safe_open(str(path), framework="pt") as f:
            config = json.loads((f.metadata() or {}).get("config", "{}"))
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable iqaguard checkpoint ({e}); delete it to retrain") from None
    return state, config


def load_into(module: nn.Module, state: Dict[str, torch.Tensor], config: Dict[str, Any], origin: str) -> None:
    """Replay ``config``'s edits on ``module`` and load ``state`` strictly (one InputError line
    naming ``origin`` when the keys or shapes do not match)."""
    apply_edits(module, edits_of(config))
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(f"{origin}: the saved weights do not fit the architecture ({first}); delete the file to "
                         "retrain") from None


def restore(base: Metric, path: Path) -> Tuple[Metric, Dict[str, Any]]:
    """``(a copy of base with the architecture and weights saved in path, the saved config)``: the
    file of :func:`save_model` of :func:`iqaguard.training.finetune.network`, read once; eval mode."""
    from .finetune import network

    state, config = read_checkpoint(path)
    metric = copy.deepcopy(base)
    load_into(network(metric), state, config, str(path))
    return metric.eval(), config


def state_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, shapes, dtypes and values): two modules with
    equal digests compute the same function (the cache key of a trained variant's base)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
