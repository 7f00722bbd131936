"""Starting Ray for a run: an embedded local instance of our own, or a cluster on purpose.

Rules (:func:`start`):

- ``address`` given (``--address``) or ``RAY_ADDRESS`` set: join that cluster
  (``auto`` joins the one ``ray start`` left on this host, on purpose).
- Otherwise: always a *fresh* local Ray (``address="local"``), never a cluster
  found in Ray's current-cluster file, so a stray ``ray start`` head (another
  token, too few CPUs) cannot capture the run.

The embedded Ray listens on loopback only. Ray 2.60 binds its servers to the
node IP, or to a wildcard address, unless the node IP is loopback, and
``ray.init`` rewrites a loopback ``_node_ip_address`` into the host's routable
IP unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (its "no multi-node cluster"
switch, honoured on Linux too). With both, GCS, raylet, workers, the
dashboard agent and the runtime-env agent bind 127.0.0.1 only. The switch is
set for the Ray processes we start (they inherit it) and restored in this
process by :func:`stop`.

Nothing left behind: the dashboard and runtime-env agents outlive a killed
driver (they report the dead raylet to a dead GCS and wait on its retries
for over a minute). :func:`start` therefore starts :mod:`ris_ray.ingest.watchdog`,
a small process that holds the read end of a pipe whose write end only this
driver holds: when the driver exits or is killed, the pipe reads EOF and the
watchdog kills the processes of *this* Ray node by PID (and start time).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ray

from ris_ray.core.errors import InputError

__all__ = ["LOOPBACK", "embedded", "node_pids", "start", "stop"]

LOOPBACK = "127.0.0.1"
JOIN_TIMEOUT_S = 10.0
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray warns on every start that token auth is on by default; that is what we want.
_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"


@dataclass
class _Embedded:
    """What :func:`start` changed, so :func:`stop` can undo it."""

    env: dict[str, str | None] = field(default_factory=dict)
    cluster_flag: bool = True
    watchdog: subprocess.Popen[bytes] | None = None


_state: _Embedded | None = None


def start(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    join_options: Mapping[str, Any] | None = None,
) -> bool:
    """Connect to Ray; True when this call started an embedded Ray (call :func:`stop`).

    ``address`` or ``RAY_ADDRESS``: join that cluster (``join_options`` go to
    ``ray.init``, e.g. a ``runtime_env``). Neither: start a
    fresh local Ray on loopback with a watchdog (see the module docstring).
    An already initialised Ray is reused (returns False).
    """
    global _state
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet_token = logging.getLogger(_TOKEN_LOGGER)
    level = quiet_token.level
    quiet_token.setLevel(logging.ERROR)
    try:
        if address:
            _join(address, join_options or {})
            return True
        _state = _loopback_only()
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            _node_ip_address=LOOPBACK,
        )
    finally:
        quiet_token.setLevel(level)
    _state.watchdog = _start_watchdog(node_pids())
    return True


def _join(address: str, options: Mapping[str, Any]) -> None:
    """``ray.init(address)``, with an unreachable or refusing cluster as one line."""
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:  # GCS HOST:PORT: fail fast
        try:
            socket.create_connection((host, int(port)), timeout=JOIN_TIMEOUT_S).close()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise InputError(
                f"--address {address}: cannot reach a Ray cluster there ({reason})"
            ) from None
    try:
        ray.init(address=address, logging_level=logging.WARNING, **options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--address {address}: cannot join that Ray cluster ({first})") from None


def embedded() -> bool:
    """Whether this process runs on the embedded Ray :func:`start` made: one node,
    no autoscaler, so no node (and no GPU) can join it."""
    return _state is not None and ray.is_initialized()


def stop() -> None:
    """Shut Ray down and undo what :func:`start` changed in this process."""
    global _state
    ray.shutdown()
    state, _state = _state, None
    if state is None:
        return
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = state.cluster_flag
    for key, value in state.env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if state.watchdog is not None:
        assert state.watchdog.stdin is not None
        state.watchdog.stdin.close()  # EOF: it kills whatever of this node is left
        state.watchdog.wait()


def _loopback_only() -> _Embedded:
    """Make the next ``ray.init`` keep a loopback node IP (see the module docstring)."""
    import ray._private.ray_constants as ray_constants

    state = _Embedded(
        env={_CLUSTER_SWITCH: os.environ.get(_CLUSTER_SWITCH)},
        cluster_flag=ray_constants.ENABLE_RAY_CLUSTER,
    )
    os.environ[_CLUSTER_SWITCH] = "0"  # inherited by every Ray process we start
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process read it at import
    return state


def node_pids() -> list[int]:
    """PIDs of the processes of the Ray node this driver started (GCS, raylet, ...)."""
    node: Any = ray._private.worker._global_node
    if node is None:
        return []
    pids: list[int] = []
    for infos in node.all_processes.values():
        pids.extend(info.process.pid for info in infos if info.process is not None)
    return sorted(pids)


def _start_watchdog(pids: list[int]) -> subprocess.Popen[bytes]:
    """Start :mod:`ris_ray.ingest.watchdog` for this driver and these node processes."""
    return subprocess.Popen(
        [sys.executable, "-m", "ris_ray.ingest.watchdog", *map(str, pids)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the driver's group must not kill it first
    )
