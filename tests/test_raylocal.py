"""The embedded Ray stays embedded, on loopback, and leaves nothing behind."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _listening(procs: list[psutil.Process]) -> set[tuple[int, str, int]]:
    found = set()
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found.add((p.pid, c.laddr.ip, c.laddr.port))
        except psutil.Error:
            continue
    return found


@pytest.fixture
def stray_head() -> Iterator[tuple[dict[str, str], int]]:
    """`ray start --head` with 1 CPU and another token, in a private RAY_TMPDIR so
    its current-cluster file is the one a bare ray.init() would read (and no
    other process on the host sees it). Yields (env for ingests, GCS port)."""
    base = Path(f"/tmp/risstray-{uuid.uuid4().hex[:6]}")  # short: unix socket paths
    base.mkdir()
    token = base / "token"
    token.write_text(uuid.uuid4().hex)
    gcs, dash, client, agent, rt_agent, metrics = _free_ports(6)
    head_env = _env(RAY_TMPDIR=str(base), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    cmd = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        f"--runtime-env-agent-port={rt_agent}", f"--metrics-export-port={metrics}",
        "--num-cpus=1",
    ]  # fmt: skip
    log = (base / "head.log").open("w")
    proc = subprocess.Popen(
        cmd, env=head_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    current = base / "ray" / "ray_current_cluster"
    try:
        deadline = time.monotonic() + 120
        while not current.is_file():
            assert proc.poll() is None, (base / "head.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "stray Ray head did not come up"
            time.sleep(1)
        yield _env(RAY_TMPDIR=str(base)), gcs
    finally:
        family = _tree(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _gone, alive = psutil.wait_procs(family, timeout=10)
        for p in alive:
            p.kill()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.cluster
def test_stray_cluster_does_not_capture_a_plain_ingest(
    stray_head: tuple[dict[str, str], int], gen_dir: Path, tmp_path: Path
) -> None:
    env, stray_gcs = stray_head
    report = tmp_path / "report.json"
    cmd = [str(BIN / "ris"), "ingest", str(gen_dir), "--db", str(tmp_path / "t.lance")]
    cmd += ["--weights", "random", "-q", "--report", str(report)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # -q: nothing at all on success (no Ray token warning either).
    assert proc.stdout == "" and proc.stderr == ""
    data = json.loads(report.read_text())
    assert data["tiles_written"] == 7
    host, port = data["ray_gcs_address"].rsplit(":", 1)
    assert int(port) != stray_gcs and _is_loopback(host)


def test_embedded_ray_listens_on_loopback_only(gen_dir: Path, tmp_path: Path) -> None:
    cmd = [str(BIN / "ris"), "ingest", str(gen_dir), "--db", str(tmp_path / "t.lance")]
    cmd += ["--weights", "random", "-q"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: set[tuple[int, str, int]] = set()
    procs = 0
    while proc.poll() is None:
        tree = _tree(proc.pid)
        procs = max(procs, len(tree))
        seen |= _listening(tree)
        time.sleep(0.2)
    assert proc.returncode == 0, proc.stderr.read()[-3000:] if proc.stderr else ""
    assert procs >= 5 and len(seen) >= 5  # it did sample a running Ray (GCS, raylet, ...)
    exposed = sorted(s for s in seen if not _is_loopback(s[1]))
    assert not exposed, exposed


_DRIVER = """
import ray
from ris_ray.pipeline import connect
connect(None)
ray.get(ray.remote(lambda: 1).remote())
print("READY", flush=True)
import time; time.sleep(600)
"""


def test_killed_driver_leaves_no_ray_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER], env=_env(), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    family = _tree(proc.pid)[1:]
    assert len(family) >= 5  # GCS, raylet, agents, workers, watchdog
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _gone, alive = psutil.wait_procs(family, timeout=20)
    left = [(p.pid, p.name()) for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:  # never leave them behind, even when the test fails
        p.kill()
    assert not left, left
