"""Running ``ris`` in-process, and telling our output from what Ray forwards.

A driver's Ray prints its system processes' error logs on the driver's stderr,
e.g. ``(raylet) file_system_monitor.cc:116: /tmp/ray/... is over 95% full``
every 10 s while the disk under Ray's temp dir is that full. Such a line can
land in any command's captured stderr, in-process (the session's Ray) or in a
``ris`` subprocess (its own Ray); it is Ray's, not ours, so the one-line checks
leave it out (:func:`ours`). Lines of our code in Ray workers
(``(EmbedActor pid=...)``) stay.
"""

from __future__ import annotations

import re

import pytest

from ris_ray.cli import main

__all__ = ["ours", "run"]

#: A line Ray forwards from its raylet or GCS (colour codes optional, any node's ip).
RAY_SYSTEM_LINE = re.compile(r"^(?:\x1b\[[\d;]*m)?\((?:raylet|gcs_server)(?:, ip=[^)]*)?\)")


def ours(text: str) -> str:
    """``text`` without the lines Ray forwards from its own system processes."""
    return "".join(
        line for line in text.splitlines(keepends=True) if not RAY_SYSTEM_LINE.match(line)
    )


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``ris argv`` in this process: exit code, stdout and our stderr (:func:`ours`)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, ours(captured.err)
