"""The ``ris`` command line: exit codes, one-line errors, JSON and plots."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import ours, run
from PIL import Image


def test_missing_db_is_one_line_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _out, err = run(["query", "--db", str(tmp_path / "nope.lance")], capsys)
    assert code == 1
    assert err.strip().count("\n") == 0
    assert err.startswith("error: ") and "nope.lance" in err and "Traceback" not in err


def test_bad_option_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["query", "--db", "x", "--bogus"], capsys)
    assert code == 1
    assert err.startswith("error: ") and "--bogus" in err and err.strip().count("\n") == 0
    code, _, err = run(["ingest", "/definitely/missing", "--db", "x"], capsys)
    assert code == 1 and "missing: no such file" in err


def test_bad_value_is_exit_1(capsys: pytest.CaptureFixture[str], gen_db: Path) -> None:
    code, _, err = run(["query", "--db", str(gen_db), "--window", "1,2"], capsys)
    assert code == 1 and "COL,ROW,WIDTH,HEIGHT" in err
    code, _, err = run(["query", "--db", str(gen_db), "--tile-id", "abc", "--random"], capsys)
    assert code == 1 and "only one of" in err


def test_ingest_then_query_json_and_plot(
    capsys: pytest.CaptureFixture[str], gen_dir: Path, ray_session: None, tmp_path: Path
) -> None:
    db = tmp_path / "cli.lance"
    report = tmp_path / "report.json"
    code, out, _ = run(
        ["ingest", str(gen_dir), "--db", str(db), "--weights", "random", "--report", str(report)],
        capsys,
    )
    assert code == 0
    assert "tiles: 7 written" in out and "random init" in out
    data = json.loads(report.read_text())
    assert data["tiles_written"] == 7 and len(data["files"]) == 6

    png = tmp_path / "q.png"
    code, out, _ = run(
        ["query", "--db", str(db), "--seed", "1", "-k", "4", "--json", "--plot", str(png)], capsys
    )
    assert code == 0
    result = json.loads(out)
    assert [n["rank"] for n in result["neighbours"]] == [1, 2, 3, 4]
    assert {"distance", "tile_id", "source", "row", "col", "lon", "lat"} <= set(
        result["neighbours"][0]
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        w, h = im.size
        assert w > h  # query panel + 2x2 grid side by side

    code, out, _ = run(["info", "--db", str(db), "--json"], capsys)
    info = json.loads(out)
    assert info["rows"] == 7 and info["sources"] == 5 and info["fingerprint"] == "float16[512]"
    assert info["model"] == "resnet18/random-seed0" and info["size_bytes"] > 0


def test_console_script_error_boundary(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("ris")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ris_ray.cli"]
    proc = subprocess.run(
        [*cmd, "info", "--db", str(tmp_path / "none")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_a_line_ray_forwards_from_its_raylet_is_not_ours() -> None:
    # Printed on a CI machine whose disk was 96 % full, in the middle of an error.
    raylet = (
        "\x1b[33m(raylet)\x1b[0m [2026-11-30 12:48:37,682 E 13692 13707] (raylet) "
        "file_system_monitor.cc:116: /tmp/ray/session_x is over 95% full, available space: "
        "9.7 GB; capacity: 251.9 GB. Object creation will fail if spilling is required.\n"
    )
    worker = "\x1b[36m(EmbedActor pid=7)\x1b[0m a warning of our code in a worker\n"
    error = "error: --db t.lance: no space left on the device while writing\n"
    assert ours(raylet + error) == error
    assert ours(f"(raylet, ip=10.0.0.2) x\n{error}") == error
    assert ours(worker + error) == worker + error


def test_file_names_are_printed_as_text_not_markup(
    capsys: pytest.CaptureFixture[str], ray_session: None, tmp_path: Path
) -> None:
    # The path ".../[/x].tif" (a folder "[" holding "x].tif"): rich would read
    # "[/x]" as a closing tag (MarkupError) and "[bold]" as a style.
    src = tmp_path / "src"
    (src / "[").mkdir(parents=True)
    (src / "[" / "x].tif").write_bytes(b"not a tiff")
    (src / "[bold]b.tif").write_bytes(b"not a tiff either")
    db = str(tmp_path / "m.lance")
    code, out, err = run(["ingest", str(src), "--db", db, "--weights", "random"], capsys)
    assert "MarkupError" not in err and "Traceback" not in err
    flat = re.sub(r"[\s│┃]", "", out + err)  # the table may wrap a long path
    assert "[/x].tif" in flat and "[bold]b.tif" in flat
    assert code == 2  # EXIT_PARTIAL: files failed, reported in the table
