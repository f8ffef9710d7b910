"""Exception types of iqaguard.

Every error raised at a public boundary is an :class:`IqaguardError` so callers can catch
the whole family; each message names the offending argument/path and the fix.
"""
from __future__ import annotations


class IqaguardError(Exception):
    """Base class of every iqaguard error."""


class InputError(IqaguardError, ValueError):
    """An argument has the wrong shape, range, dtype or value."""


class UnknownNameError(IqaguardError, KeyError):
    """A registry lookup used a name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ImageFileError(IqaguardError, OSError):
    """An image file is missing, unreadable or corrupt."""


class MissingWeightsError(IqaguardError, FileNotFoundError):
    """A model's weight file is not available offline."""


class DatasetError(IqaguardError, ValueError):
    """A dataset root does not follow the expected release layout."""


class ScoreError(IqaguardError, ValueError):
    """A score cannot be computed (NaN inputs, degenerate bounds, mismatched lengths)."""


class MissingDependencyError(IqaguardError, ImportError):
    """An optional dependency (e.g. the ``pyiqa`` extra) is not installed."""
