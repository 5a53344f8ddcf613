"""Reading what a labels array means, for the default label mode "auto".

A label image with one id per object (what the bundled sample ships, what most users have)
and a class map (0 = background, 1 = nuclei, 2 = ...) are both integer arrays; training one as
the other makes a useless model (179 "classes" from 179 nuclei). :func:`detect_label_mode`
tells them apart from the labels alone:

- many ids (more than :data:`SEMANTIC_MAX_CLASSES`), most of them one connected blob → instance;
- a few ids, each one connected blob (napari's "new label" per painted object) → instance;
- a few values, some of which form several separate regions → semantic;
- many values that mostly form several regions reads as a semantic map with more than a
  handful of classes: :func:`choose_label_mode` refuses it in auto mode (say which mode you
  mean) and warns when semantic is asked for explicitly.

Sparse labels (0 = not annotated) look like semantic ones and are never chosen automatically.

Cost: an array of up to :data:`DETECT_PIXELS` pixels is read whole. A larger one is read as
:data:`DETECT_PIXELS` worth of ``DETECT_BLOCK``-edge windows of its planes, chosen at random
with a fixed seed (so the reading is repeatable), which is constant work for an 8192² layer or a
terabyte zarr volume alike. Only where those windows hold no label at all (a few strokes in a
large, mostly unpainted layer) is the array scanned block by block for the labelled windows: that
reads it once, window by window, never whole, as the training scan does anyway. Connectivity is
judged within planes of the last two axes (8-connected), so ids of 3D objects or of tracked
objects in a movie count as one blob per plane.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_tiled_unet.errors import UserInputError

logger = logging.getLogger(__name__)

#: Most non-background classes a semantic reading may have: "a handful". Semantic maps in
#: microscopy hold 1-5 classes (foreground, boundary, nucleus / cytoplasm, a few cell types);
#: 8 leaves room for more while a mask of 9+ ids that are each one blob is far more likely
#: one id per object. Also the largest value a semantic map may hold without a warning
#: (values are class numbers: a 0/255 mask would train 256 classes).
SEMANTIC_MAX_CLASSES = 8
#: With more ids than :data:`SEMANTIC_MAX_CLASSES`, at least this share of them must be one
#: connected blob (per plane) to read as instance ids. Instance masks are ~100% single blobs
#: (an object cut in two by a crop edge or a thin gap is the exception); a class of a semantic
#: map with more than a handful of classes is most often several regions.
INSTANCE_SINGLE_SHARE = 0.5
#: Most pixels read to decide (a sample of larger arrays).
DETECT_PIXELS = 2**22
#: Edge (pixels along each of the last two axes) of the windows a larger array is sampled in.
DETECT_BLOCK = 1024
#: How auto-mode errors end: which mode to choose, in the Python and the command-line spelling.
SAY_THE_MODE = (
    "Say which mode the labels are in: label_mode='instance' (--mode instance) if each value "
    "is one object, 'semantic' if each value is a class, 'sparse' for painted strokes "
    "(0 = not annotated)"
)
#: The modes the labels can be read as.
READ_MODES = ("instance", "semantic")


@dataclass(frozen=True)
class LabelModeReading:
    """What :func:`detect_label_mode` made of a labels array.

    Attributes
    ----------
    mode : {"instance", "semantic"}
        How the labels read ("semantic" also for empty labels: nothing to tell from).
    n_values : int
        Distinct non-zero values found (in the sample, for large arrays).
    reason : str
        One line for the user, e.g. ``"179 ids, each one connected blob → instance"``.
    semantic_classes_warning : str or None
        Set when training these labels as semantic would give more than a handful
        (:data:`SEMANTIC_MAX_CLASSES`) of classes: what that would mean and what to do.
    single_share : float
        Share of the ids that form exactly one connected blob in each plane they appear in.
    max_value : int
        Largest value found (a semantic model gets ``max_value + 1`` classes).
    sampled : bool
        Whether only a sample of windows was read (the array exceeds :data:`DETECT_PIXELS`).
    """

    mode: str
    n_values: int
    reason: str
    semantic_classes_warning: str | None = None
    single_share: float = 0.0
    max_value: int = 0
    sampled: bool = False

    @property
    def empty(self) -> bool:
        """Whether no label (no value > 0) was found."""
        return self.n_values == 0

    @property
    def refused(self) -> bool:
        """Whether auto mode refuses the reading: a semantic map of more than a handful of
        classes (the user has to say which mode the labels are in)."""
        return self.mode == "semantic" and self.semantic_classes_warning is not None


def detect_label_mode(labels: Any) -> LabelModeReading:
    """Read whether ``labels`` hold instance ids or semantic classes.

    Parameters
    ----------
    labels : array-like of int
        Labels of any number of axes, Y and X last (numpy, memmap, zarr, dask, a napari
        Labels layer's data); arrays over :data:`DETECT_PIXELS` pixels are sampled (see the
        module docstring) and never converted whole.

    Returns
    -------
    LabelModeReading

    Raises
    ------
    UserInputError
        If ``labels`` do not hold integers.
    """
    dtype = np.dtype(labels.dtype)
    if dtype.kind not in "biu":
        raise UserInputError(f"labels must hold integers, got dtype {dtype}")
    shape = tuple(int(n) for n in labels.shape)
    windows, sampled = _sample_windows(labels, shape)
    ids_per_window, blobs_per_window = [], []
    for window in windows:
        ids, blobs = _blobs_per_id(window)
        ids_per_window.append(ids)
        blobs_per_window.append(blobs)
    ids = np.concatenate(ids_per_window) if ids_per_window else np.zeros(0, np.int64)
    blobs = np.concatenate(blobs_per_window) if blobs_per_window else np.zeros(0, np.int64)
    if not ids.size:
        where = " in the sampled windows" if sampled else ""
        return LabelModeReading("semantic", 0, f"no labels{where} (all 0): nothing painted yet")
    order = np.argsort(ids, kind="stable")
    ids, blobs = ids[order], blobs[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    values, most_blobs = ids[starts], np.maximum.reduceat(blobs, starts)
    return _reading(values, most_blobs, int(blobs.sum()), sampled)


def _reading(values: np.ndarray, most_blobs: np.ndarray, regions: int, sampled: bool):
    """The reading of the non-zero ``values`` found, each forming at most ``most_blobs``
    connected blobs in one plane, ``regions`` blobs in all."""
    n = len(values)
    top = int(values.max())
    single = float(np.mean(most_blobs == 1))
    found = f"{n} values" if n > 1 else "1 value"
    if sampled:
        found += f" in a {DETECT_PIXELS / 1e6:.1f} Mpx sample"
    ids = found.replace("values", "ids").replace("value", "id")
    as_instance = f"{ids}, each one connected blob → instance"
    if single < 1:
        as_instance = f"{ids}, {single:.0%} of them one connected blob each → instance"
    if n > SEMANTIC_MAX_CLASSES:
        mode = "instance" if single >= INSTANCE_SINGLE_SHARE else "semantic"
    elif n >= 2 and single == 1:
        mode = "instance"
        as_instance += " (if each value is a class, choose semantic)"
    else:
        mode = "semantic"
    if mode == "instance":
        reason = as_instance
    elif n == 1:
        reason = f"{found} (a foreground mask), {regions} region(s) → semantic"
    else:
        reason = f"{found} forming {regions} separate regions → semantic (value = class)"
    warning = None
    if top > SEMANTIC_MAX_CLASSES or n > SEMANTIC_MAX_CLASSES:
        what = f"{n} values up to {top} make" if n > 1 else f"the value {top} makes"
        warning = (
            f"read as semantic classes, {what} a {top + 1}-class model (value = class "
            f"number, 0 = background), more than the {SEMANTIC_MAX_CLASSES} classes and "
            f"background a class map usually has"
        )
        if n > 1 and single >= INSTANCE_SINGLE_SHARE:
            warning += (
                f"; {single:.0%} of them are one connected blob each, like object ids: if "
                f"each value is one object, use instance mode"
            )
        elif n == 1:
            warning += f"; if it is a foreground mask, save it as 0/1 instead of 0/{top}"
        elif n <= SEMANTIC_MAX_CLASSES:
            warning += f"; if the values are classes, number them 1 to {n}"
        else:
            warning += "; if each value is one object, use instance mode"
    return LabelModeReading(mode, n, reason, warning, single, top, sampled)


def _blobs_per_id(window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero values of a 2D window and how many 8-connected blobs each forms there."""
    from skimage.measure import label

    if window.dtype == bool:
        window = window.view(np.uint8)
    blobs = label(window, background=0, connectivity=window.ndim)
    count = int(blobs.max())
    if not count:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    value_of = np.zeros(count + 1, np.int64)
    value_of[blobs.ravel()] = window.ravel()  # every pixel of a blob has its value
    ids, per_id = np.unique(value_of[1:], return_counts=True)
    return ids, per_id.astype(np.int64)


def _planes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Indices of the planes over the last two axes (one empty index for 2D and 1D arrays)."""
    return list(itertools.product(*(range(n) for n in shape[:-2])))


def _sample_windows(labels: Any, shape: tuple[int, ...]) -> tuple[list[np.ndarray], bool]:
    """The 2D windows to read: every plane of a small array, else a fixed random sample of
    ``DETECT_BLOCK``-edge windows (the labelled ones, when the sample finds no label)."""
    if len(shape) < 2:
        return [np.asarray(labels[...]).reshape(1, -1)], False
    planes = _planes(shape)
    if math.prod(shape) <= DETECT_PIXELS:
        return [np.asarray(labels[plane]) for plane in planes], False
    edges = [min(n, DETECT_BLOCK) for n in shape[-2:]]
    counts = [math.ceil(n / e) for n, e in zip(shape[-2:], edges, strict=True)]
    candidates = len(planes) * counts[0] * counts[1]
    take = max(1, min(candidates, DETECT_PIXELS // (edges[0] * edges[1])))

    def window(k: int) -> tuple:
        plane, rest = divmod(int(k), counts[0] * counts[1])
        row, column = divmod(rest, counts[1])
        return (
            *planes[plane],
            slice(row * edges[0], (row + 1) * edges[0]),
            slice(column * edges[1], (column + 1) * edges[1]),
        )

    chosen = np.random.default_rng(0).choice(candidates, size=take, replace=False)
    windows = [np.asarray(labels[window(k)]) for k in sorted(chosen)]
    if any(w.any() for w in windows):
        return windows, True
    # Nothing in the sample: a few strokes in a large unpainted layer. Find them.
    painted = []
    for k in range(candidates):
        n = int(np.count_nonzero(np.asarray(labels[window(k)])))
        if n:
            painted.append((n, k))
    best = sorted(k for _n, k in sorted(painted, reverse=True)[:take])
    return [np.asarray(labels[window(k)]) for k in best], True


@dataclass(frozen=True)
class LabelModeChoice:
    """The label mode a training run uses, and why.

    Attributes
    ----------
    mode : {"semantic", "instance", "sparse"}
    reason : str
        One line for the user, e.g. ``"instance (auto: 179 ids, each one connected blob)"``.
    warning : str
        Something the user should see before training ("" if nothing): an explicit semantic
        mode for labels with more than a handful of values.
    """

    mode: str
    reason: str
    warning: str = ""


def choose_label_mode(
    requested: str,
    labels: Sequence[tuple[str, Any]],
    model_mode: str | None = None,
) -> LabelModeChoice:
    """The label mode of a run from the requested one and the labels of all its pairs.

    Parameters
    ----------
    requested : {"auto", "semantic", "instance", "sparse"}
        The configured mode.
    labels : sequence of (str, array-like)
        How messages name each labels array, and the array, for every training and validation
        pair.
    model_mode : str, optional
        The label mode of the model being fine-tuned: what "auto" means then.

    Raises
    ------
    UserInputError
        In auto mode: pairs that read differently (naming both), or labels that read as more
        than a handful of semantic classes (saying which modes to choose from).
    """
    if requested not in ("auto", "semantic"):
        return LabelModeChoice(requested, f"{requested} (as asked)")
    if requested == "auto" and model_mode is not None:
        return LabelModeChoice(
            model_mode,
            f"{model_mode} (auto: the model to fine-tune was trained on {model_mode} labels)",
        )
    return decide_label_mode(requested, read_label_modes(labels))


def read_label_modes(
    labels: Sequence[tuple[str, Any]],
) -> list[tuple[str, LabelModeReading]]:
    """:func:`detect_label_mode` of each named labels array; an error names the array."""
    readings = []
    for name, array in labels:
        try:
            readings.append((name, detect_label_mode(array)))
        except UserInputError as err:
            raise UserInputError(f"{name}: {err}") from None
    return readings


def decide_label_mode(
    requested: str, readings: Sequence[tuple[str, LabelModeReading]]
) -> LabelModeChoice:
    """:func:`choose_label_mode`'s decision from the pairs' readings (for ``requested`` "auto"
    or "semantic"; the one rule for the command line, the API and the Train widget).

    Raises
    ------
    UserInputError
        As :func:`choose_label_mode`.
    """
    if requested == "semantic":
        warned = [(name, r) for name, r in readings if r.semantic_classes_warning]
        warning = "; ".join(f"{name}: {r.semantic_classes_warning}" for name, r in warned)
        return LabelModeChoice("semantic", "semantic (as asked)", warning)
    painted = [(name, r) for name, r in readings if not r.empty]
    for name, reading in painted:
        if reading.refused:
            raise UserInputError(
                f"{name} hold {reading.reason.replace(' → semantic (value = class)', '')}: "
                f"{reading.semantic_classes_warning}. {SAY_THE_MODE}"
            )
    if not painted:
        mode = readings[0][1].mode if readings else "semantic"
        reason = readings[0][1].reason if readings else "no labels"
        return LabelModeChoice(mode, f"{mode} (auto: {reason})")
    first_name, first = painted[0]
    for name, reading in painted[1:]:
        if reading.mode != first.mode:
            raise UserInputError(
                f"{name} read as {reading.mode} labels ({reading.reason}) but {first_name} as "
                f"{first.mode} ({first.reason}); all pairs of one run need the same label "
                f"mode: leave that pair out, or {SAY_THE_MODE[0].lower()}{SAY_THE_MODE[1:]} "
                f"(readings: {', '.join(f'{n}: {r.mode}' for n, r in painted)})"
            )
    reason = first.reason.rsplit(" → ", 1)[0]
    more = f", and {len(painted) - 1} more pair(s) alike" if len(painted) > 1 else ""
    return LabelModeChoice(first.mode, f"{first.mode} (auto: {reason}{more})")


def resolve_auto_mode(
    config: Any,
    labels: Sequence[tuple[str, Any]],
    model_mode: str | None = None,
) -> tuple[Any, LabelModeChoice]:
    """``config`` (a TrainConfig) with its label mode chosen, and the choice.

    An explicit mode is kept as it is (with :func:`choose_label_mode`'s warning for an
    explicit semantic mode); "auto" is decided from ``labels``.
    """
    choice = choose_label_mode(config.label_mode, labels, model_mode)
    if choice.mode != config.label_mode:
        config = dataclasses.replace(config, label_mode=choice.mode)
    logger.info("label mode: %s", choice.reason)
    return config, choice


def run_labels(
    labels: Any, names: Sequence[Any] | None = None, validation: Any = None
) -> list[tuple[str, Any]]:
    """``(name, labels)`` of every pair of a :class:`~napari_tiled_unet.training.Trainer`'s
    arguments, named as its messages name them; what is not an array is left for the
    Trainer's own checks."""
    from napari_tiled_unet.training.pairs import as_sequence, describe_pairs

    arrays = as_sequence(labels, "labels")
    named = [
        (label_name, array)
        for (_image, label_name), array in zip(
            describe_pairs(names, len(arrays)), arrays, strict=True
        )
    ]
    if isinstance(validation, Sequence):
        for i, item in enumerate(validation):
            if isinstance(item, Sequence) and len(item) in (2, 3):
                named.append((f"labels of validation pair {i}", item[1]))
    return [(name, array) for name, array in named if hasattr(array, "shape")]
