"""The base of the neural purifications (FCN, MPRNet, Real-ESRGAN, DISCO, DiffPure).

A neural purification is an :class:`torch.nn.Module` and a :class:`~iqaguard.defenses.base.Purification`:

* it builds its network (:meth:`NeuralPurification.build_network`) from an architecture config:
  the class's ``arch`` defaults, updated by the ``config`` JSON in a safetensors file's metadata,
  or by what :meth:`NeuralPurification.infer_config` reads off an official checkpoint's keys;
* it loads weights from ``weights=`` (a user's file) or the shipped
  ``defenses/weights/<weights_name>.safetensors``: safetensors, or an official PyTorch
  checkpoint (``.pth`` / ``.pt``, read with ``torch.load(weights_only=True)``, never unpickling
  code); the common containers (``params_ema``, ``params``, ``state_dict``, ``model``) are unwrapped
  and a ``module.`` prefix dropped before :meth:`NeuralPurification.convert_state_dict` maps the
  official key layout to the package's; a missing file is one
  :class:`~iqaguard.errors.MissingWeightsError` line naming the file and the training command,
  a file of another layout (other keys, or tensors of other shapes) one
  :class:`~iqaguard.errors.InputError` line naming them;
* the network is frozen (``requires_grad=False``, eval mode): adaptive attacks differentiate
  with respect to the image only; ``.to(device)`` moves it and :meth:`apply` follows the input's
  device and dtype when they differ;
* loaded state dicts are cached per process by (file, size, mtime), so a benchmark worker that
  builds the same defense for many tasks reads its file once.
"""
from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple, Union

import torch
from torch import nn

from ...errors import InputError, MissingWeightsError
from ..base import Generators, Purification

#: where the shipped defense weights live (with their MODEL_CARD.md)
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: checkpoint containers unwrapped before the key conversion (Real-ESRGAN / BasicSR, MPRNet, FCN, DISCO / LIIF)
CONTAINERS = ("params_ema", "params", "state_dict", "model", "net", "sd")

_STATE_CACHE: Dict[Tuple[str, int, int], Tuple[Dict[str, torch.Tensor], Dict[str, Any]]] = {}


def read_state(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``(state_dict, config)`` of a safetensors or PyTorch checkpoint file (cached per process).

    ``config`` is the JSON ``config`` entry of a safetensors file's metadata (``{}`` otherwise).

    Raises:
        InputError: a file that is neither safetensors nor a tensor-only PyTorch checkpoint.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _STATE_CACHE:
        return _STATE_CACHE[key]
    config: Dict[str, Any] = {}
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"weights: {path} is not a readable safetensors file ({e}); "
                             f"re-download or re-train it") from None
        try:
            config = json.loads(meta.get("config", "{}"))
        except json.JSONDecodeError:
            raise InputError(f"weights: {path} has a corrupt 'config' metadata entry; re-save the file") from None
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # pickle/zip errors of every kind: one line naming the file
            raise InputError(f"weights: {path} is not a tensor-only PyTorch checkpoint "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                             f"pass a .safetensors file or the official .pth") from None
        state = unwrap(obj, path)
    _STATE_CACHE[key] = (state, config)
    return state, config


def unwrap(obj: Any, path: Path) -> Dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: containers unwrapped, ``module.`` prefixes dropped."""
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[c] for c in CONTAINERS if c in obj and isinstance(obj[c], dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"weights: {path} holds no state dict of tensors (looked inside {list(CONTAINERS)})")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def follow(module: nn.Module, t: torch.Tensor) -> None:
    """Move ``module`` to ``t``'s device and dtype when its parameters are elsewhere."""
    p = next(module.parameters(), None)
    if p is not None and (p.device != t.device or p.dtype != t.dtype):
        module.to(device=t.device, dtype=t.dtype)


def per_metric_file(prefix: str, metric_name: str, suffix: str = "") -> Path:
    """The shipped weights file of a network trained for one metric: ``<prefix>-<metric><suffix>.safetensors``
    in :data:`WEIGHTS_DIR` (characters other than letters, digits, ``-_.`` become ``_``)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in metric_name)
    return WEIGHTS_DIR / f"{prefix}-{safe}{suffix}.safetensors"


def load_frozen(path: Union[str, Path], build: Callable[[Dict[str, Any]], nn.Module], what: str,
                fix: str) -> nn.Module:
    """The network ``build(config)`` with ``path``'s weights (``config`` from its metadata), frozen, in eval mode.

    Raises:
        MissingWeightsError: no file; the message ends with ``fix`` (how to get one).
        InputError: a file whose tensors do not fit the network (one line).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingWeightsError(f"{what} weights not found: {p}. {fix}")
    state, config = read_state(p)
    net = build(config)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"weights: {p} is not a {what} state dict: {str(e).splitlines()[0]}") from None
    return net.requires_grad_(False).eval()


class NeuralPurification(nn.Module, Purification):
    """A purification whose work is done by a trained network (see the module docstring).

    Subclasses set ``weights_name`` (the shipped file's stem), ``train_command`` (named by the
    missing-weights error), ``arch`` (architecture defaults), implement :meth:`build_network` and
    :meth:`apply`, and may override :meth:`convert_state_dict` / :meth:`infer_config` for the
    official checkpoint layout. ``weights`` is always a parameter (``defaults`` must list it).
    """

    differentiable = True
    weights_name: ClassVar[str] = ""
    train_command: ClassVar[str] = ""
    arch: ClassVar[Dict[str, Any]] = {}

    def __init__(self, preset: Optional[int] = None, **kwargs: Any) -> None:
        nn.Module.__init__(self)
        Purification.__init__(self, preset, **kwargs)
        path = self.weights_path()
        if not path.is_file():
            raise MissingWeightsError(
                f"weights for defense {self.weights_name!r} not found: {path}. Train them with "
                f"`{self.train_command}` or pass weights=<file> (.safetensors, or the official .pth layout)"
            )
        state, config = read_state(path)
        state = self.convert_state_dict(dict(state))
        self.config = {**self.arch, **(config or self.infer_config(state))}
        self.network = self.build_network(self.config)
        try:
            missing, unexpected = self.network.load_state_dict(state, strict=False)
        except RuntimeError as e:  # the right keys with the wrong shapes: a config that does not fit the tensors
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            raise InputError(f"weights: {path} does not fit the {type(self).__name__} architecture {self.config}: "
                             f"{lines[1] if len(lines) > 1 else lines[0] if lines else e}") from None
        if missing or unexpected:
            raise InputError(
                f"weights: {path} does not match the {type(self).__name__} layout {self.config}: "
                f"missing {sorted(missing)[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {sorted(unexpected)[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        self.network.requires_grad_(False)
        self.eval()

    # ------------------------------------------------------------------ hooks
    @abc.abstractmethod
    def build_network(self, config: Dict[str, Any]) -> nn.Module:
        """The (uninitialised) network for architecture ``config``."""

    def convert_state_dict(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Map an official checkpoint's keys to :meth:`build_network`'s (identity by default)."""
        return state

    def infer_config(self, state: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        """Architecture config read off a checkpoint without metadata (``{}``: the ``arch`` defaults)."""
        return {}

    # ------------------------------------------------------------------ helpers
    def weights_path(self) -> Path:
        """The user's ``weights`` file, else the shipped one."""
        w: Union[None, str, Path] = self.params.get("weights")
        return Path(w).expanduser() if w is not None else WEIGHTS_DIR / f"{self.weights_name}.safetensors"

    def follow(self, x: torch.Tensor) -> None:
        """Move the network to ``x``'s device and dtype when they differ."""
        follow(self.network, x)

    def __call__(self, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:  # type: ignore[override]
        return Purification.__call__(self, x, generator)

    def __repr__(self) -> str:
        return Purification.__repr__(self)
