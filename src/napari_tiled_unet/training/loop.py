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

import copy
import logging
import math
import os
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_tiled_unet.axes import ModelSpec
from napari_tiled_unet.config import UNetConfig
from napari_tiled_unet.device import resolve_device
from napari_tiled_unet.events import Progress, run_to_completion
from napari_tiled_unet.metrics import (
    ObjectMatch,
    confusion_matrix,
    f1_per_class,
    iou_per_class,
    match_objects,
    mean_score,
)
from napari_tiled_unet.model.geometry import UNetGeometry
from napari_tiled_unet.model.modelfile import load_model, save_model
from napari_tiled_unet.model.unet import UNet
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.training.augment import Augmentation
from napari_tiled_unet.training.config import TrainConfig
from napari_tiled_unet.training.loss import make_loss, weighted_cross_entropy
from napari_tiled_unet.training.sampling import (
    SampleSettings,
    TileLayout,
    TileSampler,
    TrainingPair,
    ValidationTiles,
    as_sequence,
    check_pair_size,
    choose_validation_blocks,
    count_classes,
    describe_pairs,
    load_validation_tiles,
    make_pairs,
    scan_pair,
    window_origin,
)
from napari_tiled_unet.training.targets import default_class_names
from napari_tiled_unet.training.weights import class_weights

logger = logging.getLogger(__name__)

#: Consecutive non-finite losses under mixed precision before training stops as diverged.
MAX_SKIPPED_AMP_STEPS = 20

ModelSource = UNet | str | os.PathLike | None


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
        ``config.label_mode`` says (see :class:`TrainConfig`).
    config : TrainConfig
        How to train.
    model : UNet, path-like or None
        None: a new U-Net from ``config`` (``base_channels``, ``depth``, ``padding``).
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
        model compatibility); problems in the pixel values (NaN, empty labels, a single class)
        are raised by the first ``next()`` of :meth:`iter_run`. Every message names the pair.

    Attributes
    ----------
    config : TrainConfig
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
        axes: str | Sequence[str | None] | None = None,
        validation_axes: str | Sequence[str | None] | None = None,
        channels: Sequence[int] | None = None,
    ):
        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        images = as_sequence(images, "images")
        labels = as_sequence(labels, "labels")
        if len(images) != len(labels):
            raise ValueError(
                f"got {len(images)} images but {len(labels)} label arrays; pass one labels "
                f"array per image"
            )
        if not images:
            raise ValueError("no training data: pass at least one (image, labels) pair")
        ndim = config.ndim
        described = describe_pairs(names, len(images))
        self._fine_tuned_from: str | None = None
        base = self._load_model(model)
        self._pair_options = dict(
            model=None if base is None else ModelSpec.of(base),
            channels=None if channels is None else [int(c) for c in channels],
        )
        if validation_axes is None and isinstance(axes, str):
            validation_axes = axes
        self.pairs = []
        for im, lab, (im_name, lab_name), ax in zip(
            images, labels, described, _per_image(axes, len(images), "axes"), strict=True
        ):
            self.pairs.extend(
                make_pairs(im, lab, im_name, lab_name, ndim, axes=ax, **self._pair_options)
            )
        self.validation_pairs = self._validation_pairs(validation, ndim, validation_axes)
        channels = self.pairs[0].channels
        for pair in self.pairs[1:] + self.validation_pairs:
            if pair.channels != channels:
                raise ValueError(
                    f"{pair.image_name} has {pair.channels} channel(s) but "
                    f"{self.pairs[0].image_name} has {channels}; all images need the same channels"
                )

        self._base_model = self._check_model(base, channels, ndim)
        if self._base_model is not None:
            geometry = self._base_model.geometry
        else:
            geometry = UNetGeometry.from_config(
                UNetConfig(
                    in_channels=channels,
                    num_classes=2,
                    depth=config.depth,
                    base_channels=config.base_channels,
                    padding=config.padding,
                    ndim=ndim,
                    anisotropic_levels=config.anisotropic_levels,
                )
            )
        try:
            out_shape = geometry.check_input_shape(config.tile_shape)
        except ValueError as err:
            raise ValueError(
                f"TrainConfig.tile_shape {config.tile_shape} does not suit a depth-"
                f"{geometry.depth} '{geometry.padding}' {ndim}D U-Net"
                + (
                    f" with {geometry.anisotropic_levels} anisotropic level(s)"
                    if geometry.anisotropic_levels
                    else ""
                )
                + f" ({geometry.describe()}; smallest input {geometry.min_input_shape}): {err}"
            ) from None
        uses_weights = config.loss in ("weighted_ce", "weighted_ce+dice")
        if uses_weights and config.w0 > 0 and config.label_mode != "sparse":
            margin = math.ceil(2 * config.sigma)
        else:
            margin = 1 if config.label_mode == "instance" else 0
        offsets = tuple(axis.output_offset for axis in geometry.axes)
        self.layout = TileLayout(config.tile_shape, out_shape, offsets, margin)
        for pair in self.pairs + self.validation_pairs:
            check_pair_size(pair, out_shape, config.tile_shape)

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

    def _validation_pairs(
        self, validation: Any, ndim: int, axes: str | Sequence[str | None] | None
    ) -> list[TrainingPair]:
        if validation is None:
            return []
        if hasattr(validation, "shape") or not isinstance(validation, Sequence):
            raise ValueError(
                "validation must be a list of (image, labels) or (image, labels, name) tuples"
            )
        pairs = []
        per_pair = _per_image(axes, len(validation), "validation_axes")
        for i, item in enumerate(validation):
            if not isinstance(item, Sequence) or len(item) not in (2, 3):
                raise ValueError(
                    f"validation[{i}] must be an (image, labels) or (image, labels, name) tuple, "
                    f"got {type(item).__name__}"
                )
            if len(item) == 3:
                ((im_name, lab_name),) = describe_pairs([item[2]], 1)
                im_name, lab_name = f"validation {im_name}", f"validation {lab_name}"
            else:
                im_name, lab_name = (
                    f"image of validation pair {i}",
                    f"labels of validation pair {i}",
                )
            pairs.extend(
                make_pairs(
                    item[0],
                    item[1],
                    im_name,
                    lab_name,
                    ndim,
                    axes=per_pair[i],
                    **self._pair_options,
                )
            )
        return pairs

    def _load_model(self, model: ModelSource) -> UNet | None:
        """The model to fine-tune (a copy), or None."""
        if model is None:
            return None
        if isinstance(model, str | os.PathLike):
            self._fine_tuned_from = str(Path(model))
            return load_model(model)
        if isinstance(model, UNet):
            self._fine_tuned_from = "UNet object"
            return copy.deepcopy(model).cpu()
        raise TypeError(
            f"model must be None, a UNet or a model file path, got {type(model).__name__}"
        )

    def _check_model(self, model: UNet | None, channels: int, ndim: int) -> UNet | None:
        """Raise a ValueError unless ``model`` can be fine-tuned on the pairs."""
        if model is None:
            return None
        if model.config.ndim != ndim:
            raise ValueError(
                f"the model to fine-tune is {model.config.ndim}D but tile_shape "
                f"{self.config.tile_shape} is {ndim}D"
            )
        if model.config.in_channels != channels:
            raise ValueError(
                f"the model to fine-tune takes {model.config.in_channels} input channel(s) but "
                f"{self.pairs[0].image_name} has {channels}; fine-tune with images of "
                f"{model.config.in_channels} channel(s) or train a new model"
            )
        stored_mode = model.metadata.get("label_mode")
        if stored_mode is not None and stored_mode != self.config.label_mode:
            raise ValueError(
                f"the model to fine-tune was trained with label_mode={stored_mode!r} but "
                f"TrainConfig.label_mode is {self.config.label_mode!r}; use the same mode"
            )
        if self.config.label_mode == "instance" and model.config.num_classes != 3:
            raise ValueError(
                f"instance training needs a 3-class model (background, interior, boundary); "
                f"the model to fine-tune has {model.config.num_classes} classes"
            )
        if "normalization" in model.metadata and self.config.normalization is not None:
            stored = Normalization.from_dict(model.metadata["normalization"])
            if stored != self.config.normalization:
                raise ValueError(
                    f"the model to fine-tune normalises its input with {stored} but "
                    f"TrainConfig.normalization is {self.config.normalization}; leave "
                    f"normalization=None to use the model's, or set it to the model's"
                )
        return model

    def _prepare(self) -> None:
        """Scan the data, choose the validation tiles, build model and sampler."""
        config = self.config
        if self._base_model is not None and "normalization" in self._base_model.metadata:
            normalization = Normalization.from_dict(self._base_model.metadata["normalization"])
        else:
            normalization = config.normalization or Normalization()
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
        self.pairs = _labelled_frames(self.pairs, labelled[:n], config.label_mode)
        self.validation_pairs = _labelled_frames(
            self.validation_pairs, labelled[n:], config.label_mode
        )
        counts = count_classes(self.pairs, config.label_mode)
        num_classes = 3 if config.label_mode == "instance" else len(counts)
        if self._base_model is not None:
            model_classes = self._base_model.config.num_classes
            if num_classes > model_classes:
                raise ValueError(
                    f"the labels hold {num_classes} classes but the model to fine-tune has "
                    f"{model_classes}; fine-tune with labels of at most {model_classes} classes "
                    f"or train a new model"
                )
            num_classes = model_classes
        counts = np.pad(counts, (0, num_classes - len(counts)))
        for pair in self.validation_pairs:
            top = len(pair.class_counts) if config.label_mode != "instance" else 0
            if top > num_classes:
                raise ValueError(
                    f"{pair.labels_name} hold class {top - 1}, which the training labels do not "
                    f"have ({num_classes} classes)"
                )
        self.num_classes = num_classes
        self._class_counts = counts
        self._class_weight = class_weights(counts) if config.class_balance else None
        names = config.class_names
        if names is None and self._base_model is not None:
            names = self._base_model.metadata.get("class_names")
        if names is None:
            names = default_class_names(config.label_mode, num_classes)
        if len(names) != num_classes:
            raise ValueError(
                f"TrainConfig.class_names has {len(names)} names but the network has "
                f"{num_classes} classes"
            )
        self.class_names = list(names)

        if self.seed is None:
            self.seed = int(np.random.SeedSequence().generate_state(1)[0])
        split_seed, sample_seed, torch_seed = np.random.SeedSequence(self.seed).spawn(3)
        self._choose_validation(np.random.default_rng(split_seed))
        self._sample_rng = np.random.default_rng(sample_seed)

        if self._base_model is not None:
            model = self._base_model
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch_seed.generate_state(1)[0]))
                model = UNet(
                    in_channels=self.channels,
                    num_classes=num_classes,
                    depth=config.depth,
                    base_channels=config.base_channels,
                    padding=config.padding,
                    ndim=config.ndim,
                    anisotropic_levels=config.anisotropic_levels,
                )
        self._model = model
        self._sampler = TileSampler(
            self.pairs,
            self.layout,
            SampleSettings(
                label_mode=config.label_mode,
                foreground_fraction=config.effective_foreground_fraction,
                class_weight=self._class_weight,
                use_weights=config.loss in ("weighted_ce", "weighted_ce+dice"),
                w0=config.w0,
                sigma=config.sigma,
                augmentation=Augmentation.from_config(config),
            ),
        )

    def _choose_validation(self, rng: np.random.Generator) -> None:
        config, out = self.config, self.layout.out_shape
        if self.validation_pairs:
            chosen = choose_validation_blocks(
                self.validation_pairs, config.max_validation_tiles, rng, keep_one=False
            )
            tiles = [
                (self.validation_pairs[i], window_origin(self.validation_pairs[i], b, out))
                for i, b in chosen
            ]
            self._validation_source = "held-out images"
        elif config.validation_fraction > 0:
            annotated = sum(
                int(np.count_nonzero(p.block_counts[:, 1:].sum(axis=1))) for p in self.pairs
            )
            wanted = min(
                config.max_validation_tiles, max(1, round(config.validation_fraction * annotated))
            )
            chosen = choose_validation_blocks(self.pairs, wanted, rng, keep_one=True)
            if not chosen:
                logger.warning(
                    "only one tile-sized block of the training labels is annotated: nothing can "
                    "be held out for validation, so the last model is kept. Annotate more, "
                    "use smaller tiles, or pass validation pairs."
                )
            tiles = []
            for i, b in chosen:
                pair = self.pairs[i]
                origin = window_origin(pair, b, out)
                pair.held_out.append(origin)
                pair.held_out_blocks.append(b)
                tiles.append((pair, origin))
            self._validation_source = "held-out tiles" if tiles else "none"
        else:
            tiles = []
        if tiles:
            self._validation = load_validation_tiles(tiles, self.layout, config.label_mode)

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
        executor: ThreadPoolExecutor | None = None
        try:
            self._prepare()
            device = resolve_device(config.device)
            amp = bool(config.mixed_precision and device.type == "cuda")
            model = self._model.to(device).train()
            optimizer = self._make_optimizer(model)
            scaler = _grad_scaler() if amp else None
            loss_fn = make_loss(config.loss)
            rng, batch_size, total = self._sample_rng, config.batch_size, config.iterations

            def next_batch():
                return self._sampler.batch(rng, batch_size)

            executor = ThreadPoolExecutor(1, "tile-sampler") if config.prefetch else None
            pending: Future | None = executor.submit(next_batch) if executor else None
            n_val = len(self._validation) if self._validation is not None else 0
            yield Progress(
                "train",
                0,
                total,
                f"{len(self.pairs)} pair(s), {self.num_classes} classes, {n_val} validation "
                f"tiles ({self._validation_source}), training on {device}",
            )
            nonfinite = 0
            for step in range(1, total + 1):
                if pending is not None:
                    images, targets, weights = pending.result()
                    pending = executor.submit(next_batch) if step < total else None
                else:
                    images, targets, weights = next_batch()
                loss = self._train_step(
                    model, optimizer, scaler, loss_fn, device, amp, images, targets, weights
                )
                # With mixed precision a few overflowing steps are normal (the grad scaler
                # skips them); a run of them means the network itself diverged.
                nonfinite = 0 if math.isfinite(loss) else nonfinite + 1
                if nonfinite > (0 if scaler is None else MAX_SKIPPED_AMP_STEPS):
                    hint = "" if scaler is None else " or switch off TrainConfig.mixed_precision"
                    raise FloatingPointError(
                        f"the training loss became {loss} at step {step}; lower "
                        f"TrainConfig.learning_rate (now {config.learning_rate}){hint}"
                    )
                self.step = step
                metrics = {"loss": loss}
                message = f"step {step}/{total}  loss {loss:.4f}"
                if step % config.validation_every == 0 or step == total:
                    if self._validation is not None:
                        scores = self._validate(model, device, amp)
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
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
        best = self.best_model
        if config.checkpoint_path:
            save_model(best, config.checkpoint_path)
        return best

    def run(self) -> UNet:
        """Train to the end without progress events; returns :attr:`best_model`."""
        return run_to_completion(self.iter_run())

    def _make_optimizer(self, model: UNet) -> torch.optim.Optimizer:
        config = self.config
        if config.optimizer == "sgd":
            return torch.optim.SGD(
                model.parameters(),
                lr=config.learning_rate,
                momentum=config.momentum,
                weight_decay=config.weight_decay,
            )
        return torch.optim.Adam(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )

    @staticmethod
    def _train_step(
        model, optimizer, scaler, loss_fn, device, amp, images, targets, weights
    ) -> float:
        x = torch.from_numpy(images).to(device, non_blocking=True)
        t = torch.from_numpy(targets).to(device, non_blocking=True)
        w = torch.from_numpy(weights).to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(x)
        loss = loss_fn(logits, t, w)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return float(loss.detach())

    # ------------------------------------------------------------------------------------------
    # Validation and the best model

    def _validate(self, model: UNet, device: torch.device, amp: bool) -> dict[str, float]:
        """Scores of ``model`` on the validation tiles."""
        from napari_tiled_unet.postprocess import labels_from_probabilities

        val, mode, num_classes = self._validation, self.config.label_mode, self.num_classes
        confusion = np.zeros((num_classes, num_classes), np.int64)
        objects = ObjectMatch(0, 0, 0)
        loss_sum, weight_sum = 0.0, 0.0
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(val), self.config.batch_size):
                    batch = slice(start, start + self.config.batch_size)
                    x = torch.from_numpy(val.images[batch]).to(device)
                    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                        logits = model(x)
                    logits = logits.float()
                    targets = torch.from_numpy(val.targets[batch]).to(device)
                    mask = torch.from_numpy(val.annotated[batch]).to(device).float()
                    loss_sum += float(weighted_cross_entropy(logits, targets, mask)) * float(
                        mask.sum()
                    )
                    weight_sum += float(mask.sum())
                    probabilities = torch.softmax(logits, dim=1).cpu().numpy()
                    prediction = probabilities.argmax(axis=1)
                    confusion += confusion_matrix(
                        val.targets[batch], prediction, num_classes, val.annotated[batch]
                    )
                    if mode == "instance":
                        for p, truth in zip(probabilities, val.instances[batch], strict=True):
                            objects = objects + match_objects(
                                truth, labels_from_probabilities(p, "instance")
                            )
        finally:
            model.train()
        scores = {}
        if mode == "instance":
            # Object (interior or boundary) versus background.
            binary = np.array(
                [
                    [confusion[0, 0], confusion[0, 1:].sum()],
                    [confusion[1:, 0].sum(), confusion[1:, 1:].sum()],
                ]
            )
            scores["val_iou"] = mean_score(iou_per_class(binary), [1])
            scores["val_f1"] = mean_score(f1_per_class(binary), [1])
            scores["val_object_f1"] = float(objects.f1)
        else:
            classes = slice(1, None) if mode == "semantic" else None
            scores["val_iou"] = mean_score(iou_per_class(confusion), classes)
            scores["val_f1"] = mean_score(f1_per_class(confusion), classes)
        scores["val_loss"] = loss_sum / weight_sum if weight_sum else 0.0
        return scores

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
        """The best model so far, on CPU in eval mode, with ``metadata`` filled; a new object each time.

        "Best" is the highest ``config.best_metric`` on the validation tiles. Before the first
        validation, or without validation, it is the current model. None before training
        started.
        """
        if self._model is None:
            return None
        net = UNet.from_config(self._model.config)
        if self._best_state is not None:
            net.load_state_dict(self._best_state)
        else:
            net.load_state_dict({k: v.detach().cpu() for k, v in self._model.state_dict().items()})
        net.metadata = self.metadata()
        return net.eval()

    def metadata(self) -> dict[str, Any]:
        """What the model file stores about this run: plain data only."""
        config = self.config
        previous = dict(self._base_model.metadata) if self._base_model is not None else {}
        previous.pop("training", None)
        axes = "ZYX"[-config.ndim :]
        return {
            **previous,
            "normalization": self.normalization.to_dict(),
            "label_mode": config.label_mode,
            "class_names": list(self.class_names),
            "axes": ("C" + axes) if self.channels > 1 else axes,
            **self._selection_metadata(previous),
            "tile_shape": list(config.tile_shape),
            "training": {
                "config": config.to_dict(),
                "seed": self.seed,
                "steps_done": self.step,
                "status": self.status,
                "best_step": self.best_step,
                "best_scores": {k: float(v) for k, v in self.best_scores.items()},
                "best_metric": config.best_metric,
                "num_pairs": len(self.pairs),
                "validation": self._validation_source,
                "num_validation_tiles": len(self._validation)
                if self._validation is not None
                else 0,
                "class_pixel_counts": [int(c) for c in self._class_counts],
                "class_weights": (
                    None if self._class_weight is None else [float(w) for w in self._class_weight]
                ),
                "fine_tuned_from": self._fine_tuned_from,
            },
        }

    def _selection_metadata(self, previous: dict[str, Any]) -> dict[str, Any]:
        """``channels`` and ``source_channels`` for the model file.

        The selection given to this run, with the training images' channel count (None if
        they differ); without one, a fine-tuned model keeps its own (it still reads the same
        channels), and a new model stores None.
        """
        selection = self._pair_options["channels"]
        if selection is None:
            return {
                "channels": previous.get("channels"),
                "source_channels": previous.get("source_channels"),
            }
        pairs = self.pairs + self.validation_pairs
        counts = {p.channels if p.source_channels is None else p.source_channels for p in pairs}
        return {
            "channels": list(selection),
            "source_channels": counts.pop() if len(counts) == 1 else None,
        }


def _grad_scaler():
    """A CUDA gradient scaler (``torch.amp`` from torch 2.3, ``torch.cuda.amp`` before)."""
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


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
    e.g. ``iter_train(rgb_images, labels, config, axes="YXC")``. To keep the best model after stopping early (``close()``), create the
    :class:`Trainer` yourself and read :attr:`Trainer.best_model`, or set
    ``config.checkpoint_path``.

    Yields
    ------
    Progress
        ``stage="train"``, ``done=step``, ``total=config.iterations``,
        ``metrics={"loss": ..., and after a validation "val_iou", "val_f1", "val_loss"}``.

    Returns
    -------
    UNet
        The best model by validation score, on CPU, in eval mode, with ``metadata``
        (normalization, label_mode, class_names, axes, tile_shape, channels and
        source_channels, training).
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


def _labelled_frames(
    pairs: list[TrainingPair], labelled: list[bool], label_mode: str
) -> list[TrainingPair]:
    """The pairs to train on, given which hold non-zero labels.

    The frames (planes, time points) of one image may be unlabelled as long as one of them is
    labelled: in "sparse" mode an unlabelled frame carries no annotation and is left out; in
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
            hint = {
                "semantic": "paint at least one non-background (>0) class",
                "instance": "paint at least one object (id > 0)",
                "sparse": "paint a few strokes of each class (0 means not annotated)",
            }[label_mode]
            raise ValueError(
                f"{labels_name} are empty (all 0) in every plane; {hint}, or leave this pair out"
            )
    if label_mode != "sparse":
        return pairs
    return [pair for pair, has_labels in zip(pairs, labelled, strict=True) if has_labels]


def _per_image(axes: Any, count: int, what: str) -> list[str | None]:
    """One layout (or None) per image from None, one string, or a sequence of them."""
    if axes is None or isinstance(axes, str):
        return [axes] * count
    axes = list(axes)
    if len(axes) != count:
        raise ValueError(
            f"{what} must be one string or one entry per image ({count}), got {len(axes)}"
        )
    return axes
