"""Messy inputs: every file gets a status and a reason naming it; the run goes on."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

from ris_ray.cli import main
from ris_ray.core.config import IngestConfig
from ris_ray.core.errors import RasterReadError
from ris_ray.ingest.pipeline import IngestReport, ingest
from ris_ray.raster.reading import probe
from ris_ray.sample import landscape, write_geotiff

NON_UTF8 = os.fsdecode(b"caf\xe9 scene.tif")  # Latin-1 byte in a file name


def _bands(n: int, dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    rgb = landscape(256, 512, seed)
    stack = np.concatenate([rgb] * (n // 3 + 1))[:n]
    return stack.astype(dtype)


def build_corpus(d: Path) -> dict[str, tuple[str, int | None]]:
    """Write the corpus; return ``{name: (expected status, expected tiles or None)}``."""
    d.mkdir(parents=True, exist_ok=True)
    expect: dict[str, tuple[str, int | None]] = {}
    (d / "zero.tif").write_bytes(b"")
    expect["zero.tif"] = ("failed", 0)
    (d / "text.tif").write_text("this is not an image\n")
    expect["text.tif"] = ("failed", 0)
    Image.fromarray(landscape(300, 300, 1).transpose(1, 2, 0)).save(d / "png.tif", format="PNG")
    expect["png.tif"] = ("failed", 0)
    # Truncated: header fine, the last 40 % of the pixel data cut off.
    trunc = write_geotiff(d / "truncated.tif", landscape(1024, 1024, 2), compress="none")
    with open(trunc, "r+b") as f:
        f.truncate(int(trunc.stat().st_size * 0.6))
    expect["truncated.tif"] = ("failed", None)  # some tiles, some failed windows
    # Enormous declared size, sparse: one 512x512 block of data in 200000x200000.
    with rasterio.open(
        d / "huge_sparse.tif",
        "w",
        driver="GTiff",
        width=200_000,
        height=200_000,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        SPARSE_OK=True,
        crs="EPSG:32633",
        transform=rasterio.transform.from_origin(500000, 5000000, 0.1, 0.1),
    ) as dst:
        dst.write(landscape(512, 512, 3), window=Window(1024, 2048, 512, 512))
    expect["huge_sparse.tif"] = ("ok", 4)
    write_geotiff(d / "small.tif", landscape(100, 120, 4))
    expect["small.tif"] = ("skipped", 0)
    for n in (1, 2, 4, 7):
        write_geotiff(d / f"bands{n}.tif", _bands(n, seed=n))
        expect[f"bands{n}.tif"] = ("ok", 2)
    write_geotiff(d / "int16.tif", (_bands(1, "int16", 5) - 100) * 20)
    expect["int16.tif"] = ("ok", 2)
    write_geotiff(d / "uint16.tif", _bands(3, "uint16", 6) * 200)
    expect["uint16.tif"] = ("ok", 2)
    f32 = _bands(1, "float32", 7) / 255.0
    f32[:, :, :256] = np.nan
    write_geotiff(d / "float_nan.tif", f32, nodata=float("nan"))
    expect["float_nan.tif"] = ("ok", 1)
    with rasterio.open(
        d / "complex.tif", "w", driver="GTiff", width=512, height=256, count=1, dtype="complex64"
    ) as dst:
        dst.write(np.ones((1, 256, 512), np.complex64))
    expect["complex.tif"] = ("failed", 0)
    write_geotiff(d / "all_nodata.tif", np.zeros((3, 256, 512), np.uint8), nodata=0)
    expect["all_nodata.tif"] = ("skipped", 0)
    write_geotiff(d / "nocrs.tif", landscape(256, 256, 8), crs=None)
    expect["nocrs.tif"] = ("ok", 1)
    (d / "broken.tif").symlink_to(d / "does-not-exist.tif")
    expect["broken.tif"] = ("failed", 0)
    sub = d / "sub dir"
    sub.mkdir()
    ascii_name = write_geotiff(sub / "plain.tif", landscape(256, 256, 9))
    os.rename(ascii_name, sub / NON_UTF8)  # GDAL cannot create such a name itself
    expect[NON_UTF8] = ("ok", 1)
    return expect


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    d = tmp_path_factory.mktemp("bad") / "corpus"
    return d, build_corpus(d)


@pytest.fixture(scope="module")
def run(
    ray_session: None, corpus: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, IngestReport]:
    d, _ = corpus
    db = tmp_path_factory.mktemp("bad-db") / "db.lance"
    report = ingest(
        IngestConfig(inputs=(str(d),), db=str(db), weights="random", progress=False, window_px=256)
    )
    return db, report


def test_every_file_has_the_expected_status(
    run: tuple[Path, IngestReport], corpus: tuple[Path, dict[str, Any]]
) -> None:
    _, report = run
    _, expect = corpus
    files = {Path(f.path).name: f for f in report.files}
    shown_non_utf8 = "caf\\xe9 scene.tif"
    assert set(files) == (set(expect) - {NON_UTF8}) | {shown_non_utf8}
    for name, (status, tiles) in expect.items():
        f = files[shown_non_utf8 if name == NON_UTF8 else name]
        assert f.status == status, (name, f)
        if tiles is not None:
            assert f.tiles_written == tiles, (name, f)
        if status == "failed":
            assert f.reason and Path(f.path).name in f.reason, (name, f.reason)
            assert "\n" not in f.reason


def test_reasons_say_what_is_wrong(run: tuple[Path, IngestReport]) -> None:
    _, report = run
    files = {Path(f.path).name: f for f in report.files}
    assert "not a TIFF (GDAL reads it as PNG)" in files["png.tif"].reason
    assert "complex64 is not supported" in files["complex.tif"].reason
    assert "No such file" in files["broken.tif"].reason
    assert "cannot open" in files["zero.tif"].reason
    assert "cannot open" in files["text.tif"].reason
    assert "smaller than one 256x256 tile" in files["small.tif"].reason
    assert "no valid tiles" in files["all_nodata.tif"].reason
    trunc = files["truncated.tif"]
    assert trunc.windows_failed >= 1 and trunc.tiles_written > 0
    assert "unreadable" in trunc.reason and "expected" in trunc.reason
    huge = files["huge_sparse.tif"]
    assert huge.tiles_planned == (200_000 // 256) ** 2
    assert huge.tiles_empty == huge.tiles_planned - 4 and huge.windows == 1


def test_good_files_are_all_in_the_dataset(run: tuple[Path, IngestReport]) -> None:
    db, report = run
    t = lance.dataset(str(db)).to_table(columns=["tile_id", "source", "row", "col"])
    per_source: dict[str, int] = {}
    for s in t["source"].to_pylist():
        per_source[s] = per_source.get(s, 0) + 1
    for f in report.files:
        assert per_source.get(f.path, 0) == f.tiles_written, f.path
    assert len(set(t["tile_id"].to_pylist())) == t.num_rows == report.tiles_written
    huge = [
        (r, c)
        for s, r, c in zip(t["source"].to_pylist(), t["row"].to_pylist(), t["col"].to_pylist())
        if s.endswith("huge_sparse.tif")
    ]
    assert sorted(huge) == [(2048, 1024), (2048, 1280), (2304, 1024), (2304, 1280)]
    non_utf8 = [s for s in per_source if "caf" in s]
    assert len(non_utf8) == 1 and non_utf8[0].endswith("sub dir/caf\\xe9 scene.tif")


def test_unreadable_permissions(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "locked.tif", landscape(256, 256, 1))
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(RasterReadError, match=r"locked\.tif.*ermission denied"):
            probe(str(path))
        return
    # Root reads anything: probe in a forked child that drops to 'nobody'.
    tmp_path.chmod(0o755)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                probe(str(path))
                msg = "no error"
            except RasterReadError as exc:
                msg = str(exc)
            os.write(write_end, msg.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as f:
        msg = f.read()
    assert "locked.tif" in msg and "ermission denied" in msg, msg


def test_probe_takes_the_identity_the_driver_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the file's identity (ingest's driver has it from the listing or its
    own stat), the probe looks nothing up: no second HEAD per store object."""
    from ris_ray.core.records import FileIdent
    from ris_ray.raster import reading

    path = str(write_geotiff(tmp_path / "a.tif", landscape(256, 256, 1)))
    looked: list[str] = []
    real = reading.file_identity
    monkeypatch.setattr(reading, "file_identity", lambda p: looked.append(p) or real(p))
    info = probe(path, ident=FileIdent(123, 456, "etag"))
    assert (info.size_bytes, info.mtime_ns, looked) == (123, 456, [])
    assert probe(path).size_bytes == os.path.getsize(path) and looked == [path]


def test_cli_exit_codes_and_report(
    ray_session: None,
    corpus: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d, expect = corpus
    db = tmp_path / "cli.lance"
    with pytest.raises(SystemExit) as info:
        main(["ingest", str(d), "--db", str(db), "--weights", "random", "-q", "--window-px", "256"])
    assert info.value.code == 2  # some files failed; the rest was committed
    report = json.loads((tmp_path / "cli.lance.report.json").read_text())
    assert len(report["files"]) == len(expect)
    statuses = {Path(f["path"]).name: f["status"] for f in report["files"]}
    assert statuses["zero.tif"] == "failed" and statuses["bands7.tif"] == "ok"
    assert lance.dataset(str(db)).count_rows() == report["tiles_written"] > 0

    strict_db = tmp_path / "strict.lance"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "ingest",
                str(d),
                "--db",
                str(strict_db),
                "--weights",
                "random",
                "-q",
                "--strict",
                "--report",
                str(tmp_path / "strict.json"),
            ]
        )
    assert info.value.code == 2
    assert "nothing was committed" in capsys.readouterr().err
    assert not strict_db.exists() or not (strict_db / "_versions").exists()
    assert json.loads((tmp_path / "strict.json").read_text())["committed"] is False


def test_rerun_remembers_good_files_and_retries_failed_ones(
    run: tuple[Path, IngestReport], corpus: tuple[Path, dict[str, Any]]
) -> None:
    db, first = run
    d, _ = corpus
    again = ingest(
        IngestConfig(inputs=(str(d),), db=str(db), weights="random", progress=False, window_px=256)
    )
    status = {Path(f.path).name: f.status for f in again.files}
    assert status["caf\\xe9 scene.tif"] == "unchanged"  # non-UTF-8 name matched by its stored form
    assert status["bands7.tif"] == status["small.tif"] == status["all_nodata.tif"] == "unchanged"
    assert status["zero.tif"] == status["truncated.tif"] == "failed"  # retried, still failing
    ids = lance.dataset(str(db)).to_table(columns=["tile_id"])["tile_id"].to_pylist()
    assert len(ids) == len(set(ids)) == first.tiles_written  # the retry duplicated nothing
