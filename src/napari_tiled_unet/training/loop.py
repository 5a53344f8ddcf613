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
from collections import deque
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch

from napari_tiled_unet.axes import ModelSpec
from napari_tiled_unet.errors import UserInputError
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
    fine_tune_config,
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
from napari_tiled_unet.training.optim import train_step
from napari_tiled_unet.training.pairs import check_pair_size
from napari_tiled_unet.training.record import run_info
from napari_tiled_unet.training.sampler import SampleSettings, TileLayout, TileSampler
from napari_tiled_unet.training.scan import count_classes, scan_pair
from napari_tiled_unet.training.session import RunState, WeightSnapshots
from napari_tiled_unet.training.validation import (
    ValidationTiles,
    hold_out_validation,
    score_validation,
)
from napari_tiled_unet.training.weights import class_weights

logger = logging.getLogger(__name__)


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
        Resolved: label mode (:attr:`label_mode` says why), fine-tuning rate (``fine_tuning``).
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
        self.config, self.fine_tuning = fine_tune_config(self.config, self._base_model)
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
        self._state: RunState | None = None
        self._label_changes: deque = deque()
        #: Weights copied between steps for another thread (:meth:`WeightSnapshots.take`).
        self.snapshots = WeightSnapshots()

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
            self.pairs,
            self.layout,
            SampleSettings.from_config(config, self._class_weight, num_classes),
            changes=self._label_changes,
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
        stays available as :attr:`best_model`. A Trainer runs once; :meth:`iter_continue`
        trains on after a Stop or the end.
        """
        if self.status != "ready":
            raise RuntimeError(
                f"this Trainer has already run (status {self.status!r}); make a new one"
            )
        return (yield from self._iter_steps(self.config.iterations))

    def iter_continue(self, iterations: int) -> Generator[Progress, None, UNet]:
        """Train ``iterations`` more steps after a Stop or the end of :meth:`iter_run`.

        The same optimizer (Adam's moments and step counts), sampler, random stream,
        validation tiles and best model carry on; the step counter continues (``done`` goes
        from :attr:`step` to ``step + iterations``, the ``total``).

        Raises
        ------
        RuntimeError
            If the Trainer has not run, is running, or failed.
        """
        if self.status not in ("stopped", "finished") or self._state is None:
            raise RuntimeError(
                f"only a stopped or finished run can continue (status {self.status!r})"
            )
        if int(iterations) < 1:
            raise UserInputError(f"iterations must be at least 1, got {iterations!r}")
        return (yield from self._iter_steps(self.step + int(iterations)))

    def _iter_steps(self, total: int) -> Generator[Progress, None, UNet]:
        """Steps ``self.step + 1`` to ``total`` (preparing the run first if it is new)."""
        self.status = "running"
        config = self.config
        try:
            if self._state is None:
                self._prepare()
                self._state = RunState(self._model, config)
            state = self._state
            model, device, amp = state.model, state.device, state.amp
            self.snapshots.begin(state.offered)
            rng, batch_size, first = self._sample_rng, config.batch_size, self.step + 1
            step_with = (model, state.optimizer, state.scaler, state.loss_fn, device, amp)

            def draw():
                return self._sampler.batch(rng, batch_size)

            n_val = len(self._validation) if self._validation is not None else 0
            yield Progress(
                "train",
                self.step,
                total,
                f"{len(self.pairs)} pair(s), {self.num_classes} classes, {n_val} validation "
                f"tile{'' if n_val == 1 else 's'} ({self._validation_source}), training on {device}"
                + (f", continuing from step {self.step}" if first > 1 else ""),
            )
            with state.batches(draw, total - self.step) as next_batch:
                for step in range(first, total + 1):
                    images, targets, weights = next_batch()
                    loss = self._train_step(*step_with, images, targets, weights)
                    state.after_step()
                    self.snapshots.serve()
                    state.check_loss(loss, step)
                    self.step = step
                    metrics = {"loss": loss}
                    message = f"step {step}/{total}  loss {loss:.4f}"
                    if step % config.validation_every == 0 or step == total:
                        if self._validation is not None:
                            scores = score_validation(
                                state.offered,
                                self._validation,
                                config.label_mode,
                                self.num_classes,
                                batch_size=config.batch_size,
                                device=device,
                                amp=amp,
                            )
                            metrics.update(scores)
                            message += "  " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items())
                            self._keep_if_best(state.offered, step, scores)
                        elif config.checkpoint_path:
                            save_model(self.best_model, config.checkpoint_path)
                    self.history.append({"step": step, **metrics})
                    yield Progress("train", step, total, message, metrics)
            self.status = "finished"
        except GeneratorExit:
            self.status = "stopped"
            logger.info("training stopped at step %d of %d", self.step, total)
            raise
        except BaseException:
            self.status = "failed"
            raise
        finally:
            self.snapshots.release()
        best = self.best_model
        if config.checkpoint_path:
            save_model(best, config.checkpoint_path)
        return best

    def labels_changed(self, labels: Any, start: Sequence[int], stop: Sequence[int]) -> int:
        """Queue a box ``labels[start:stop]`` painted while the run trains (thread-safe, cheap).

        The sampler re-counts the touched blocks before its next batch and favours the new
        labels for a while (:class:`~napari_tiled_unet.training.sampler.TileSampler`); the
        validation tiles, read at the start, and held-out windows stay as they were.
        ``labels`` must be an array given to the Trainer and read as one image (frames of a
        stack are not followed). Returns how many training pairs the box was queued for.
        """
        queued = 0
        for index, pair in enumerate(self.pairs):
            if pair.labels is labels and pair.frame_of is None:
                self._label_changes.append((index, tuple(start), tuple(stop)))
                queued += 1
        return queued

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
        optimizer step: a run stopped then has trained nothing to offer. While the run steps
        in another thread, use :meth:`best_snapshot`.
        """
        return self.model_of(self._best_state)

    def best_snapshot(self, timeout: float = 60.0) -> UNet | None:
        """:attr:`best_model`, safe to call from another thread while the run steps: the kept
        best, else the weights copied between two steps (:attr:`snapshots`)."""
        state = self._best_state
        if state is None and self.step > 0:
            state = self.snapshots.take(timeout)
        return self.model_of(state) if state is not None else None

    def model_of(self, state: dict[str, torch.Tensor] | None = None) -> UNet | None:
        """A new network (CPU, eval mode, with :meth:`info`) holding ``state`` (e.g. from
        :meth:`WeightSnapshots.take`); None: the current weights. None before the first step."""
        if self._model is None or self.step == 0:
            return None
        net = UNet.from_config(self._model.config)
        if state is None:
            offered = self._model if self._state is None else self._state.offered
            state = {k: v.detach().cpu() for k, v in offered.state_dict().items()}
        net.load_state_dict(state)
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
            pairs=self.pairs,
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
