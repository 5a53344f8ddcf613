"""Axis letters and their names: the constants, user and metadata strings, and :class:`AxesError`.

See :mod:`napari_tiled_unet.axes` for what a layout is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_tiled_unet.errors import UserInputError

#: The axis letters, in canonical (ImageJ hyperstack) order.
AXES = "TZCYX"
#: Letter of an axis whose meaning is unknown (in hints, never in a layout).
UNKNOWN = "?"
#: What each letter means, for messages.
AXIS_NAMES = {"T": "time", "Z": "depth", "C": "channel", "Y": "height", "X": "width"}
#: tifffile's series axis letters that have a meaning here (``S``: samples, e.g. RGB).
TIFF_LETTERS = {"T": "T", "Z": "Z", "C": "C", "S": "C", "Y": "Y", "X": "X"}
#: napari ``axis_labels`` (lower-cased) that name an axis.
LABEL_NAMES = {
    "t": "T",
    "time": "T",
    "z": "Z",
    "depth": "Z",
    "c": "C",
    "channel": "C",
    "channels": "C",
    "y": "Y",
    "x": "X",
}
#: A bare array's last axis this short (or shorter) is read as channels (RGB(A), ...).
MAX_CHANNELS_LAST = 4


class AxesError(UserInputError):
    """An axis layout that is invalid, does not suit the model, or is ambiguous.

    Attributes
    ----------
    readings : list of (str, str or None)
        Every layout considered and why it does not fit (None: it fits).
    """

    def __init__(self, message: str, readings: Sequence[tuple[str, str | None]] = ()):
        super().__init__(message)
        self.readings = list(readings)


# ----------------------------------------------------------------------------------------------
# Layout strings and hints


def parse_axes(axes: str, ndim: int | None = None, *, name: str = "image") -> str:
    """Validate a user's layout string; return it upper-cased.

    Parameters
    ----------
    axes : str
        E.g. ``"TZCYX"``, ``"yxc"``: letters T, Z, C, Y, X, each at most once, Y and X
        required.
    ndim : int, optional
        The image's number of axes, which the string must match.
    name : str
        How to call the image in the error message.

    Raises
    ------
    AxesError
        Naming the problem and the letters allowed.
    """
    if not isinstance(axes, str):
        raise AxesError(f"axes must be a string such as 'TZCYX', got {type(axes).__name__}")
    letters = axes.strip().upper()
    rule = (
        "use the letters T (time), Z (depth), C (channel), Y (height) and X (width), "
        "each at most once, one per axis, Y and X included"
    )
    problem = None
    bad = sorted({a for a in letters if a not in AXES})
    if bad:
        problem = f"unknown letter(s) {', '.join(bad)}"
    elif len(set(letters)) != len(letters):
        repeated = sorted({a for a in letters if letters.count(a) > 1})
        problem = f"{', '.join(repeated)} given more than once"
    elif "Y" not in letters or "X" not in letters:
        problem = "Y and X are required"
    elif ndim is not None and len(letters) != ndim:
        problem = f"{len(letters)} letters for an image of {ndim} axes"
    if problem:
        raise AxesError(f"axes {axes!r} for {name}: {problem}; {rule}")
    return letters


def axes_from_tiff(letters: str) -> str:
    """tifffile series axes as a hint: ``S`` becomes ``C``, letters without a meaning ``?``.

    ``"YXS"`` (RGB) gives ``"YXC"``, ``"QYX"`` gives ``"?YX"``, ``"TZCYX"`` stays.
    """
    out: list[str] = []
    for letter in str(letters).upper():
        mapped = TIFF_LETTERS.get(letter, UNKNOWN)
        out.append(UNKNOWN if mapped in out else mapped)
    return "".join(out)


def axes_from_layer(ndim: int, axis_labels: Sequence[Any] | None = None, rgb: bool = False) -> str:
    """A napari layer's axes as a hint (``?`` where the labels say nothing).

    Parameters
    ----------
    ndim : int
        Axes of the layer's data (for an RGB layer, its ``ndim`` + 1).
    axis_labels : sequence, optional
        The layer's ``axis_labels``: ``"t"``/``"time"``, ``"z"``/``"depth"``,
        ``"c"``/``"channel"``, ``"y"``, ``"x"`` (any case) name an axis; napari's default
        labels (``"-2"``, ``"0"``, ...) do not. For an RGB layer they cover the axes before
        the colour axis.
    rgb : bool
        The layer is RGB(A): its last data axis is ``C``.
    """
    lead = ndim - 1 if rgb else ndim
    labels = list(axis_labels) if axis_labels is not None else []
    if len(labels) == ndim and rgb:
        labels = labels[:lead]
    if len(labels) != lead:
        labels = [None] * lead
    out: list[str] = []
    for label in labels:
        mapped = LABEL_NAMES.get(str(label).strip().lower(), UNKNOWN) if label is not None else "?"
        out.append(UNKNOWN if mapped in out or (rgb and mapped == "C") else mapped)
    if rgb:
        out.append("C")
    return "".join(out)


def parse_channels(text: str | None) -> list[int] | None:
    """``"2, 0"`` → ``[2, 0]``; empty or None → None (all channels).

    Raises
    ------
    ValueError
        If a part is not a whole number, saying what is expected.
    """
    if text is None or not text.strip():
        return None
    try:
        return [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise UserInputError(
            f"channels must be channel numbers separated by commas, e.g. 0 or 2,0,1; got {text!r}"
        ) from None
