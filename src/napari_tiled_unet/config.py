"""Frozen, validated configuration objects shared by the engine, the CLI, the widgets and model files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from napari_tiled_unet.errors import UserInputError

PADDINGS = ("same", "valid")
#: Largest supported number of pooling steps.
MAX_DEPTH = 6
#: Largest supported network: 1e9 parameters are 3.7 GiB of float32 weights, and training
#: needs about four times that (weights, gradients, two Adam moments) before any activation.
#: The paper's network (base 64, depth 4) has 31 million; a model file claiming
#: ``base_channels: 20000`` would allocate terabytes before anything else could object.
MAX_PARAMETERS = 10**9

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build the dataclass ``cls`` from a dict of its fields.

    Raises
    ------
    ValueError
        If ``data`` has keys that are not fields of ``cls``, naming them and the fields.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise UserInputError(
            f"unknown {cls.__name__} keys {sorted(unknown)}; expected some of {sorted(names)}"
        )
    return cls(**data)


def _check_architecture(
    owner: str, base_channels: Any, depth: Any, padding: Any, anisotropic_levels: Any
) -> None:
    """The checks :class:`NetworkSpec` and :class:`UNetConfig` share; messages name ``owner``."""
    for name, value in (("base_channels", base_channels), ("depth", depth)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserInputError(f"{owner}.{name} must be a positive integer, got {value!r}")
    if depth > MAX_DEPTH:
        raise UserInputError(f"{owner}.depth must be between 1 and {MAX_DEPTH}, got {depth}")
    if padding not in PADDINGS:
        raise UserInputError(f"{owner}.padding must be one of {PADDINGS}, got {padding!r}")
    k = anisotropic_levels
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= depth:
        raise UserInputError(
            f"{owner}.anisotropic_levels must be an integer between 0 and depth ({depth}), "
            f"got {k!r}"
        )


def parameter_count(
    in_channels: int,
    num_classes: int,
    depth: int,
    base_channels: int,
    ndim: int = 2,
    anisotropic_levels: int = 0,
) -> int:
    """Number of weights and biases of the U-Net of these sizes, without building it.

    Follows :class:`~napari_tiled_unet.model.unet.UNet`: per level a double 3-wide convolution
    (``base_channels * 2**level`` channels), a bottleneck, per level a 2-wide transposed
    convolution halving the channels and a double convolution, and a 1x1 output convolution.
    """
    kernel = 3**ndim

    def double(c_in: int, c_out: int) -> int:
        return c_in * c_out * kernel + c_out + c_out * c_out * kernel + c_out

    widths = [base_channels * 2**i for i in range(depth + 1)]
    total = sum(
        double(c_in, c_out)
        for c_in, c_out in zip([in_channels, *widths[:-2]], widths[:-1], strict=True)
    )
    total += double(widths[-2], widths[-1])
    for level in range(depth, 0, -1):
        c_in = widths[level]
        window = 4 if level - 1 < anisotropic_levels else 2**ndim
        total += c_in * (c_in // 2) * window + c_in // 2 + double(c_in, widths[level - 1])
    return total + base_channels * num_classes + num_classes


def _check_size(owner: str, **sizes: int) -> None:
    """Refuse a network of more than :data:`MAX_PARAMETERS` before anything allocates it."""
    count = parameter_count(**sizes)
    if count <= MAX_PARAMETERS:
        return
    base = sizes["base_channels"]
    fits = 0  # the largest base_channels within the bound, the other sizes kept
    low, high = 1, base
    while low <= high:
        mid = (low + high) // 2
        if parameter_count(**{**sizes, "base_channels": mid}) <= MAX_PARAMETERS:
            fits, low = mid, mid + 1
        else:
            high = mid - 1
    advice = (
        f"use base_channels of at most {fits} (or fewer levels)"
        if fits
        else "use fewer input channels or classes"
    )
    raise UserInputError(
        f"{owner}: a network of base_channels={base}, depth={sizes['depth']} "
        f"({sizes['in_channels']} input channel(s), {sizes['num_classes']} classes, "
        f"{sizes['ndim']}D) has {count:.3g} parameters: {_size(count * 4)} of float32 weights, "
        f"about {_size(count * 16)} to train; at most {MAX_PARAMETERS:,} are supported, "
        f"{advice}"
    )


def _size(n: int) -> str:
    """``n`` bytes in GiB, or TiB from 1 TiB on."""
    return f"{n / 2**40:.3g} TiB" if n >= 2**40 else f"{n / 2**30:.3g} GiB"


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`~napari_tiled_unet.model.unet.UNet`.

    Parameters
    ----------
    in_channels : int
        Channels of the input image (1 for a single-channel image).
    num_classes : int
        Output classes (at least 2: background and foreground).
    depth : int
        Number of pooling steps; inputs are processed on a grid of ``2**depth`` pixels.
    base_channels : int
        Feature channels of the first level.
    padding : {"same", "valid"}
        Convolution padding: "same" (tutorial) or "valid" (paper).
    ndim : {2, 3}
        Spatial dimensions.
    anisotropic_levels : int
        For 3D stacks whose Z spacing is coarser than Y/X: the first ``anisotropic_levels``
        levels pool and up-sample only in Y and X (2x2 max pooling and transposed convolution
        over (1, 2, 2) voxels), the later levels in all three axes. With a Z spacing about
        ``2**k`` times the Y/X spacing, ``k`` such levels make the voxels roughly cubic from
        level ``k`` on. Z then sits on a grid of ``2**(depth - anisotropic_levels)`` planes
        instead of ``2**depth``, and needs less context. 0 (the default, and the only value
        for 2D) pools every axis at every level. Between 0 and ``depth``.
    """

    in_channels: int = 1
    num_classes: int = 2
    depth: int = 4
    base_channels: int = 64
    padding: str = "same"
    ndim: int = 2
    anisotropic_levels: int = 0

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserInputError(f"UNetConfig.{name} must be a positive integer, got {value!r}")
        if self.num_classes < 2:
            raise UserInputError(
                f"UNetConfig.num_classes must be at least 2, got {self.num_classes}"
            )
        _check_architecture(
            "UNetConfig", self.base_channels, self.depth, self.padding, self.anisotropic_levels
        )
        if self.ndim not in (2, 3):
            raise UserInputError(f"UNetConfig.ndim must be 2 or 3, got {self.ndim!r}")
        if self.anisotropic_levels and self.ndim != 3:
            raise UserInputError(
                f"UNetConfig.anisotropic_levels is for 3D networks (pooling only in Y and X "
                f"while Z is coarse); got {self.anisotropic_levels} with ndim={self.ndim}"
            )
        _check_size("UNetConfig", **self._sizes())

    def _sizes(self) -> dict[str, int]:
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "depth": self.depth,
            "base_channels": self.base_channels,
            "ndim": self.ndim,
            "anisotropic_levels": self.anisotropic_levels,
        }

    @property
    def parameter_count(self) -> int:
        """Number of weights and biases of this network (see :func:`parameter_count`)."""
        return parameter_count(**self._sizes())

    @property
    def network(self) -> NetworkSpec:
        """The architecture without the data-given sizes (channels, classes, ndim)."""
        return NetworkSpec(self.base_channels, self.depth, self.padding, self.anisotropic_levels)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, as stored in model files.

        ``anisotropic_levels`` is left out while it is 0, so files of 2D and isotropic 3D
        networks stay readable by versions that predate it; :meth:`from_dict` fills it in.
        """
        data = dataclasses.asdict(self)
        if not self.anisotropic_levels:
            del data["anisotropic_levels"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        return dataclass_from_dict(cls, data)


@dataclass(frozen=True)
class NetworkSpec:
    """The architecture of a new U-Net, apart from what the data decide.

    Input channels, classes and spatial dimensions come from the training data;
    :meth:`unet_config` adds them. The values are checked as :class:`UNetConfig` checks them.

    Parameters
    ----------
    base_channels : int
        Feature channels of the first level.
    depth : int
        Pooling steps, between 1 and 6.
    padding : {"same", "valid"}
        Convolution padding: "same" (tutorial) or "valid" (paper).
    anisotropic_levels : int
        3D only: the first this many levels pool and up-sample in Y and X only (see
        :attr:`UNetConfig.anisotropic_levels`); between 0 and ``depth``.
    """

    base_channels: int = 32
    depth: int = 4
    padding: str = "same"
    anisotropic_levels: int = 0

    def __post_init__(self) -> None:
        _check_architecture(
            "NetworkSpec", self.base_channels, self.depth, self.padding, self.anisotropic_levels
        )
        # The smallest data (one channel, two classes, 2D); unet_config checks the real ones.
        _check_size(
            "NetworkSpec",
            in_channels=1,
            num_classes=2,
            depth=self.depth,
            base_channels=self.base_channels,
            ndim=2,
            anisotropic_levels=0,
        )

    def unet_config(self, in_channels: int = 1, num_classes: int = 2, ndim: int = 2) -> UNetConfig:
        """The full architecture for images of ``in_channels`` channels and ``ndim`` spatial
        axes, and ``num_classes`` output classes.

        Raises
        ------
        ValueError
            As :class:`UNetConfig` (e.g. anisotropic levels for a 2D network).
        """
        return UNetConfig(
            in_channels=in_channels, num_classes=num_classes, ndim=ndim, **dataclasses.asdict(self)
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        return dataclass_from_dict(cls, data)
