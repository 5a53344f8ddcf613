"""Where a job may read and write: one rule for the command line, the widgets and the API.

Every input and output path of a job is resolved before any work: symlinks and ``..`` by
:func:`os.path.realpath`, hard links and other names of one file by its device and inode. An
output may not be, hold or lie inside an input, the model file or another output of the same
run; an input must be a regular file (a FIFO or a device would block or never end). What this
package did not write is never deleted: an existing ``.zarr`` folder is replaced only if it
is one of its own outputs (see :func:`napari_tiled_unet.io.store.check_output_path`).

:func:`plan_predict` turns the command line's inputs and outputs into one job per input
image, with output names that never collide (``x.tif`` and ``x.tiff``, or ``a/img.tif`` and
``b/img.tif``, get names of their own).
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.io.atomic import check_file_destination

#: What a batch run reads from a folder.
TIFF_INPUTS = (".tif", ".tiff")

PathLike = str | os.PathLike


def check_input_file(path: PathLike, what: str = "input file") -> Path:
    """Return ``path`` if it names a regular file; otherwise raise a clear error.

    Only ``stat`` is called, so a FIFO or device is refused without being opened (opening a
    FIFO blocks until someone writes to it).

    Raises
    ------
    UserInputError
        For an empty path, a folder, or anything but a regular file.
    FileNotFoundError
        If nothing is there.
    """
    text = os.fspath(path)
    if not text:
        raise UserInputError(f"the {what} path is empty; give a file name")
    try:
        mode = os.stat(text).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {text}") from None
    except OSError as err:
        raise UserInputError(f"cannot read the {what} {text}: {err.strerror}") from None
    if stat.S_ISDIR(mode):
        raise UserInputError(f"the {what} {text} is a folder; give a file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device or socket"
        raise UserInputError(
            f"the {what} {text} is not a regular file but {kind}; give a file saved on disk"
        )
    return Path(text)


@dataclass(frozen=True)
class _Place:
    """A path of a job, resolved: how messages name it, and its keys (resolved path, and
    device and inode where it exists) and the keys of the folders above it."""

    what: str
    path: Path
    real: Path
    keys: frozenset
    above: frozenset

    @classmethod
    def of(cls, what: str, path: PathLike, stats: dict) -> _Place:
        real = Path(os.path.realpath(os.fspath(path)))
        above = set()
        for folder in real.parents:
            above |= _keys(folder, stats)
        return cls(what, Path(path), real, frozenset(_keys(real, stats)), frozenset(above))


def _keys(real: Path, stats: dict) -> set:
    """``real`` itself and, where it exists, its (device, inode)."""
    if real not in stats:
        try:
            info = os.stat(real)
            stats[real] = (info.st_dev, info.st_ino)
        except OSError:
            stats[real] = None
    ident = stats[real]
    return {str(real)} if ident is None else {str(real), ident}


def check_job_paths(
    inputs: Iterable[tuple[str, PathLike | None]], outputs: Iterable[tuple[str, PathLike | None]]
) -> None:
    """Refuse any output that is, holds or lies inside an input or another output.

    Parameters
    ----------
    inputs, outputs : iterable of (str, path-like or None)
        How messages name each path (e.g. ``"input file"``, ``"model file"``,
        ``"probabilities output"``) and the path; None entries are skipped.

    Raises
    ------
    UserInputError
        Naming both paths and what to do, before anything is read or written.
    """
    stats: dict = {}
    placed: dict = {}  # key -> the place it belongs to
    under: dict = {}  # key of a folder -> a place inside it
    for what, path in inputs:
        if path is not None:
            _add(_Place.of(what, path, stats), placed, under)
    for what, path in outputs:
        if path is None:
            continue
        out = _Place.of(what, path, stats)
        same = next((placed[k] for k in out.keys if k in placed), None)
        if same is not None:
            named = "" if same.path == out.path else f" {same.path}"
            alias = "" if same.real == out.real else " (the same file under another name)"
            raise UserInputError(
                f"{what} {out.path} is the {same.what}{named}{alias}; choose another name"
            )
        holds = next((under[k] for k in out.keys if k in under), None)
        if holds is not None:
            raise UserInputError(
                f"{what} {out.path} holds the {holds.what} {holds.path}: writing it would "
                f"replace that folder and delete the {holds.what}; choose another name"
            )
        inside = next((placed[k] for k in out.above if k in placed), None)
        if inside is not None:
            raise UserInputError(
                f"{what} {out.path} lies inside the {inside.what} {inside.path}; choose "
                f"another place for the {what}"
            )
        _add(out, placed, under)


def _add(place: _Place, placed: dict, under: dict) -> None:
    for key in place.keys:
        placed.setdefault(key, place)
    for key in place.above:
        under.setdefault(key, place)


def check_training_paths(
    output: PathLike,
    *,
    images: Sequence[PathLike],
    labels: Sequence[PathLike],
    validation_images: Sequence[PathLike] = (),
    validation_labels: Sequence[PathLike] = (),
    resume: PathLike | None = None,
) -> Path:
    """Check a training run's files before it starts; return the model file to write.

    Every image, labels file and the model to fine-tune must be a regular file, and the
    output model file must not be any of them, nor a folder.

    Raises
    ------
    UserInputError, FileNotFoundError
        Naming the path and what to do.
    """
    inputs = [
        *(("training image", p) for p in images),
        *(("training labels", p) for p in labels),
        *(("validation image", p) for p in validation_images),
        *(("validation labels", p) for p in validation_labels),
        *((("--resume model", resume),) if resume is not None else ()),
    ]
    for what, path in inputs:
        check_input_file(path, what)
    if not os.fspath(output):
        raise UserInputError("the output path is empty; give a model file name such as model.pt")
    try:
        out = check_file_destination(output, example="model.pt")
    except OSError as err:
        raise UserInputError(str(err)) from None
    if not os.access(out.parent, os.W_OK):
        raise UserInputError(f"cannot write to {out.parent}: permission denied")
    check_job_paths(inputs, [("output", out)])
    return out


@dataclass(frozen=True)
class PredictJob:
    """One input image of a prediction run and where its results go."""

    image: Path
    output: Path
    probabilities: Path | None = None

    def finished(self) -> bool:
        """Whether every output of this input exists (a batch rerun skips it)."""
        return self.output.exists() and (self.probabilities is None or self.probabilities.exists())


@dataclass(frozen=True)
class PredictPlan:
    """The jobs of a prediction run; ``batch``: several inputs or a folder, so that an
    input whose outputs exist is skipped and a failing input does not stop the others."""

    jobs: tuple[PredictJob, ...]
    batch: bool


def plan_predict(
    inputs: Sequence[PathLike],
    output: PathLike,
    probabilities: PathLike | None = None,
    fmt: str = "tif",
    model: PathLike | None = None,
) -> PredictPlan:
    """One job per input image, every path checked, before any work.

    With one input file, ``output`` and ``probabilities`` are its files. With several inputs
    or a folder, they are folders (created if needed) that get ``NAME_labels.FMT`` and
    ``NAME_probabilities.FMT`` per input, ``NAME`` the input's stem, or where stems collide
    (case-insensitively) its file name, then its folder's name and file name, then a number.
    Files in a folder that are outputs of this plan (an earlier run's) are not inputs.

    Raises
    ------
    UserInputError
        For an empty path, an empty folder, an output that is a file where a folder is
        needed, or an output that is, holds or lies inside an input or the model.
    """
    if not inputs:
        raise UserInputError("give at least one input image or folder")
    if any(not os.fspath(item) for item in inputs):
        raise UserInputError('an input path is empty (""); give a TIFF file or a folder')
    files, batch = _gather_inputs(inputs)
    model_place = [("model file", model)]
    if not batch:
        check_input_file(files[0])
        probs = None if probabilities is None else Path(probabilities)
        job = PredictJob(files[0], Path(output), probs)
        outputs = [("output", job.output), ("probabilities output", probs)]
        check_job_paths([("input file", job.image), *model_place], outputs)
        return PredictPlan((job,), False)
    for folder in (output, probabilities):
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise UserInputError(
                "with several inputs or a folder, --output and --probabilities name folders; "
                f"{folder} is a file"
            )
    while True:
        jobs = _batch_jobs(files, Path(output), probabilities, fmt)
        # Outputs of an earlier run in the same folder are not inputs.
        produced = {
            os.path.realpath(p)
            for job in jobs
            for p in (job.output, job.probabilities)
            if p is not None
        }
        kept = [f for f in files if os.path.realpath(f) not in produced]
        if len(kept) == len(files):
            break
        files = kept
    outputs = [
        (what, path)
        for job in jobs
        for what, path in (("output", job.output), ("probabilities output", job.probabilities))
    ]
    check_job_paths([*(("input file", f) for f in files), *model_place], outputs)
    for folder in (output, probabilities):
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
    return PredictPlan(tuple(jobs), True)


def _gather_inputs(paths: Sequence[PathLike]) -> tuple[list[Path], bool]:
    """The input files (each once), and whether this is a batch run (several inputs or a folder)."""
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in TIFF_INPUTS and not p.name.startswith(".")
            )
            if not found:
                raise UserInputError(f"folder {path} holds no .tif or .tiff files")
            files.extend(found)
        else:
            files.append(path)
    batch = len(paths) > 1 or any(Path(p).is_dir() for p in paths)
    seen: set[str] = set()
    unique = []
    for path in files:  # the same file named twice (or in a folder given too) runs once
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique, batch


def _batch_jobs(
    files: Sequence[Path], output: Path, probabilities: PathLike | None, fmt: str
) -> list[PredictJob]:
    names = output_names(files)
    probs = None if probabilities is None else Path(probabilities)
    return [
        PredictJob(
            image,
            output / f"{names[image]}_labels.{fmt}",
            None if probs is None else probs / f"{names[image]}_probabilities.{fmt}",
        )
        for image in files
    ]


# How colliding inputs' outputs are named instead of by the stem, in order of preference.
_NAMINGS = (
    lambda p: p.name,
    lambda p: f"{p.parent.name}_{p.stem}",
    lambda p: f"{p.parent.name}_{p.name}",
)


def output_names(files: Sequence[Path]) -> dict[Path, str]:
    """A name per input file for its outputs, distinct even ignoring case.

    The stem (``img``). Inputs whose stems collide get the first of: the file name
    (``img.tiff``), the folder's name and the stem (``a_img``), the folder's name and the file
    name, that tells them apart; else the file name and a number (``x.tif-2``).

    Raises
    ------
    UserInputError
        If names still collide (an input literally named like another's numbered name).
    """
    names = {f: f.stem for f in files}
    for _ in range(len(files)):
        clashes = _clashes(names)
        if not clashes:
            return names
        for group in clashes:
            for naming in _NAMINGS:
                found = {f: naming(f) for f in group}
                if not _clashes(found):
                    break
            else:
                found = {f: f.name for f in group}
                for same in _clashes(found):
                    for number, f in enumerate(sorted(same, key=str)[1:], start=2):
                        found[f] = f"{f.name}-{number}"
            names.update(found)
    clashes = _clashes(names)
    if clashes:
        listed = "; ".join(", ".join(str(f) for f in group) for group in clashes)
        raise UserInputError(
            f"these inputs would get the same output name: {listed}; rename one of them or "
            "run them separately"
        )
    return names


def _clashes(names: dict[Path, str]) -> list[list[Path]]:
    groups = defaultdict(list)
    for f, name in names.items():
        groups[name.casefold()].append(f)
    return [group for group in groups.values() if len(group) > 1]


def remove_unfinished_outputs() -> list[Path]:
    """After an interruption: remove the temporary outputs this process left; return the
    paths that could not be removed (a face then names them)."""
    from napari_tiled_unet.io.store import remove_unfinished_outputs as remove

    return remove()
