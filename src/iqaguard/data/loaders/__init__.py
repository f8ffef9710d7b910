"""Loaders for real IQA datasets in their official release layouts (see docs/datasets.md).

Importing this package registers ``koniq10k``, ``kadid10k``, ``agiqa3k``, ``nips2017``,
``div2k`` and ``folder`` in :data:`iqaguard.registry.DATASETS`.
"""
from __future__ import annotations

from .agiqa import AGIQA3K
from .div2k import DIV2K
from .folder import ImageFolder
from .kadid import DISTORTIONS as KADID_DISTORTIONS
from .kadid import KADID10k
from .koniq import KonIQ10k
from .nips2017 import NIPS2017

__all__ = ["AGIQA3K", "DIV2K", "ImageFolder", "KADID10k", "KADID_DISTORTIONS", "KonIQ10k", "NIPS2017"]
