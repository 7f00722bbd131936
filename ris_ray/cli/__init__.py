"""The ``ris`` command line: a thin layer over the library.

One error boundary (:func:`main`): our exceptions and usage errors print one
line ``error: ...`` on stderr and exit 1, never a traceback. ``ris ingest``
exits 2 when some input files failed (the rest was ingested and committed).
Logging is configured here and nowhere else. The commands live in
:mod:`ris_ray.cli.ingest`, :mod:`ris_ray.cli.search` and
:mod:`ris_ray.cli.admin`, registered on :data:`ris_ray.cli.app.app` in help order.
"""

from __future__ import annotations

import sys

import typer

# isort: off
# Importing the command modules registers their commands, in this (help) order.
from ris_ray.cli import ingest, search, admin  # noqa: F401

# isort: on
from ris_ray.cli.app import app, err
from ris_ray.core.errors import RisError

try:  # typer >= 0.22 vendors its own click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import UsageError  # type: ignore[assignment]

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ris`` script: the one error boundary."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="ris", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except UsageError as exc:
        if not exc.format_message():  # `ris` alone: help was shown, nothing went wrong
            sys.exit(0)
        hint = f" (see `ris {exc.ctx.info_name} --help`)" if exc.ctx and exc.ctx.parent else ""
        err.print(f"error: {exc.format_message()}{hint}", markup=False)
        code = 1
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted", markup=False)
        code = 130
    except RisError as exc:
        err.print(f"error: {exc}", markup=False)
        code = getattr(exc, "exit_code", 1)  # StorageFullError: 2, the data is intact
    sys.exit(code if isinstance(code, int) else 0)
