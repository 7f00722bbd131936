"""Every command's user errors: exit 1, one line `error: ...` on stderr, no traceback,
nothing written. Also: --plot writes exactly the path given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import ours, run
from PIL import Image

# {db}: the generated dataset, {dir}: an existing folder, {tif}: a GeoTIFF, {tmp}: scratch,
# {gen}: the generated GeoTIFFs.
BAD = [
    ("ingest", "{gen} --db {tmp}/a.lance --tile-size 8"),
    ("ingest", "{gen} --db {tmp}/a.lance --bands 0,1,2"),
    ("ingest", "{gen} --db {tmp}/a.lance --commit-every -1"),
    ("ingest", "{gen} --db {tmp}/a.lance --gpu-wait nan"),
    ("ingest", "{gen} --db {tmp}/a.lance --window-px -5"),
    ("ingest", "{gen} --db {tmp}/a.lance --lock-wait -1"),
    ("ingest", "{gen} --db {tmp}/a.lance --weights {tmp}/none.pth"),
    ("ingest", "{tmp}/missing --db {tmp}/a.lance --weights random"),
    ("ingest", "{gen} --db {tif} --weights random"),
    ("ingest", "{gen} --db {tmp}/a.lance --report {dir} --weights random"),
    ("ingest", "{gen} --db {tmp}/a.lance --report {tmp}/nodir/r.json --weights random"),
    ("query", "--db {db} --lonlat 200,100"),
    ("query", "--db {db} --lonlat=-99,95"),
    ("query", "--db {db} --plot {dir}"),
    ("query", "--db {db} --plot {tmp}/nodir/x.png"),
    ("query", "--db {db} --plot {tmp}/x.txt"),
    ("query", "--db {db} --geojson {dir}"),
    ("query", "--db {db} --csv {tmp}/nodir/x.csv"),
    ("query", "--db {db} --point 1,2 --crs EPSG:99999"),
    ("query", "--db {db} -k 0"),
    ("query", "--db {db} --metric foo"),
    ("query", "--db {db} --image {tmp}/nope.png"),
    ("query", "--db {db} --image {tif} --window 0,0,-5,10"),
    ("query", "--db {db} --image {tif} --window 99999,0,256,256"),
    ("query", "--db {db} --bbox-wgs84 0,100,1,120"),
    ("query", "--db {db} --tile-id 0123456789abcdef0123"),
    ("query", "--db {dir}"),
    ("diff", "--db {db} --before x.tif --after y.tif"),
    ("diff", "--db {db} --before rgb.tif --after fill.tif --heatmap {dir}"),
    ("diff", "--db {db} --before rgb.tif --after fill.tif --heatmap {tmp}/h.txt"),
    ("diff", "--db {db} --before rgb.tif --after fill.tif --top 0"),
    ("info", "--db {tmp}/nope.lance"),
    ("info", "--db {tif}"),
    ("index", "--db {db} --metric foo"),
    ("index", "--db {tmp}/nope.lance"),
    ("compact", "--db {tmp}/nope.lance"),
    ("compact", "--db {db} --keep-days -1"),
    ("compact", "--db {db} --lock-wait -1"),
    ("index", "--db {db} --lock-wait nan"),
    ("demo", "--out {tif} --weights random"),
    ("demo", "--out {tmp}/demo --data {tmp}/nope --weights random"),
    ("demo", "--out {tmp}/demo -k 0 --weights random"),
]


def test_every_command_refuses_bad_arguments_in_one_line(
    capsys: pytest.CaptureFixture[str], gen_db: Path, gen_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "adir").mkdir()
    values = {
        "db": str(gen_db), "dir": str(tmp_path / "adir"), "tif": str(gen_dir / "rgb.tif"),
        "tmp": str(tmp_path), "gen": str(gen_dir),
    }  # fmt: skip
    before = sorted(p.name for p in tmp_path.iterdir())
    failures = []
    for command, args in BAD:
        argv = [command, *args.format(**values).split()]
        code, _out, err = run(argv, capsys)
        lines = err.strip().splitlines()
        if code != 1 or len(lines) != 1 or not lines[0].startswith("error: "):
            failures.append((argv, code, err[-500:]))
    assert not failures, failures
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing was written


def test_unreachable_address_is_one_line(gen_dir: Path, tmp_path: Path) -> None:
    # A process of its own: in this one Ray is already up and would be reused.
    argv = [str(gen_dir), "--db", str(tmp_path / "a.lance"), "--weights", "random", "-q"]
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ris"), "ingest", *argv, "--address", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    err = ours(proc.stderr)
    assert err.startswith("error: --address 127.0.0.1:1: cannot reach")
    assert len(err.strip().splitlines()) == 1


def test_plot_writes_exactly_the_path_given(
    capsys: pytest.CaptureFixture[str], gen_db: Path, tmp_path: Path
) -> None:
    for name in ("plot", "plot.PNG", "fig.pdf"):
        target = tmp_path / name
        code, out, err = run(
            ["query", "--db", str(gen_db), "--seed", "1", "--plot", str(target)], capsys
        )
        assert code == 0, err
        assert f"plot: {target}" in out
        assert target.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.pdf", "plot", "plot.PNG"]
    with Image.open(tmp_path / "plot") as im:
        assert im.format == "PNG"  # no extension: PNG, at exactly that name
