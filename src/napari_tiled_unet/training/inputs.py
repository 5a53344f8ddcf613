"""A training run's inputs as training pairs: images, labels, names, axes and validation pairs.

:func:`collect_pairs` and :func:`collect_validation_pairs` turn what
:class:`~napari_tiled_unet.training.Trainer` is given into
:class:`~napari_tiled_unet.training.pairs.TrainingPair` objects (one per frame of an image with
T, or Z for a 2D network), checking what can be seen without reading pixels;
:func:`labelled_frames` keeps the frames to train on once the pairs are scanned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.training.pairs import (
    TrainingPair,
    as_sequence,
    describe_pairs,
    make_pairs,
)
from napari_tiled_unet.training.scan import EMPTY_LABELS_HINTS
from napari_tiled_unet.training.targets import SPARSE_MODES

#: The axis layouts of a run's images: None, one string for all, or one entry per image.
AxesArgument = str | Sequence[str | None] | None


def collect_pairs(
    images: Any,
    labels: Any,
    ndim: int,
    *,
    names: Sequence[Any] | None = None,
    axes: AxesArgument = None,
    **options: Any,
) -> list[TrainingPair]:
    """The training pairs of one array or a sequence of images and their labels.

    Parameters
    ----------
    images, labels : array-like or sequence of array-likes
        One labels array per image.
    ndim : int
        Spatial axes of the network.
    names : sequence or None
        How messages name each pair (see :func:`~napari_tiled_unet.training.pairs.describe_pairs`).
    axes : str or sequence of (str or None), optional
        The images' layouts, one for all or one per image.
    **options
        ``model`` and ``channels``, passed on to
        :func:`~napari_tiled_unet.training.pairs.make_pairs`.

    Raises
    ------
    ValueError
        If there are no pairs, the counts differ, or a pair does not check out.
    """
    images = as_sequence(images, "images")
    labels = as_sequence(labels, "labels")
    if len(images) != len(labels):
        raise UserInputError(
            f"got {len(images)} images but {len(labels)} label arrays; pass one labels "
            f"array per image"
        )
    if not images:
        raise UserInputError("no training data: pass at least one (image, labels) pair")
    pairs = []
    for im, lab, (im_name, lab_name), ax in zip(
        images,
        labels,
        describe_pairs(names, len(images)),
        per_image(axes, len(images), "axes"),
        strict=True,
    ):
        pairs.extend(make_pairs(im, lab, im_name, lab_name, ndim, axes=ax, **options))
    return pairs


def collect_validation_pairs(
    validation: Any, ndim: int, axes: AxesArgument = None, **options: Any
) -> list[TrainingPair]:
    """The pairs of held-out ``(image, labels)`` or ``(image, labels, name)`` tuples.

    As :func:`collect_pairs`; ``None`` gives no pairs. Messages name them e.g.
    ``"image of validation pair 0"`` or ``"validation labels of 'held out'"``.
    """
    if validation is None:
        return []
    if hasattr(validation, "shape") or not isinstance(validation, Sequence):
        raise UserInputError(
            "validation must be a list of (image, labels) or (image, labels, name) tuples"
        )
    pairs = []
    per_pair = per_image(axes, len(validation), "validation_axes")
    for i, item in enumerate(validation):
        if not isinstance(item, Sequence) or len(item) not in (2, 3):
            raise UserInputError(
                f"validation[{i}] must be an (image, labels) or (image, labels, name) tuple, "
                f"got {type(item).__name__}"
            )
        if len(item) == 3:
            ((im_name, lab_name),) = describe_pairs([item[2]], 1)
            im_name, lab_name = f"validation {im_name}", f"validation {lab_name}"
        else:
            im_name, lab_name = f"image of validation pair {i}", f"labels of validation pair {i}"
        pairs.extend(
            make_pairs(item[0], item[1], im_name, lab_name, ndim, axes=per_pair[i], **options)
        )
    return pairs


def common_channels(pairs: Sequence[TrainingPair]) -> int:
    """The channels all pairs have.

    Raises
    ------
    ValueError
        If a pair has other channels than the first, naming both.
    """
    channels = pairs[0].channels
    for pair in pairs[1:]:
        if pair.channels != channels:
            raise UserInputError(
                f"{pair.image_name} has {pair.channels} channel(s) but "
                f"{pairs[0].image_name} has {channels}; all images need the same channels"
            )
    return channels


def labelled_frames(
    pairs: list[TrainingPair], labelled: list[bool], label_mode: str
) -> list[TrainingPair]:
    """The pairs to train on, given which hold non-zero labels.

    The frames (planes, time points) of one image may be unlabelled as long as one of them is
    labelled: in the sparse modes an unlabelled frame carries no annotation and is left out; in
    "semantic" and "instance" mode all-0 labels say "only background here" and are kept.

    Raises
    ------
    ValueError
        If every frame of an image is unlabelled, naming the image's labels.
    """
    sources: dict[tuple[str, str], bool] = {}
    for pair, has_labels in zip(pairs, labelled, strict=True):
        if pair.frame_of is not None:
            sources[pair.frame_of] = sources.get(pair.frame_of, False) or has_labels
    for (_, labels_name), has_labels in sources.items():
        if not has_labels:
            hint = EMPTY_LABELS_HINTS[label_mode]
            raise UserInputError(
                f"{labels_name} are empty (all 0) in every plane; {hint}, or leave this pair out"
            )
    if label_mode not in SPARSE_MODES:
        return pairs
    return [pair for pair, has_labels in zip(pairs, labelled, strict=True) if has_labels]


def per_image(axes: AxesArgument, count: int, what: str) -> list[str | None]:
    """One layout (or None) per image from None, one string, or a sequence of them.

    Raises
    ------
    ValueError
        If a sequence has not ``count`` entries; ``what`` names the argument.
    """
    if axes is None or isinstance(axes, str):
        return [axes] * count
    axes = list(axes)
    if len(axes) != count:
        raise UserInputError(
            f"{what} must be one string or one entry per image ({count}), got {len(axes)}"
        )
    return axes
