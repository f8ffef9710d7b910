"""Data: image I/O, the builtin photographs, builtin-kadid, real-dataset loaders, sampling."""
from __future__ import annotations

from typing import Any, List

from ..registry import DATASETS
from .base import Dataset, Sample
from .io import IMAGE_EXTENSIONS, list_images, load_image, save_png
from . import builtin, kadid_builtin, loaders, sampling  # noqa: F401  (registration side effects)
from .sampling import cluster_subset, repeated_subsets


def create(name: str, **kwargs: Any) -> Dataset:
    """``create("builtin-kadid", split="test")``, ``create("koniq10k", root=...)``, ..."""
    return DATASETS.create(name, **kwargs)


def names() -> List[str]:
    return DATASETS.names()


__all__ = ["Dataset", "IMAGE_EXTENSIONS", "Sample", "cluster_subset", "create", "repeated_subsets", "list_images",
           "load_image", "names", "save_png"]
