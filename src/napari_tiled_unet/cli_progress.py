"""The command line's shared pieces: a tqdm bar per stage of an engine's Progress events, its
one-line errors and the ``--channels`` option."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.events import Progress

_UNITS = {"predict": "tile", "instances": "block"}


def progress_bar(events: Iterator[Progress], desc: str, postfix_keys: Sequence[str] = ()) -> Any:
    """Drive a tqdm bar from engine Progress events; return the generator's result.

    A new bar starts whenever the events' stage changes (e.g. "predict", then "instances"),
    named ``desc`` for the first stage and after the stage for later ones.
    """
    from tqdm import tqdm

    bar = None
    stage = None
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                return stop.value
            if bar is None or event.stage != stage:
                if bar is not None:
                    bar.close()
                bar = tqdm(
                    total=event.total,
                    desc=desc if stage is None else event.stage,
                    unit=_UNITS.get(event.stage, "it"),
                )
                stage = event.stage
            bar.update(event.done - bar.n)
            if event.warning:
                bar.write(f"napari-tiled-unet: warning: {event.warning}", file=sys.stderr)
            shown = {k: f"{event.metrics[k]:.3g}" for k in postfix_keys if k in event.metrics}
            if shown:
                bar.set_postfix(shown, refresh=False)
    finally:
        events.close()
        if bar is not None:
            bar.close()


class CommandError(UserInputError):
    """A user error to report as one line on stderr."""


def parse_channels_option(text: str | None) -> list[int] | None:
    """``--channels "0,2"`` -> ``[0, 2]``."""
    from napari_tiled_unet.axes import parse_channels

    try:
        channels = parse_channels(text)
    except ValueError as err:
        raise CommandError(f"--channels: {err}") from None
    if text is not None and not channels:
        raise CommandError("--channels needs at least one channel number, e.g. 0")
    return channels
