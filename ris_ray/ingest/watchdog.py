"""Kill an embedded Ray node's processes when its driver goes away.

Started by :func:`ris_ray.ingest.raylocal.start` as ``python -m ris_ray.ingest.watchdog PID...``
with the node's process ids (GCS, raylet, ...). Its stdin is a pipe whose
write end only the driver holds, so EOF on stdin means the driver exited or
was killed (even with SIGKILL). Until then it records, every
``POLL_S`` seconds, the node processes and all their descendants (the
dashboard and runtime-env agents, workers) as ``(pid, create_time)``; after
EOF it terminates every recorded process that still has the same start time
(a reused PID is never touched), then kills what is left after ``GRACE_S``.
Only psutil is imported: it starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys

import psutil

__all__ = ["GRACE_S", "POLL_S", "kill_recorded", "main", "record"]

POLL_S = 1.0
GRACE_S = 2.0


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def record(roots: dict[int, float], seen: dict[int, float]) -> None:
    """Add the live ``roots`` (pid -> create time; a reused pid is not a root)
    and their descendants to ``seen`` (pid -> create time).

    One pass over the process table (a parent map), not one per root."""
    children: dict[int, list[psutil.Process]] = {}
    for p in psutil.process_iter(["ppid"]):
        children.setdefault(p.info["ppid"], []).append(p)
    stack = [pid for pid, created in roots.items() if _started(pid) == created]
    family = set(stack)
    while stack:
        for child in children.get(stack.pop(), []):
            if child.pid not in family:
                family.add(child.pid)
                stack.append(child.pid)
    for pid in family:
        try:
            seen[pid] = psutil.Process(pid).create_time()
        except psutil.Error:
            continue


def kill_recorded(seen: dict[int, float]) -> None:
    """SIGTERM every recorded process still alive with its recorded start time,
    then SIGKILL those that outlive ``GRACE_S``."""
    procs = []
    for pid, created in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created:
                procs.append(p)
        except psutil.Error:
            continue
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


def main(argv: list[str]) -> int:
    roots = {pid: t for pid in map(int, argv) if (t := _started(pid)) is not None}
    seen: dict[int, float] = {}
    fd = sys.stdin.fileno()
    while True:
        record(roots, seen)
        ready, _, _ = select.select([fd], [], [], POLL_S)
        if ready and not os.read(fd, 4096):
            break  # EOF: the driver is gone (or shut Ray down)
    record(roots, seen)
    kill_recorded(seen)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
