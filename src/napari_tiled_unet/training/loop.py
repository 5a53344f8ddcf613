"""The training loop: a :class:`Trainer` with a generator ``iter_run()``, and functional wrappers.

Three ways to train, from most to least control::

    trainer = Trainer(images, labels, TrainConfig(iterations=500), names=["nuclei"])
    for event in trainer.iter_run():      # Progress events; may be closed early (Stop)
        ...
    model = trainer.best_model            # best so far, also after a Stop

    model = yield from iter_train(images, labels, config)   # inside another generator
    model = train(images, labels, config)                   # blocking

Stopping: ``generator.close()`` at a yield (what napari's ``worker.quit()`` does) ends the run
at once, shuts the prefetch thread down and leaves :attr:`Trainer.best_model` usable; a checkpoint
file, if configured, is only ever written atomically, so neither Stop nor a crash corrupts it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch

from napari_tiled_unet.axes import ModelSpec
from napari_tiled_unet.device import resolve_device
from napari_tiled_unet.errors import TrainingDiverged, UserInputError
from napari_tiled_unet.events import Progress, run_to_completion
from napari_tiled_unet.model.geometry import UNetGeometry
from napari_tiled_unet.model.info import ModelInfo
from napari_tiled_unet.model.modelfile import save_model
from napari_tiled_unet.model.unet import UNet
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.training.config import TrainConfig
from napari_tiled_unet.training.finetune import (
    ModelSource,
    check_base_model,
    load_base_model,
    run_class_names,
    run_normalization,
    run_num_classes,
)
from napari_tiled_unet.training.inputs import (
    AxesArgument,
    collect_pairs,
    collect_validation_pairs,
    common_channels,
    labelled_frames,
)
from napari_tiled_unet.training.label_mode import resolve_auto_mode, run_labels
from napari_tiled_unet.training.loss import make_loss
from napari_tiled_unet.training.optim import grad_scaler, make_optimizer, train_step
from napari_tiled_unet.training.pairs import check_pair_size
from napari_tiled_unet.training.prefetch import BatchSource, prefetch_ahead
from napari_tiled_unet.training.record import run_info
from napari_tiled_unet.training.sampler import SampleSettings, TileLayout, TileSampler
from napari_tiled_unet.training.scan import count_classes, scan_pair
from napari_tiled_unet.training.step import StepPlan
from napari_tiled_unet.training.validation import (
    ValidationTiles,
    hold_out_validation,
    score_validation,
)
from napari_tiled_unet.training.weights import class_weights

logger = logging.getLogger(__name__)

#: Consecutive non-finite losses under mixed precision before training stops as diverged.
MAX_SKIPPED_AMP_STEPS = 20


class Trainer:
    """One training run: checks the data up front, trains in :meth:`iter_run`, keeps the best model.

    Parameters
    ----------
    images : array-like or sequence of array-likes
        Images of shape ``(Y, X)`` (or ``(C, Y, X)`` channels first; ``(Z, Y, X)`` with a 3D
        ``tile_shape``), or any layout named by ``axes`` (e.g. RGB ``(Y, X, 3)``, a ``TYX``
        movie), any size, any real dtype. Read lazily, window by window: numpy arrays,
        ``tifffile`` memmaps, zarr and dask arrays all work, and are never loaded whole.
    labels : array-like or sequence of array-likes
        Integer labels of each image's shape without its C axis (same axis order), read as
        ``config.label_mode`` says (see :class:`TrainConfig`); "auto" is decided here from a
        sample of each labels array (:attr:`label_mode` says how).
    config : TrainConfig
        How to train.
    model : UNet, path-like or None
        None: a new U-Net from ``config.network``.
        A :class:`UNet` or a model file: fine-tune it (a copy; the given object is not
        changed). Its input channels must match the images, its classes the labels, and its
        stored normalisation is used (an explicit, different ``config.normalization`` is an
        error).
    names : sequence or None
        How messages refer to each pair: a string (e.g. a layer name) or an
        ``(image_name, labels_name)`` tuple per pair.
    validation : sequence of (image, labels) or (image, labels, name), or None
        Held-out pairs to validate on (up to ``config.max_validation_tiles`` annotated tiles
        of them). None: hold out ``config.validation_fraction`` of the annotated tile-sized
        blocks of the training pairs instead.
    axes : str or sequence of (str or None), optional
        The images' axis layout (letters T, Z, C, Y, X; see :mod:`napari_tiled_unet.axes`),
        one string for all or one per image. Axes the network does not take (T; Z for a 2D
        ``tile_shape``) are split into frames, each a training pair; a frame's normalisation
        is resolved over its whole image (per channel). None: ``(*spatial)`` or ``(C,
        *spatial)``, else inferred from the image's and the labels' shapes (e.g. ``YXC`` for
        an RGB image), an ambiguous layout being an error that lists the readings.
    validation_axes : str or sequence, optional
        The same for the validation images; None: ``axes`` if it is one string.
    channels : sequence of int, optional
        Channels of the C axis to train on, in order (picks and reorders). The model file
        stores the selection and the images' channel count, and prediction applies the
        selection by itself to images with that many channels. None: all channels; when
        fine-tuning a model trained on a selection, images with its training images' channel
        count are read through that selection (as at prediction), others as they are.

    Raises
    ------
    ValueError
        Raised here for what can be seen without reading pixels (shapes, dtypes, tile size,
        model compatibility) and, for label mode "auto", labels that read ambiguously;
        problems in the pixel values (NaN, empty labels, a single class)
        are raised by the first ``next()`` of :meth:`iter_run`. Every message names the pair.

    Attributes
    ----------
    config : TrainConfig
        The configuration, with an "auto" label mode decided (:attr:`label_mode` says why).
    label_mode : LabelModeChoice
    status : str
        "ready", "running", "finished", "stopped" (closed early) or "failed".
    step : int
        Optimizer steps done.
    history : list of dict
        Per step: ``{"step", "loss"}`` plus the validation scores after a validation.
    best_step : int or None
        Step of the best validation score so far.
    best_scores : dict
        Validation scores at ``best_step``.
    seed : int or None
        The seed used (drawn at start when ``config.seed`` is None).
    """

    def __init__(
        self,
        images: Any,
        labels: Any,
        config: TrainConfig | None = None,
        *,
        model: ModelSource = None,
        names: Sequence[Any] | None = None,
        validation: Sequence[Sequence[Any]] | None = None,
        axes: AxesArgument = None,
        validation_axes: AxesArgument = None,
        channels: Sequence[int] | None = None,
    ):
        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        ndim = config.ndim
        self._base_model, self._fine_tuned_from = load_base_model(model)
        self._selection = None if channels is None else [int(c) for c in channels]
        options = dict(
            model=None if self._base_model is None else ModelSpec.of(self._base_model),
            channels=self._selection,
        )
        if validation_axes is None and isinstance(axes, str):
            validation_axes = axes
        self.pairs = collect_pairs(images, labels, ndim, names=names, axes=axes, **options)
        self.validation_pairs = collect_validation_pairs(
            validation, ndim, validation_axes, **options
        )
        channels = common_channels(self.pairs + self.validation_pairs)
        base_mode = None if self._base_model is None else self._base_model.info.label_mode
        named = run_labels(labels, names, validation) if config.label_mode == "auto" else []
        self.config, self.label_mode = resolve_auto_mode(config, named, base_mode)
        config = self.config
        if self._base_model is not None:
            check_base_model(self._base_model, config, channels, self.pairs[0].image_name)
            geometry = self._base_model.geometry
        else:
            geometry = UNetGeometry.from_config(config.network.unet_config(channels, 2, ndim))
        self.layout = TileLayout.for_training(config, geometry)
        for pair in self.pairs + self.validation_pairs:
            check_pair_size(pair, self.layout.out_shape, config.tile_shape)

        self.channels = channels
        self.status = "ready"
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.best_step: int | None = None
        self.best_scores: dict[str, float] = {}
        self.seed: int | None = config.seed
        self.num_classes: int | None = None
        self.class_names: list[str] | None = None
        self.normalization: Normalization | None = None
        self._model: UNet | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self._validation: ValidationTiles | None = None
        self._validation_source = "none"
        self._class_counts: np.ndarray | None = None
        self._class_weight: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------
    # Setup

    def _prepare(self) -> None:
        """Scan the data, choose the validation tiles, build model and sampler."""
        config, base = self.config, self._base_model
        normalization = run_normalization(base, config)
        self.normalization = normalization
        labelled = [
            scan_pair(
                pair,
                config.label_mode,
                self.layout.out_shape,
                normalization,
                allow_empty=pair.frame_of is not None,
            )
            for pair in self.pairs + self.validation_pairs
        ]
        n = len(self.pairs)
        self.pairs = labelled_frames(self.pairs, labelled[:n], config.label_mode)
        self.validation_pairs = labelled_frames(
            self.validation_pairs, labelled[n:], config.label_mode
        )
        counts = count_classes(self.pairs, config.label_mode)
        num_classes = run_num_classes(base, 3 if config.label_mode == "instance" else len(counts))
        counts = np.pad(counts, (0, num_classes - len(counts)))
        for pair in self.validation_pairs:
            top = len(pair.class_counts) if config.label_mode != "instance" else 0
            if top > num_classes:
                raise UserInputError(
                    f"{pair.labels_name} hold class {top - 1}, which the training labels do not "
                    f"have ({num_classes} classes)"
                )
        self.num_classes = num_classes
        self._class_counts = counts
        self._class_weight = class_weights(counts) if config.class_balance else None
        self.class_names = run_class_names(base, config, num_classes)

        if self.seed is None:
            self.seed = int(np.random.SeedSequence().generate_state(1)[0])
        split_seed, sample_seed, torch_seed = np.random.SeedSequence(self.seed).spawn(3)
        self._validation, self._validation_source = hold_out_validation(
            self.pairs,
            self.validation_pairs,
            config,
            self.layout,
            np.random.default_rng(split_seed),
        )
        self._sample_rng = np.random.default_rng(sample_seed)

        if base is not None:
            model = base
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch_seed.generate_state(1)[0]))
                model = UNet.from_config(
                    config.network.unet_config(self.channels, num_classes, config.ndim)
                )
        self._model = model
        self._sampler = TileSampler(
            self.pairs, self.layout, SampleSettings.from_config(config, self._class_weight)
        )

    # ------------------------------------------------------------------------------------------
    # Running

    def iter_run(self) -> Generator[Progress, None, UNet]:
        """Train, yielding one :class:`~napari_tiled_unet.events.Progress` per step.

        Yields
        ------
        Progress
            ``stage="train"``, ``done`` = steps done (0 once the data is scanned),
            ``total = config.iterations``, ``metrics={"loss": ...}`` plus, after a validation,
            ``val_iou``, ``val_f1``, ``val_loss`` (and ``val_object_f1`` in instance mode).

        Returns
        -------
        UNet
            :attr:`best_model`.

        Notes
        -----
        ``close()`` at a yield stops at once (``status == "stopped"``); the best model so far
        stays available as :attr:`best_model`. A Trainer runs once.
        """
        if self.status != "ready":
            raise RuntimeError(
                f"this Trainer has already run (status {self.status!r}); make a new one"
            )
        self.status = "running"
        config = self.config
        batches: BatchSource | None = None
        try:
            self._prepare()
            device = resolve_device(config.device)
            plan = StepPlan.for_run(config, device)
            amp = plan.amp
            model = plan.prepare_model(self._model).train()
            optimizer = make_optimizer(model, config)
            scaler = grad_scaler() if amp else None
            loss_fn = make_loss(config.loss)
            rng, batch_size, total = self._sample_rng, config.batch_size, config.iterations

            batches = BatchSource(
                lambda: plan.host_batch(self._sampler.batch(rng, batch_size)),
                ahead=prefetch_ahead(config.prefetch, device),
                limit=total,
            )
            n_val = len(self._validation) if self._validation is not None else 0
            yield Progress(
                "train",
                0,
                total,
                f"{len(self.pairs)} pair(s), {self.num_classes} classes, {n_val} validation "
                f"tile{'' if n_val == 1 else 's'} ({self._validation_source}), training on {device}",
            )
            nonfinite = 0
            for step in range(1, total + 1):
                images, targets, weights = batches.next()
                loss = self._train_step(
                    model, optimizer, scaler, loss_fn, device, amp, images, targets, weights
                )
                # With mixed precision a few overflowing steps are normal (the grad scaler
                # skips them); a run of them means the network itself diverged.
                nonfinite = 0 if math.isfinite(loss) else nonfinite + 1
                if nonfinite > (0 if scaler is None else MAX_SKIPPED_AMP_STEPS):
                    hint = "" if scaler is None else " or switch off TrainConfig.mixed_precision"
                    raise TrainingDiverged(
                        f"the training loss became {loss} at step {step}; lower "
                        f"TrainConfig.learning_rate (now {config.learning_rate}){hint}"
                    )
                self.step = step
                metrics = {"loss": loss}
                message = f"step {step}/{total}  loss {loss:.4f}"
                if step % config.validation_every == 0 or step == total:
                    if self._validation is not None:
                        scores = score_validation(
                            model,
                            self._validation,
                            config.label_mode,
                            self.num_classes,
                            batch_size=config.batch_size,
                            device=device,
                            amp=amp,
                        )
                        metrics.update(scores)
                        message += "  " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items())
                        self._keep_if_best(model, step, scores)
                    elif config.checkpoint_path:
                        save_model(self.best_model, config.checkpoint_path)
                self.history.append({"step": step, **metrics})
                yield Progress("train", step, total, message, metrics)
            self.status = "finished"
        except GeneratorExit:
            self.status = "stopped"
            logger.info("training stopped at step %d of %d", self.step, config.iterations)
            raise
        except BaseException:
            self.status = "failed"
            raise
        finally:
            if batches is not None:
                batches.close()
        best = self.best_model
        if config.checkpoint_path:
            save_model(best, config.checkpoint_path)
        return best

    def run(self) -> UNet:
        """Train to the end without progress events; returns :attr:`best_model`."""
        return run_to_completion(self.iter_run())

    _train_step = staticmethod(train_step)  # an attribute, so tests can make a step fail

    # ------------------------------------------------------------------------------------------
    # Validation and the best model

    def _keep_if_best(self, model: UNet, step: int, scores: dict[str, float]) -> None:
        key = self.config.best_metric
        if self.best_step is not None and not scores[key] > self.best_scores[key]:
            return
        self._best_state = {
            k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
        }
        self.best_step, self.best_scores = step, dict(scores)
        logger.info("step %d: new best %s %.4f", step, key, scores[key])
        if self.config.checkpoint_path:
            save_model(self.best_model, self.config.checkpoint_path)

    @property
    def best_model(self) -> UNet | None:
        """The best model so far (CPU, eval mode, with its :meth:`info`); a new object each call.

        "Best" is the highest ``config.best_metric`` on the validation tiles. Before the first
        validation, or without validation, it is the current model. None before the first
        optimizer step: a run stopped then has trained nothing to offer.
        """
        if self._model is None or self.step == 0:
            return None
        net = UNet.from_config(self._model.config)
        if self._best_state is not None:
            net.load_state_dict(self._best_state)
        else:
            net.load_state_dict({k: v.detach().cpu() for k, v in self._model.state_dict().items()})
        net.info = self.info()
        return net.eval()

    def info(self) -> ModelInfo:
        """What the model file stores about the trained model and this run."""
        config = self.config
        return run_info(
            config,
            base=None if self._base_model is None else self._base_model.info,
            normalization=self.normalization,
            class_names=self.class_names,
            in_channels=self.channels,
            selection=self._selection,
            source_channels=[
                p.channels if p.source_channels is None else p.source_channels
                for p in self.pairs + self.validation_pairs
            ],
            training={
                "config": config.to_dict(),
                "seed": self.seed,
                "steps_done": self.step,
                "status": self.status,
                "best_step": self.best_step,
                "best_scores": {k: float(v) for k, v in self.best_scores.items()},
                "best_metric": config.best_metric,
                "num_pairs": len(self.pairs),
                "validation": self._validation_source,
                "num_validation_tiles": 0 if self._validation is None else len(self._validation),
                "class_pixel_counts": [int(c) for c in self._class_counts],
                "class_weights": (
                    None if self._class_weight is None else [float(w) for w in self._class_weight]
                ),
                "fine_tuned_from": self._fine_tuned_from,
            },
        )


def iter_train(
    images: Any,
    labels: Any,
    config: TrainConfig | None = None,
    *,
    model: ModelSource = None,
    names: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Generator[Progress, None, UNet]:
    """Train a U-Net, yielding progress; the generator returns the best model.

    Equivalent to ``yield from Trainer(...).iter_run()``; see :class:`Trainer` for the
    parameters (``validation``, ``axes``, ``validation_axes``, ``channels`` as keywords),
    e.g. ``iter_train(rgb_images, labels, config, axes="YXC")``. To keep the best model
    after stopping early (``close()``), create the :class:`Trainer` yourself and read
    :attr:`Trainer.best_model`, or set ``config.checkpoint_path``.

    Yields
    ------
    Progress
        ``stage="train"``, ``done=step``, ``total=config.iterations``,
        ``metrics={"loss": ..., and after a validation "val_iou", "val_f1", "val_loss"}``.

    Returns
    -------
    UNet
        The best model by validation score, on CPU, in eval mode, with its ``info``
        (:class:`~napari_tiled_unet.model.info.ModelInfo`: normalization, label_mode,
        class_names, axes, tile_shape, channels and source_channels, training).
    """
    trainer = Trainer(images, labels, config, model=model, names=names, **kwargs)
    return (yield from trainer.iter_run())


def train(
    images: Any,
    labels: Any,
    config: TrainConfig | None = None,
    *,
    model: ModelSource = None,
    names: Sequence[Any] | None = None,
    **kwargs: Any,
) -> UNet:
    """Blocking form of :func:`iter_train`: same arguments, returns the best model.

    E.g. ``train(movie, movie_labels, config, axes="TCYX", channels=[0, 2])``.
    """
    return run_to_completion(iter_train(images, labels, config, model=model, names=names, **kwargs))
