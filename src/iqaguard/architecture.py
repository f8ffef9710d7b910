"""A network's architecture as data: its constructor config plus an ordered list of edits.

A trained model whose structure differs from its constructor's default (a RobustBlock inserted, filters
pruned, activations replaced: :mod:`iqaguard.defenses.trained`) records every structural change
as a JSON-able dict ``{"op": <edit name>, ...}``. Saving stores the list in the safetensors metadata
(:func:`iqaguard.training.checkpoint.save_model`); loading builds the network from its config,
:func:`apply_edits` replays the list (the same structure and state-dict keys, fresh weights) and
the saved state dict is then loaded strictly. An edit module registers its replay function with
``@EDITS.register(<op>)`` (``fn(module, record) -> None``); ``import iqaguard`` imports them all.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from torch import nn

from .errors import InputError, UnknownNameError
from .registry import EDITS


def apply_edits(module: nn.Module, edits: Sequence[Dict[str, Any]]) -> None:
    """Replay the structural ``edits`` on ``module`` in order (in place).

    Raises:
        InputError: an edit that is not a dict with an ``op``.
        UnknownNameError: an ``op`` no imported module registers (names the known ones).
    """
    for i, rec in enumerate(edits):
        if not isinstance(rec, dict) or "op" not in rec:
            raise InputError(f"architecture edit {i}: expected a dict with an 'op', got {rec!r}; the weights "
                             "file's metadata is damaged: save the model again")
        try:
            replay = EDITS.get(rec["op"])
        except UnknownNameError as e:
            raise UnknownNameError(f"architecture edit {i}: {e.args[0]}") from None
        replay(module, rec)


def edits_of(config: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The edit list of a saved config (``[]`` when it has none)."""
    edits = config.get("edits", [])
    if not isinstance(edits, list):
        raise InputError(f"architecture edits: expected a list, got {type(edits).__name__}; the weights file's "
                         "metadata is damaged: save the model again")
    return edits
