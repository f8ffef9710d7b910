"""Replacement of ReLU-type activations by smooth ones (ELU, SiLU, GELU).

"Robustness as Architecture: Designing IQA Models to Withstand Adversarial Perturbations"
(§2.3 after Xie et al., "Smooth adversarial training"; §7 "Discussion") compares two
strategies: *full* replacement substitutes every ReLU activation of the model, *partial*
replacement only those in layers that were not pre-trained (for builtin-nr: the head, outside
the pre-trained ``backbone``). Full replacement raised robustness but could lower correlation
with MOS; partial replacement kept correlation. Either is followed by fine-tuning.

Only activation *modules* are replaced (``nn.ReLU``, ``nn.LeakyReLU``, ``nn.ReLU6`` and their
subclasses); functional calls inside a ``forward`` (``F.relu(x)``) cannot be seen from outside
and stay. Learned activations (``nn.PReLU``) are not ReLU-type modules here and stay as well.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

from torch import nn

from ...errors import InputError, UnknownNameError

#: Replacement factories (parameters as in the papers; never in place: SiLU's and GELU's
#: backward needs their input, and the attacks differentiate through the model).
KINDS: Dict[str, Callable[[], nn.Module]] = {
    # Clevert et al. 2016, "Fast and accurate deep network learning by exponential linear units", §3
    "elu": lambda: nn.ELU(alpha=1.0),
    # Elfwing et al. 2018, "Sigmoid-weighted linear units for neural network function approximation
    # in reinforcement learning": z * sigmoid(z)
    "silu": nn.SiLU,
    # Hendrycks & Gimpel 2016, "Gaussian error linear units (GELUs)", §2: x * Phi(x), exact erf form
    "gelu": nn.GELU,
}
SCOPES = ("full", "partial")
RELU_TYPES = (nn.ReLU, nn.LeakyReLU, nn.ReLU6)


def _under(path: str, prefix: str) -> bool:
    return prefix == "" or path == prefix or path.startswith(prefix + ".")


def default_partial_modules(model: nn.Module) -> List[str]:
    """The not-pre-trained part of ``model``: every module outside its ``backbone`` submodule.

    For builtin-nr (``Metric.net`` an :class:`~iqaguard.metrics.builtin.NRNet`) this is
    ``["net.head"]``: the siblings of every module on the path to the first submodule named
    ``backbone``, i.e. the dotted paths that cover everything but the backbone.

    Raises:
        InputError: the model has no submodule named ``backbone``.
    """
    path = next((p for p, _ in model.named_modules() if p.split(".")[-1] == "backbone"), None)
    if path is None:
        raise InputError(f"modules: {type(model).__name__} has no 'backbone' submodule, so the not-pre-trained "
                         "layers are unknown; pass modules=[dotted paths] for scope='partial'")
    keep, parent, prefix = [], model, ""
    for part in path.split("."):
        keep += [prefix + name for name, _ in parent.named_children() if name != part]
        parent, prefix = getattr(parent, part), prefix + part + "."
    return keep


def replace_activations(model: nn.Module, kind: str, scope: str = "full",
                        modules: Optional[Sequence[str]] = None) -> dict:
    """Replace ReLU-type activation modules of ``model`` by a smooth ``kind``, in place.

    Shapes and parameters are unchanged (the activations are parameter-free), so a state_dict
    saved after fine-tuning loads into a fresh model on which the same call was replayed.

    Args:
        model: any ``nn.Module`` (a :class:`~iqaguard.metrics.Metric` or its ``.net``).
        kind: ``"elu"``, ``"silu"`` or ``"gelu"``.
        scope: ``"full"`` (every ReLU-type module; ``modules`` ``None`` or empty) or ``"partial"``
            (only inside ``modules``).
        modules: dotted submodule paths for ``"partial"`` (default :func:`default_partial_modules`:
            everything outside the pre-trained ``backbone``).

    Returns:
        JSON-able record ``{"op": "activation", "kind", "scope", "modules": [paths searched]
        ([] for "full"), "replaced": [dotted paths of the replaced modules]}``; the same call on a
        freshly built model replays it.

    Raises:
        UnknownNameError: unknown ``kind``.
        InputError: unknown ``scope``, a path in ``modules`` that does not exist, or nothing to replace.
    """
    if kind not in KINDS:
        raise UnknownNameError(f"kind: unknown smooth activation {kind!r}; use one of {', '.join(KINDS)}")
    if scope not in SCOPES:
        raise InputError(f"scope: must be 'full' or 'partial', got {scope!r}")
    if scope == "full":
        if modules:
            raise InputError("modules: only scope='partial' takes modules; drop modules= or use scope='partial'")
        prefixes: List[str] = [""]
    else:
        prefixes = list(default_partial_modules(model) if modules is None else modules)
        for p in prefixes:
            try:
                model.get_submodule(p)
            except AttributeError:
                raise InputError(f"modules: {p!r} is not a submodule path of {type(model).__name__}; "
                                 "use dotted names from model.named_modules()") from None
    targets = [p for p, m in model.named_modules(remove_duplicate=False)
               if p and isinstance(m, RELU_TYPES) and any(_under(p, q) for q in prefixes)]
    if not targets:
        raise InputError(f"model: no nn.ReLU/LeakyReLU/ReLU6 module in scope {scope!r} ({prefixes}); "
                         "nothing to replace: check modules= or use scope='full'")
    for path in targets:
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent), name, KINDS[kind]())
    return {"op": "activation", "kind": kind, "scope": scope,
            "modules": [] if scope == "full" else prefixes, "replaced": targets}
