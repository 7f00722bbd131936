"""The embedded Ray stays embedded, on loopback, and leaves nothing behind."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from cli_run import ours
from ports import free_ports

BIN = Path(sys.executable).parent


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


@pytest.fixture(scope="module")
def stray_head() -> Iterator[tuple[dict[str, str], int]]:
    """`ray start --head` with 1 CPU and another token, in a private RAY_TMPDIR so
    its current-cluster file is the one a bare ray.init() would read (and no
    other process on the host sees it). Yields (env for ingests, GCS port).
    One head for the module: every test here runs beside it."""
    base = Path(f"/tmp/risstray-{uuid.uuid4().hex[:6]}")  # short: unix socket paths
    base.mkdir()
    token = base / "token"
    token.write_text(uuid.uuid4().hex)
    gcs, dash, client, agent, rt_agent, metrics = free_ports(6)
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
            proc.wait(timeout=5)  # private head: no need to wait for a clean stop
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _gone, alive = psutil.wait_procs(family, timeout=10)
        for p in alive:
            p.kill()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class SampledIngest:
    """One plain `ris ingest -q` run beside the stray head, its process tree sampled
    every 0.2 s while it ran."""

    proc: subprocess.CompletedProcess[str]
    report: dict[str, Any]
    max_procs: int
    listening: set[tuple[int, str, int]]


@pytest.fixture(scope="module")
def sampled_ingest(
    stray_head: tuple[dict[str, str], int], gen_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> SampledIngest:
    """The one ingest both ingest tests look at (a Ray start is the slow part)."""
    env, _ = stray_head
    tmp = tmp_path_factory.mktemp("sampled")
    report = tmp / "report.json"
    cmd = [str(BIN / "ris"), "ingest", str(gen_dir), "--db", str(tmp / "t.lance")]
    cmd += ["--weights", "random", "-q", "--report", str(report)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[tuple[int, str, int]] = set()
    procs = 0
    deadline = time.monotonic() + 400
    while proc.poll() is None and time.monotonic() < deadline:
        tree = _tree(proc.pid)
        procs = max(procs, len(tree))
        seen |= _listening(tree)
        time.sleep(0.2)
    out, err = proc.communicate(timeout=30)
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    data = json.loads(report.read_text()) if proc.returncode == 0 else {}
    return SampledIngest(done, data, procs, seen)


@pytest.mark.cluster
def test_stray_cluster_does_not_capture_a_plain_ingest(
    stray_head: tuple[dict[str, str], int], sampled_ingest: SampledIngest
) -> None:
    _, stray_gcs = stray_head
    proc = sampled_ingest.proc
    assert proc.returncode == 0, proc.stderr[-3000:]
    # -q: nothing at all on success (no Ray token warning either).
    assert proc.stdout == "" and ours(proc.stderr) == ""
    data = sampled_ingest.report
    assert data["tiles_written"] == 7
    host, port = data["ray_gcs_address"].rsplit(":", 1)
    assert int(port) != stray_gcs and _is_loopback(host)


@pytest.mark.cluster
def test_embedded_ray_listens_on_loopback_only(sampled_ingest: SampledIngest) -> None:
    assert sampled_ingest.proc.returncode == 0, sampled_ingest.proc.stderr[-3000:]
    seen = sampled_ingest.listening
    # It did sample a running Ray (GCS, raylet, workers, agents ...).
    assert sampled_ingest.max_procs >= 5 and len(seen) >= 5
    exposed = sorted(s for s in seen if not _is_loopback(s[1]))
    assert not exposed, exposed


_DRIVER = """
import ray
from ris_ray.ingest.pipeline import connect
connect(None)
ray.get(ray.remote(lambda: 1).remote())
print("READY", flush=True)
import time; time.sleep(600)
"""


@pytest.mark.cluster
def test_killed_driver_leaves_no_ray_process(stray_head: tuple[dict[str, str], int]) -> None:
    env, _ = stray_head  # connect() starts its own Ray beside the stray head
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER], env=env, stdout=subprocess.PIPE, text=True
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
