"""A real S3 API server on loopback for the tests: moto's standalone server.

:class:`MotoServer` runs ``python -m moto.server`` as a subprocess on
127.0.0.1 and a free port (a separate process, so Lance's and GDAL's HTTP
clients talk to it over a real socket, exactly as to a remote store). The
session fixture ``s3`` in conftest.py sets the standard ``AWS_*`` variables
for the test process and every subprocess it starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from ports import free_port

__all__ = ["TEST_ENV", "MotoServer"]

#: Credentials a test run uses (moto accepts any unless auth is enforced).
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIARISTESTKEY000001",
    "AWS_SECRET_ACCESS_KEY": "ris-test-secret-do-not-print-0123456789",
    "AWS_REGION": "us-east-1",
}


class MotoServer:
    """``moto.server`` on 127.0.0.1:<free port>; ``enforce_auth`` makes it
    check credentials against its (empty) IAM, so every key is refused."""

    def __init__(self, *, enforce_auth: bool = False) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ}
        if enforce_auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=2):
                    break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start on {self.endpoint}") from None
                time.sleep(0.1)

    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables a client needs to reach this server."""
        return {**TEST_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=TEST_ENV["AWS_REGION"],
            aws_access_key_id=TEST_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def upload(self, local: Path, bucket: str, key: str) -> str:
        """Upload ``local`` as ``s3://bucket/key``; returns that URI."""
        self.client().upload_file(str(local), bucket, key)
        return f"s3://{bucket}/{key}"

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
