"""The results file the HeLa/extra-image benchmarks write: title, the command, table, notes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def write_report(
    path: Path, title: str, script: str, extra: Sequence[Sequence[str]], text: str, notes: str
) -> None:
    """Write ``# title``, the command that made it (``python benchmarks/<script>`` with its
    ``--extra IMAGE MASKS`` pairs by file name), ``text`` and ``notes`` to ``path``."""
    options = "".join(f" --extra {Path(a).name} {Path(b).name}" for a, b in extra)
    path.write_text(f"# {title}\n\n`python benchmarks/{script}{options}`\n\n{text}\n\n{notes}")
