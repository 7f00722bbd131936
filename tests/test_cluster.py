"""Running as operators do: cluster.yaml, and a real `ray start` + `ray job submit`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import lance
import pytest
import yaml
from ports import free_ports
from s3_server import MotoServer

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_cluster_yaml_is_valid_for_ray() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(config)
    filled = prepare_config(config)
    validate_config(filled)
    types = filled["available_node_types"]
    assert types["ray.worker.gpu"]["min_workers"] == 0
    assert types[filled["head_node_type"]]["resources"] == {"CPU": 0}
    # Dashboard/job API stay on loopback; token auth is on.
    head = " ".join(filled["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head


def test_runtime_env_is_valid() -> None:
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    RuntimeEnv(**env)  # raises on unknown or malformed fields
    assert any(p.startswith("pylance") for p in env["pip"])
    assert ".venv" in env["excludes"]


@pytest.fixture
def ray_head() -> Iterator[tuple[str, dict[str, str], int]]:
    """A real Ray head on loopback with token auth; always torn down."""
    import psutil

    base = Path(f"/tmp/rishead-{uuid.uuid4().hex[:6]}")  # short: unix socket path limits
    base.mkdir()
    token = base / "token"
    token.write_text(uuid.uuid4().hex)
    gcs, dash, client, agent, rt_agent, metrics = free_ports(6)
    env = {
        # No AWS_* on the head: jobs get them through their runtime_env only.
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        f"--runtime-env-agent-port={rt_agent}", f"--metrics-export-port={metrics}",
        "--num-cpus=2", f"--temp-dir={base / 'ray'}",
    ]  # fmt: skip
    log = (base / "head.log").open("w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (base / "head.log").read_text()[-2000:]
            try:
                req = urllib.request.Request(
                    f"{address}/api/version",
                    headers={"Authorization": f"Bearer {token.read_text()}"},
                )
                with urllib.request.urlopen(req, timeout=2) as resp:
                    json.load(resp)
                break
            except OSError:
                assert time.monotonic() < deadline, "Ray head did not come up"
                time.sleep(1)
        yield address, env, gcs
    finally:
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):  # --block: slow to stop
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Anything of this head that escaped the process group.
        for p in psutil.process_iter(["cmdline"]):
            if any(str(base) in part for part in (p.info["cmdline"] or [])):
                p.kill()
        log.close()
        shutil.rmtree(base, ignore_errors=True)  # the head's logs and sockets (~3 MB)


@pytest.mark.cluster
def test_ray_job_submit_round_trip(
    ray_head: tuple[str, dict[str, str], int], gen_dir: Path, tmp_path: Path
) -> None:
    address, env, gcs_port = ray_head
    db = tmp_path / "job.lance"
    runtime_env = json.dumps({"excludes": [".git", ".venv", "*.lance", "__pycache__"]})
    submit = [
        str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
        "--runtime-env-json", runtime_env, "--",
        "python", "jobs/ingest.py", str(gen_dir), "--db", str(db), "--weights", "random", "-q",
        "--report", str(tmp_path / "report.json"),
    ]  # fmt: skip
    proc = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    ds = lance.dataset(str(db))
    assert ds.count_rows() == 7  # the generated corpus (see test_pipeline)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["tiles_written"] == 7
    # The job joined the running cluster instead of starting its own Ray.
    # (Ray reports the node's IP for the GCS; the port is the one this test chose.)
    assert report["ray_gcs_address"].rsplit(":", 1)[1] == str(gcs_port)
    listing = subprocess.run(
        [str(BIN / "ray"), "job", "list", "--address", address],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "SUCCEEDED" in listing.stdout + listing.stderr


@pytest.mark.cluster
def test_ray_job_submit_reads_and_writes_s3(
    s3: MotoServer, ray_head: tuple[str, dict[str, str], int], gen_dir: Path, tmp_path: Path
) -> None:
    """jobs/ingest.py on a real head, from an S3 prefix into an S3 dataset; the
    head has no AWS_* of its own: the job's runtime_env env_vars carry them."""
    from ris_ray.core.objstore import S3Settings
    from ris_ray.store.lance_io import storage_options

    address, env, gcs_port = ray_head
    bucket = s3.make_bucket("jobcaps")
    for tif in sorted(gen_dir.iterdir()):
        s3.upload(tif, bucket, f"caps/{tif.name}")
    db = f"s3://{bucket}/tiles.lance"
    runtime_env = json.dumps(
        {
            "excludes": [".git", ".venv", "*.lance", "__pycache__"],
            "env_vars": S3Settings.from_env().worker_env(),
        }
    )
    submit = [
        str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
        "--runtime-env-json", runtime_env, "--",
        "python", "jobs/ingest.py", f"s3://{bucket}/caps/", "--db", db, "--weights", "random",
        "-q", "--report", str(tmp_path / "report.json"),
    ]  # fmt: skip
    proc = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert lance.dataset(db, storage_options=storage_options(db)).count_rows() == 7
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["tiles_written"] == 7 and len(report["files"]) == 6
    assert all(f["path"].startswith(f"s3://{bucket}/caps/") for f in report["files"])

    # `ris ingest --address` from outside a job: connect() hands this process's
    # AWS_* to the workers (runtime_env), which read the new object from S3.
    from ris_ray.sample import landscape, write_geotiff

    extra = write_geotiff(tmp_path / "extra.tif", landscape(256, 512, seed=9))
    s3.upload(extra, bucket, "caps/late/extra.tif")
    outside = subprocess.run(
        [str(BIN / "ris"), "ingest", f"s3://{bucket}/caps/", "--db", db, "--weights", "random",
         "-q", "--address", f"127.0.0.1:{gcs_port}", "--report", str(tmp_path / "r2.json")],
        env={**env, **S3Settings.from_env().worker_env()}, capture_output=True, text=True,
        timeout=400,
    )  # fmt: skip
    assert outside.returncode == 0, outside.stderr[-3000:]
    report = json.loads((tmp_path / "r2.json").read_text())
    status = {f["path"]: f["status"] for f in report["files"]}
    assert status.pop(f"s3://{bucket}/caps/late/extra.tif") == "ok", report["files"]
    assert set(status.values()) == {"unchanged"} and report["tiles_written"] == 2
    assert report["ray_gcs_address"].rsplit(":", 1)[1] == str(gcs_port)
    assert lance.dataset(db, storage_options=storage_options(db)).count_rows() == 9


@pytest.mark.cluster
def test_ris_ingest_address_puts_no_secret_in_rays_files(
    s3: MotoServer, ray_head: tuple[str, dict[str, str], int], gen_dir: Path, tmp_path: Path
) -> None:
    """`ris ingest s3://... --address <ray start head>`: the workers read S3 with
    the settings passed as task arguments, and no file of the head's Ray temp
    dir (runtime_env_agent.log included) nor the run's output holds the secret."""
    import psutil

    from ris_ray.core.objstore import S3Settings
    from ris_ray.store.lance_io import storage_options

    _address, env, gcs_port = ray_head
    temp = next(
        part.split("=", 1)[1]
        for p in psutil.process_iter(["cmdline"])
        if f"--port={gcs_port}" in (p.info["cmdline"] or [])
        for part in p.info["cmdline"]
        if part.startswith("--temp-dir=")
    )
    bucket = s3.make_bucket("nosecret")
    for tif in sorted(gen_dir.iterdir()):
        s3.upload(tif, bucket, f"caps/{tif.name}")
    db = f"s3://{bucket}/tiles.lance"
    run = subprocess.run(
        [str(BIN / "ris"), "ingest", f"s3://{bucket}/caps/", "--db", db, "--weights", "random",
         "--address", f"127.0.0.1:{gcs_port}"],
        env={**env, **S3Settings.from_env().worker_env()}, capture_output=True, text=True,
        timeout=400,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert lance.dataset(db, storage_options=storage_options(db)).count_rows() == 7
    secret = S3Settings.from_env().secret_access_key
    assert secret
    holding = [
        str(f)
        for f in Path(temp).rglob("*")
        if f.is_file() and not f.is_symlink() and secret.encode() in f.read_bytes()
    ]
    assert holding == [], holding
    assert secret not in run.stdout + run.stderr
