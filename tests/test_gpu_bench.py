"""benchmarks/gpu.py (issue 21, item 9): it runs where only torch, torchvision and
numpy exist, and its CPU smoke run prints a full table.

The subprocess runs under a meta-path finder that refuses ray, rasterio, lance and
pyarrow (and checks first that it does), with no GPU visible. No timed assertions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu.py"
BLOCKED = ("ray", "rasterio", "lance", "pyarrow")

#: Run as ``python -c BLOCK_AND_RUN SCRIPT ARGS...``: block the imports, prove they
#: are blocked, then run the script as ``__main__``.
BLOCK_AND_RUN = f"""
import importlib.abc, runpy, sys
BLOCKED = {BLOCKED!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked by the test: {{name}}", name=name)
        return None
sys.meta_path.insert(0, Block())
for name in BLOCKED:
    if name in sys.modules:
        sys.exit(f"blocker: {{name}} was imported before it could be blocked")
    try:
        __import__(name)
    except ModuleNotFoundError:
        pass
    else:
        sys.exit(f"blocker: {{name}} still imports")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path even where a GPU exists
    return subprocess.run(
        [sys.executable, "-c", BLOCK_AND_RUN, str(SCRIPT), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _table(stdout: str) -> dict[tuple[int, str], list[str]]:
    """The final table's rows, by (batch, mode): [tiles/s, ms/batch, peak MiB, note]."""
    last = stdout[stdout.rindex("| batch | mode |") :]
    rows = {}
    for line in last.splitlines()[2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[int(cells[0]), cells[1]] = cells[2:]
    return rows


def test_smoke_runs_without_ray_rasterio_lance(tmp_path: Path) -> None:
    out = tmp_path / "res" / "gpu.json"
    proc = _run(tmp_path, "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no GPU: CPU smoke run, numbers are not GPU numbers" in proc.stdout
    assert "parity: device_step vs Embedder.embed_and_shrink" in proc.stdout
    rows = _table(proc.stdout)
    modes = ("shipped", "upload", "thumbnail", "eager", "eager+graphs", "compile", "compile+graphs")
    assert set(rows) == {(b, m) for b in (2, 4) for m in modes}
    for (batch, mode), (tiles_s, ms, _peak, note) in rows.items():
        if mode in ("upload", "eager+graphs", "compile+graphs"):
            assert note == "skipped: needs CUDA", (batch, mode, note)
            continue
        assert float(tiles_s.replace(",", "")) > 0, (batch, mode, tiles_s)
        assert float(ms) > 0
        if mode != "thumbnail":
            cos = float(note.split("min cos ")[1].split(",")[0])
            assert cos > 0.999, (batch, mode, note)
    data = json.loads(out.read_text())
    assert len(data["rows"]) == len(rows)
    assert data["meta"]["note"].startswith("no GPU")
    assert data["markdown"].count("\n| ") == len(rows) + 1


def test_budget_spent_skips_every_configuration(tmp_path: Path) -> None:
    out = tmp_path / "gpu.md"
    proc = _run(tmp_path, "--budget", "0", "--batches", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _table(proc.stdout)
    assert len(rows) == 7
    cuda_only = ("upload", "eager+graphs", "compile+graphs")
    for (_batch, mode), (tiles_s, _ms, _peak, note) in rows.items():
        assert tiles_s == "-"
        assert note == (
            "skipped: needs CUDA" if mode in cuda_only else "skipped: time budget spent"
        )
    assert "0 ran, 7 skipped" in out.read_text()


@pytest.fixture(scope="module")
def gpu() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_parity_check_stops_on_a_different_pipeline(gpu: ModuleType) -> None:
    import torch

    emb = gpu.Embedder("random", device="cpu", precision="fp32")
    pixels = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), np.uint8)
    with torch.inference_mode():
        ref = emb.embed_and_shrink(pixels, 8)
        good = gpu.Setup(emb, torch.from_numpy(pixels), 8, ref, False)
        assert gpu._parity(good).startswith("min cos 1.0")
        bad = gpu.Setup(emb, torch.from_numpy(pixels), 8, (ref[0][::-1].copy(), ref[1]), False)
        with pytest.raises(SystemExit, match="device_step differs"):
            gpu._parity(bad)
