"""Files a command writes (``--plot``, ``--heatmap``, ``--geojson``, ``--csv``):
checked before any work, then written at exactly the path given.

:func:`check_output` refuses, in one line naming the option, a path that is
a directory, whose directory does not exist, or (for figures) whose
extension no figure format matches. :func:`save_figure` writes a figure at
exactly that path: the format comes from the extension, PNG when there is
none (matplotlib alone would append ``.png`` to such a name).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ris_ray.core.errors import InputError

__all__ = ["FIGURE_FORMATS", "check_output", "save_figure"]

#: Extensions matplotlib's Agg/vector backends write (``Figure.savefig``).
FIGURE_FORMATS = ("png", "pdf", "svg", "svgz", "jpg", "jpeg", "tif", "tiff", "webp", "eps", "ps")


def check_output(path: Path | str, option: str, *, figure: bool = False) -> Path:
    """``path`` if ``option`` can write a file there, else :class:`InputError`."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {path}: cannot write: it is a directory; give a file name")
    parent = p.parent
    if not parent.is_dir():
        raise InputError(
            f"{option} {path}: cannot write: directory {parent} does not exist; create it first"
        )
    if not os.access(parent, os.W_OK):
        raise InputError(f"{option} {path}: cannot write: directory {parent} is not writable")
    suffix = p.suffix.lower().lstrip(".")
    if figure and suffix and suffix not in FIGURE_FORMATS:
        raise InputError(
            f"{option} {path}: .{suffix} is not an image format; use one of "
            + ", ".join(f".{f}" for f in FIGURE_FORMATS)
        )
    return p


def save_figure(fig: Any, path: Path | str, option: str, dpi: int = 100) -> Path:
    """Save ``fig`` at exactly ``path`` (format from the extension, else PNG)."""
    p = check_output(path, option, figure=True)
    fmt = p.suffix.lower().lstrip(".") or "png"
    try:
        fig.savefig(p, format=fmt, dpi=dpi)
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write ({exc.strerror or exc})") from None
    return p
