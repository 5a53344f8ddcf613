"""The training configuration: one frozen, validated dataclass shared by widget, CLI and model file."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from napari_tiled_unet.config import NetworkSpec, dataclass_from_dict
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.normalization import Normalization

LABEL_MODES = ("semantic", "instance", "sparse", "sparse-instance")
#: What :attr:`TrainConfig.label_mode` accepts: a mode, or "auto" (decided from the labels).
TRAIN_LABEL_MODES = ("auto", *LABEL_MODES)
OPTIMIZERS = ("adam", "sgd")
LOSSES = ("weighted_ce", "ce", "dice", "weighted_ce+dice")
BEST_METRICS = ("val_iou", "val_f1", "val_object_f1")
#: Largest number of classes accepted in semantic mode; more usually means instance ids.
MAX_CLASSES = 256
#: Default learning rate of a new network (Adam).
LEARNING_RATE = 1e-3
#: Default learning rate when a run starts from a trained model (fine-tuning). Measured for
#: 100-step fine-tuning of the bundled model on nuclei unlike its own
#: (benchmarks/results/finetune_crossdomain.md): on DSB 2018 nuclei of its size 1e-4, 3e-4 and
#: 1e-3 score within two objects; on CHO nuclei 2.7x larger 1e-3 scores 0.88 / 0.96 object F1
#: (seeds 0 / 1) against 0.66 / 0.76 at 1e-4 (lower rates keep cutting nuclei at the old
#: size), and only 1e-3 matches training from scratch (0.89). So fine-tuning starts at a new
#: network's rate; the constant stays separate so a face can name it.
FINETUNE_LR = 1e-3
#: Largest learning rate accepted: far beyond any that trains (Adam: ~1e-4 to 1e-2; SGD with
#: momentum: ~1e-3 to 1e-1); larger ones overflow the weights in a few steps.
MAX_LEARNING_RATE = 1.0


@dataclass(frozen=True)
class AugmentSpec:
    """Which augmentations run during training, and how strong they are.

    Parameters
    ----------
    flips : bool
        Flip each spatial axis with probability 1/2.
    rotations : bool
        Rotate by a random multiple of 90 degrees in the last two spatial axes (by 0 or 180
        degrees when those axes differ in length, so the tile shape is kept).
    elastic : bool
        The paper's elastic deformation: random displacements on a coarse
        ``elastic_grid``-per-axis grid, ``elastic_sigma`` pixels standard deviation, interpolated
        bicubically to every pixel; images are resampled with cubic splines, labels with
        nearest neighbour.
    elastic_sigma : float
        Standard deviation of the coarse displacements, in pixels (10 in the paper), >= 0.
    elastic_grid : int
        Grid points per axis of the coarse displacement grid (3 in the paper), >= 2.
    intensity : bool
        Random intensity jitter of the normalised image: ``x * (1 + a) + b`` with
        ``a ~ U(-intensity_scale, intensity_scale)``, ``b ~ U(-intensity_shift, intensity_shift)``
        per channel.
    intensity_scale, intensity_shift : float
        Ranges of that jitter, >= 0.
    appearance : bool
        Appearance augmentation, so that a model copes with other microscopes and stains: each
        of gamma, uneven background, blur, dimming, Poisson noise and Gaussian noise is applied
        with probability 1/2 (ranges below; a range of 0, or a dimming of 1, switches that one
        off). Labels are untouched.
    gamma : float
        Intensity gamma drawn log-uniformly from ``[1 / gamma, gamma]``, applied to the tile's
        own intensity range; >= 1.
    uneven_background : float
        Largest amplitude of an added smooth random background (normalised intensity units:
        0 is background, 1 bright foreground), >= 0.
    blur : float
        Largest standard deviation of a Gaussian blur in Y and X, pixels, >= 0.
    poisson_noise : float
        Largest relative shot-noise level: the tile is re-imaged with ``1 / p**2`` photons per
        unit intensity, ``p`` drawn in ``[0, poisson_noise]``; >= 0.
    gaussian_noise : float
        Largest standard deviation of additive Gaussian noise (normalised units), >= 0.
    dimming : float
        Largest dimming factor: the tile's normalised intensities are multiplied by a factor
        drawn log-uniformly from ``[1 / dimming, 1]`` (before the noise, so the dimmed tile is
        also noisier relative to its objects); >= 1, 1 switches it off. Percentile
        normalisation maps an image's brightest pixels to 1, so in an image with a few very
        bright objects the typical ones sit far lower than in the training images; this
        teaches the network that too.
    scale : float
        Objects are magnified by a factor drawn log-uniformly from ``[1 / scale, scale]`` in Y
        and X (the tile is read from a larger or smaller region and resampled; labels nearest
        neighbour); 1 switches it off, 2 gives 0.5-2x. Independent of ``appearance``.
    """

    flips: bool = True
    rotations: bool = True
    elastic: bool = True
    elastic_sigma: float = 10.0
    elastic_grid: int = 3
    intensity: bool = True
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    appearance: bool = False
    gamma: float = 2.0
    uneven_background: float = 0.3
    blur: float = 1.5
    poisson_noise: float = 0.3
    gaussian_noise: float = 0.1
    dimming: float = 1.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        grid = self.elastic_grid
        if not isinstance(grid, int) or isinstance(grid, bool) or grid < 2:
            raise UserInputError(f"{owner}.elastic_grid must be an integer >= 2, got {grid!r}")
        for name in ("elastic_sigma", "intensity_scale", "intensity_shift"):
            object.__setattr__(self, name, _finite(owner, name, getattr(self, name), minimum=0))
        for name in ("uneven_background", "blur", "poisson_noise", "gaussian_noise"):
            object.__setattr__(self, name, _finite(owner, name, getattr(self, name), minimum=0))
        for name in ("gamma", "dimming", "scale"):  # factors: [1/x, x] or [1/x, 1]
            object.__setattr__(self, name, _finite(owner, name, getattr(self, name), minimum=1))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        return dataclass_from_dict(cls, data)


@dataclass(frozen=True)
class TrainConfig:
    """How to train a U-Net.

    Parameters
    ----------
    label_mode : {"auto", "semantic", "instance", "sparse"}
        How label values are read. "auto" (the default): decided from the labels when training
        starts (:func:`~napari_tiled_unet.training.label_mode.detect_label_mode`: many ids,
        each one connected blob, are instance ids; a few values are semantic classes; a
        fine-tuned model's own mode), refusing labels that would read as more than a handful
        of semantic classes; the trained model records the mode chosen. "semantic": each
        value is a class (0 = background, all pixels annotated). "instance": each value > 0
        is one object; the network learns three classes, background / object interior /
        object boundary, so touching objects come apart
        (:func:`napari_tiled_unet.postprocess.labels_from_probabilities` turns predictions back
        into object ids). "sparse": ilastik-style scribbles; 0 means "not annotated" and is
        ignored by the loss, value ``k >= 1`` is class ``k - 1``. "sparse-instance": partial
        instance annotation, for painting a few whole objects and some background; 0 = not
        annotated, 1 = background, every other value = one object; the network learns
        background / interior / boundary as in "instance" mode (and the model records
        "instance"), boundaries only where an object meets annotated pixels of another value
        (:func:`~napari_tiled_unet.training.targets.sparse_instance_targets`).
    iterations : int
        Optimizer steps.
    tile_shape : tuple of int
        Spatial shape (pixels, e.g. ``(Y, X)``) of the network *input* tile. With "same" padding
        it must be a multiple of ``2**network.depth``; with "valid" padding it must be a size
        the network accepts (e.g. 572 for depth 4) and the label target is the smaller centre
        it outputs.
    batch_size : int
        Tiles per optimizer step.
    learning_rate : float
        Step size of the optimizer (:data:`LEARNING_RATE` by default).
    fine_tune_learning_rate : float or None
        Step size when the run starts from a trained model (``model=``; the command line's
        ``--resume``). None: :data:`FINETUNE_LR` (lower, for fine-tuning) while
        ``learning_rate`` is left at its default, else ``learning_rate``. See
        :meth:`run_learning_rate`.
    optimizer : {"adam", "sgd"}
        Adam, or SGD with ``momentum`` (0.99 as in the paper).
    momentum : float
        Momentum of SGD, in [0, 1).
    weight_decay : float
        L2 penalty, >= 0.
    ema_decay : float
        0 (off), or in (0, 1): keep an exponential moving average of the weights with this decay
        (0.995: roughly the last 200 steps of a long run, fewer early on) and offer it, not
        the last weights, as the run's model (validated, kept as the best, saved); see
        :mod:`~napari_tiled_unet.training.averaging`.
    loss : {"weighted_ce", "ce", "dice", "weighted_ce+dice"}
        "weighted_ce" is the paper's pixel-weighted cross-entropy (class balancing plus the
        border term ``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))``); "ce" is unweighted; "dice" is a
        soft Dice loss; "weighted_ce+dice" is their sum.
    w0 : float
        Height of the border term of the weight map (10 in the paper), >= 0.
    sigma : float
        Width of the border term, in pixels (5 in the paper), > 0.
    class_balance : bool
        Weight classes by inverse frequency (over all training labels) in the weight map.
    foreground_fraction : float or None
        Share of tiles placed on an annotated non-background pixel (a class chosen uniformly
        among those present, so rare classes and sparse strokes are hit); the rest are placed
        uniformly. None: 0.5 for "semantic" and "instance", 1.0 for "sparse" and
        "sparse-instance" (every tile on an annotation).
    augment : AugmentSpec
        Augmentation of the training tiles (flips, rotations, elastic deformation, intensity
        jitter); see :class:`AugmentSpec`.
    validation_fraction : float
        When no held-out images are given, this share of the annotated tile-sized blocks of the
        training images (at most ``max_validation_tiles``) is held out: those pixels never
        count in the training loss and are used to report ``val_iou`` / ``val_f1``. 0 disables
        validation (the last model is then the result).
    validation_every : int
        Validate every this many steps (and after the last step).
    max_validation_tiles : int
        At most this many tiles are used for validation.
    best_metric : {"val_iou", "val_f1", "val_object_f1"}
        Validation score that picks the best model ("val_object_f1": instance mode only).
    seed : int or None
        Seed of every random choice (initial weights, tiles, augmentation, validation split);
        the same seed on the same data and device gives the same weights on CPU. None draws a
        fresh seed (recorded in the model's training metadata).
    device : {"auto", "cpu", "cuda", "mps"} or "cuda:N"
        Where to train; see :func:`napari_tiled_unet.device.resolve_device`.
    mixed_precision : bool
        Use float16 autocast with gradient scaling on CUDA (ignored on other devices).
    network : NetworkSpec
        Architecture of a new network (base channels, depth, padding, anisotropic levels; see
        :class:`~napari_tiled_unet.config.NetworkSpec`); ignored when fine-tuning an existing
        model. ``network.anisotropic_levels`` needs a 3D (Z, Y, X) ``tile_shape``; the tile's
        Z size then needs to be a multiple of ``2**(depth - anisotropic_levels)`` only ('same'
        padding).
    normalization : Normalization or None
        Input normalisation; None: percentile (1, 99.8) for a new model, the model's own when
        fine-tuning. Percentiles are resolved per image, both here and at prediction.
    class_names : tuple of str or None
        Names of the network's classes, stored in the model file. None: derived from the mode
        ("background", "class 1", ... ; "background", "interior", "boundary"; "label 1", ...).
    checkpoint_path : str or None
        If set, the best model so far is written there (atomically, with
        :func:`~napari_tiled_unet.model.modelfile.save_model`) after each improvement, so a crash
        or Stop leaves a complete model file.
    prefetch : {"auto", True, False}
        Prepare the next batch in a background thread while the current step runs. "auto":
        on an accelerator, or on a CPU with more cores than torch's threads; otherwise the
        thread would fight torch's own threads for the cores, and batches are drawn between
        steps (see :mod:`~napari_tiled_unet.training.prefetch`).
    """

    label_mode: str = "auto"
    iterations: int = 1000
    tile_shape: tuple[int, ...] = (256, 256)
    batch_size: int = 4
    learning_rate: float = LEARNING_RATE
    fine_tune_learning_rate: float | None = None
    optimizer: str = "adam"
    momentum: float = 0.99
    weight_decay: float = 0.0
    ema_decay: float = 0.0
    loss: str = "weighted_ce"
    w0: float = 10.0
    sigma: float = 5.0
    class_balance: bool = True
    foreground_fraction: float | None = None
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    validation_fraction: float = 0.1
    validation_every: int = 50
    max_validation_tiles: int = 32
    best_metric: str = "val_iou"
    seed: int | None = 0
    device: str = "auto"
    mixed_precision: bool = True
    network: NetworkSpec = field(default_factory=NetworkSpec)
    normalization: Normalization | None = None
    class_names: tuple[str, ...] | None = None
    checkpoint_path: str | None = None
    prefetch: bool | str = "auto"

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise list inputs (from JSON / dicts) to tuples
        if isinstance(self.tile_shape, int) or not hasattr(self.tile_shape, "__len__"):
            raise UserInputError(
                f"TrainConfig.tile_shape must be a tuple of ints such as (256, 256), "
                f"got {self.tile_shape!r}"
            )
        set_(
            self,
            "tile_shape",
            tuple(
                int(n) if isinstance(n, numbers.Integral) and not isinstance(n, bool) else n
                for n in self.tile_shape
            ),
        )
        if self.class_names is not None:
            set_(self, "class_names", tuple(str(n) for n in self.class_names))
        if isinstance(self.normalization, dict):
            set_(self, "normalization", Normalization.from_dict(self.normalization))
        if self.checkpoint_path is not None:
            set_(self, "checkpoint_path", str(self.checkpoint_path))
        for name, spec in (("network", NetworkSpec), ("augment", AugmentSpec)):
            value = getattr(self, name)
            if isinstance(value, Mapping):  # from JSON / a dict
                set_(self, name, spec.from_dict(dict(value)))
            elif not isinstance(value, spec):
                raise UserInputError(
                    f"TrainConfig.{name} must be a {spec.__name__} (or its dict), "
                    f"got {type(value).__name__}"
                )

        _choice("label_mode", self.label_mode, TRAIN_LABEL_MODES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("loss", self.loss, LOSSES)
        _choice("best_metric", self.best_metric, BEST_METRICS)
        if self.best_metric == "val_object_f1" and self.label_mode != "instance":
            raise UserInputError(
                "TrainConfig.best_metric='val_object_f1' needs label_mode='instance'; "
                "use 'val_iou' or 'val_f1'"
            )
        for name in ("iterations", "batch_size", "validation_every", "max_validation_tiles"):
            _positive_int(name, getattr(self, name))
        if len(self.tile_shape) not in (2, 3):
            raise UserInputError(
                f"TrainConfig.tile_shape must have 2 (Y, X) or 3 (Z, Y, X) entries, "
                f"got {self.tile_shape}"
            )
        if self.network.anisotropic_levels and len(self.tile_shape) != 3:
            raise UserInputError(
                f"TrainConfig.network.anisotropic_levels is for 3D networks (a (Z, Y, X) "
                f"tile_shape); got {self.network.anisotropic_levels} with tile_shape "
                f"{self.tile_shape}"
            )
        for n in self.tile_shape:
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise UserInputError(
                    f"TrainConfig.tile_shape entries must be positive integers, "
                    f"got {self.tile_shape}"
                )
        floats = ("learning_rate", "momentum", "weight_decay", "ema_decay", "w0", "sigma")
        for name in (*floats, "validation_fraction"):  # plain floats, not numpy scalars
            minimum = 0 if name in ("weight_decay", "w0") else None
            set_(self, name, _finite("TrainConfig", name, getattr(self, name), minimum))
        if self.fine_tune_learning_rate is not None:
            rate = _finite("TrainConfig", "fine_tune_learning_rate", self.fine_tune_learning_rate)
            set_(self, "fine_tune_learning_rate", rate)
        for name in ("learning_rate", "fine_tune_learning_rate"):
            lr = getattr(self, name)
            if lr is not None and not 0 < lr <= MAX_LEARNING_RATE:
                raise UserInputError(
                    f"TrainConfig.{name} must be in (0, {MAX_LEARNING_RATE:g}], got {lr!r}; "
                    f"typical: 1e-4 to 1e-2 with Adam, 1e-3 to 1e-1 with SGD"
                )
        for name in ("momentum", "ema_decay"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise UserInputError(f"TrainConfig.{name} must be in [0, 1), got {value}")
        if not self.sigma > 0:
            raise UserInputError(f"TrainConfig.sigma must be > 0 (pixels), got {self.sigma}")
        if self.foreground_fraction is not None:
            fraction = _finite("TrainConfig", "foreground_fraction", self.foreground_fraction)
            set_(self, "foreground_fraction", fraction)
            if not 0 <= self.foreground_fraction <= 1:
                raise UserInputError(
                    f"TrainConfig.foreground_fraction must be in [0, 1] or None, "
                    f"got {self.foreground_fraction}"
                )
        if not 0 <= self.validation_fraction < 1:
            raise UserInputError(
                f"TrainConfig.validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise UserInputError(
                f"TrainConfig.seed must be a non-negative integer or None, got {self.seed!r}"
            )
        if not (isinstance(self.prefetch, bool) or self.prefetch == "auto"):
            raise UserInputError(
                f"TrainConfig.prefetch must be 'auto', True or False, got {self.prefetch!r}"
            )
        if self.normalization is not None and not isinstance(self.normalization, Normalization):
            raise UserInputError(
                f"TrainConfig.normalization must be a Normalization, a dict or None, "
                f"got {type(self.normalization).__name__}"
            )
        from napari_tiled_unet.device import DEVICES

        if str(self.device).split(":")[0] not in DEVICES:
            raise UserInputError(
                f"TrainConfig.device must be one of {DEVICES} (or 'cuda:N'), got {self.device!r}"
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """The configuration of a named preset (see
        :data:`~napari_tiled_unet.training.presets.PRESETS`), with ``overrides`` on top.

        E.g. ``TrainConfig.preset("interactive", iterations=300)``.
        """
        from napari_tiled_unet.training.presets import preset_fields

        return cls(**{**preset_fields(name), **overrides})

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (length of ``tile_shape``)."""
        return len(self.tile_shape)

    @property
    def weighted_loss(self) -> bool:
        """Whether the loss uses the per-pixel weight map (class balance, border term)."""
        return self.loss in ("weighted_ce", "weighted_ce+dice")

    def run_learning_rate(self, fine_tuning: bool) -> tuple[float, str]:
        """The learning rate a run uses, and why.

        Parameters
        ----------
        fine_tuning : bool
            Whether the run starts from a trained model.

        Returns
        -------
        rate : float
        reason : str
            E.g. "lower default for fine-tuning", "as set", for messages.
        """
        if not fine_tuning:
            return self.learning_rate, "as set"
        if self.fine_tune_learning_rate is not None:
            return self.fine_tune_learning_rate, "as set"
        if self.learning_rate == LEARNING_RATE:
            lower = "lower " if FINETUNE_LR < LEARNING_RATE else ""
            return FINETUNE_LR, f"{lower}default for fine-tuning"
        return self.learning_rate, "as set"

    @property
    def effective_foreground_fraction(self) -> float:
        """``foreground_fraction`` with the mode-dependent default filled in."""
        if self.foreground_fraction is not None:
            return float(self.foreground_fraction)
        return 1.0 if self.label_mode in ("sparse", "sparse-instance") else 0.5

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, str, numbers, None) suitable for JSON and model files.

        ``network`` and ``augment`` are nested dicts.
        """
        data = dataclasses.asdict(self)
        data["tile_shape"] = list(self.tile_shape)
        data["class_names"] = None if self.class_names is None else list(self.class_names)
        data["normalization"] = None if self.normalization is None else self.normalization.to_dict()
        data["network"] = self.network.to_dict()
        data["augment"] = self.augment.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError.

        Also reads the flat form of model files written before the network and augmentation
        settings were nested (``base_channels``, ``depth``, ``flips``, ... at the top level).
        """
        data = dict(data)
        for name, spec in (("network", NetworkSpec), ("augment", AugmentSpec)):
            keys = [f.name for f in dataclasses.fields(spec)]
            flat = {k: data.pop(k) for k in keys if k in data}
            if flat and name in data:
                raise UserInputError(
                    f"TrainConfig: got both {name!r} and its fields {sorted(flat)} at the top "
                    f"level; nest them in {name!r}"
                )
            if flat:
                data[name] = spec(**flat)
        return dataclass_from_dict(cls, data)


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise UserInputError(f"TrainConfig.{name} must be one of {options}, got {value!r}")


def _finite(owner: str, name: str, value: Any, minimum: float | None = None) -> float:
    """``value`` as a float; a UserInputError unless it is a finite real number (>= ``minimum``)."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not real or not math.isfinite(value):
        raise UserInputError(f"{owner}.{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise UserInputError(f"{owner}.{name} must be >= {minimum:g}, got {value!r}")
    return float(value)


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserInputError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
