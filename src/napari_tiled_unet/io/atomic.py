"""Writing files atomically: a temporary name in the target folder, renamed when complete.

Every temporary file or folder this process creates for an output is tracked until it is
published or removed, so that a face interrupted at an unlucky moment (a signal arriving
while a cleanup runs) can still remove what is left (:func:`remove_unfinished`), and can
say truthfully whether it did. Renames that must not be cut in half, and cleanups, run
:func:`uninterrupted`: SIGINT and SIGTERM wait until they are over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

#: Longest file name (in bytes) most file systems take.
NAME_MAX = 255
_RANDOM_CHARS = 8  # what tempfile adds between prefix and suffix

# The temporaries of this process not yet published or removed. A process-wide record, like
# tempfile's own, because a signal can end any of the writers that made them.
_unfinished: set[Path] = set()
_lock = threading.Lock()


class _Holding:
    """Whether :func:`uninterrupted` holds the signals now (it does not nest)."""

    active = False


def current_umask() -> int:
    """The process's file-mode creation mask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_prefix(name: str, suffix: str) -> str:
    """``".NAME."``, shortened so that ``.NAME.XXXXXXXX{suffix}`` fits in one file name.

    A legal destination name of up to 255 bytes must not fail because its temporary name,
    which adds a dot, a random part and ``suffix``, would be longer.
    """
    budget = NAME_MAX - _RANDOM_CHARS - len(os.fsencode(suffix)) - 2
    while len(os.fsencode(name)) > budget:
        name = name[:-1]
    return f".{name}."


def make_temporary_dir(directory: str | os.PathLike, name: str, suffix: str = ".tmp") -> Path:
    """A new hidden folder ``.NAME.XXXXXXXX{suffix}`` in ``directory``, tracked until
    :func:`forget_temporary` or :func:`remove_temporary`."""
    tmp = Path(
        tempfile.mkdtemp(prefix=temporary_prefix(name, suffix), suffix=suffix, dir=directory)
    )
    with _lock:
        _unfinished.add(tmp)
    return tmp


def forget_temporary(path: Path) -> None:
    """Stop tracking ``path`` (it was published under its final name)."""
    with _lock:
        _unfinished.discard(Path(path))


def remove_temporary(path: Path) -> None:
    """Remove the temporary file or folder ``path`` and stop tracking it once it is gone."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if not os.path.lexists(path):
        forget_temporary(path)


def remove_unfinished() -> list[Path]:
    """Remove every temporary still tracked; return those that could not be removed."""
    with _lock:
        left = sorted(_unfinished)
    for path in left:
        remove_temporary(path)
    return [p for p in left if os.path.lexists(p)]


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs; deliver a held one when it ends.

    For steps that must not stop half-way: renaming several outputs into place, removing
    temporary data. Only the main thread receives signals in Python; elsewhere this does
    nothing.
    """
    if threading.current_thread() is not threading.main_thread() or _Holding.active:
        yield
        return
    held: list[int] = []

    def hold(signum, frame) -> None:
        held.append(signum)

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signals}
    if None in previous.values():  # a handler set outside Python cannot be put back
        yield
        return
    _Holding.active = True
    try:
        for s in signals:
            signal.signal(s, hold)
        yield
    finally:
        for s in signals:
            signal.signal(s, previous[s])
        _Holding.active = False
        for signum in dict.fromkeys(held):  # each signal once, in arrival order
            if previous[signum] is not signal.SIG_IGN:
                signal.raise_signal(signum)


def _remove_new(path: Path) -> None:
    """Remove an output this call has just published (undoing a publication)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def publish_all(moves: Sequence[tuple[Path, Path]]) -> None:
    """Rename each finished temporary onto its destination: all of them, or none.

    Older outputs that must go first (a folder, or any output when several are published
    together) are moved into a hidden ``.NAME.XXXXXXXX.old`` folder beside them, and removed
    only once every new output is in place; on failure the new outputs are removed and the
    older ones put back. Signals wait until this is over. An older output that cannot be
    put back stays in its ``.old`` folder, recorded in the raised error's ``kept``.
    """
    with uninterrupted():
        held: list[tuple[Path, Path, Path]] = []  # (destination, holding folder, older output)
        published: list[Path] = []
        try:
            for tmp, path in moves:
                if os.path.lexists(path) and (path.is_dir() or len(moves) > 1):
                    holder = Path(
                        tempfile.mkdtemp(
                            prefix=temporary_prefix(path.name, ".old"),
                            suffix=".old",
                            dir=path.parent,
                        )
                    )
                    os.replace(path, holder / "previous")
                    held.append((path, holder, holder / "previous"))
                os.replace(tmp, path)
                forget_temporary(tmp)
                published.append(path)
        except OSError as err:
            for path in reversed(published):
                _remove_new(path)
            err.kept = {}
            for path, holder, older in reversed(held):
                try:
                    os.replace(older, path)
                except OSError:
                    err.kept[path] = older
                else:
                    shutil.rmtree(holder, ignore_errors=True)
            raise
        for _path, holder, _older in held:
            shutil.rmtree(holder, ignore_errors=True)


def check_file_destination(path: str | os.PathLike, example: str = "labels.tif") -> Path:
    """Raise unless a file can be created at ``path``: not a folder, in a folder that exists.

    Raises
    ------
    IsADirectoryError
        ``path`` is a folder (the message suggests ``path / example``).
    FileNotFoundError
        Its folder does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"output {path} is a folder; give a file name such as {path / example}"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file is created at once, so an unwritable destination fails before any work.
    On any error (or KeyboardInterrupt) the temporary file is removed and ``path`` is untouched.
    """
    path = check_file_destination(path)
    # The parent resolved once: a relative path must not change meaning if the working
    # folder moves while we write.
    path = Path(os.path.realpath(path.parent)) / path.name
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=temporary_prefix(path.name, ".tmp"), suffix=".tmp", dir=path.parent
        )
    except OSError as err:
        raise PermissionError(f"cannot write to {path.parent}: {err.strerror}") from None
    os.close(fd)
    tmp = Path(tmp)
    with _lock:
        _unfinished.add(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
        forget_temporary(tmp)
    finally:
        with uninterrupted():
            remove_temporary(tmp)
