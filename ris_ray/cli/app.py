"""The ``ris`` app and what its commands share: consoles, options, parsers.

Commands live one module per stage (:mod:`ris_ray.cli.ingest`,
:mod:`ris_ray.cli.search`, :mod:`ris_ray.cli.admin`) and register on
:data:`app` when :mod:`ris_ray.cli` imports them.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

from ris_ray.core.errors import InputError

__all__ = ["EXIT_PARTIAL", "DbOpt", "LockWaitOpt", "app", "err", "out", "parse_window"]

app = typer.Typer(
    name="ris",
    help="Rapid image search over GeoTIFF tiles: ingest with Ray, query with Lance.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True, markup=False)  # paths are hostile text
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

EXIT_PARTIAL = 2

DbOpt = Annotated[str, typer.Option("--db", help="Lance dataset path or URI.")]
LockWaitOpt = Annotated[
    float,
    typer.Option(help="Seconds to wait for another writer of the same --db (0: refuse)."),
]


def parse_window(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        col, row, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--window {text!r}: expected COL,ROW,WIDTH,HEIGHT in pixels") from None
    if col < 0 or row < 0 or w < 1 or h < 1:
        raise InputError(f"--window {text!r}: COL,ROW must be >= 0 and WIDTH,HEIGHT >= 1")
    return col, row, w, h


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
