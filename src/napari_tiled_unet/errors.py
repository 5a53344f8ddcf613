"""The package's error types: one base, so every face can tell a user's problem from a bug.

:class:`TiledUNetError` is the base of every error this package raises on purpose.
:class:`UserInputError` (also a ``ValueError``, so existing ``except ValueError`` code keeps
working) marks problems the user can fix: a wrong layer, axis, file, option or value. The
command line prints those as one line and keeps the traceback for anything else; the napari
widgets show them as notifications.
"""

from __future__ import annotations


class TiledUNetError(Exception):
    """Base of the errors napari-tiled-unet raises on purpose."""


class UserInputError(TiledUNetError, ValueError):
    """Input the user can fix (a shape, an axis, a file, an option); the message says how."""


class TrainingDiverged(TiledUNetError, FloatingPointError):
    """The loss became NaN or infinite; the message says which settings to lower."""
