"""The Ray ingest job end to end, on generated and real GeoTIFFs."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pytest
import rasterio
import rasterio.warp
import rasterio.windows
from PIL import Image

from ris_ray.core.config import IngestConfig
from ris_ray.core.errors import EmbedderStartError, InputError, ModelMismatchError
from ris_ray.ingest.actors import EmbedActor
from ris_ray.ingest.pipeline import ingest
from ris_ray.raster.tiling import count_tiles, plan_windows, tile_id
from ris_ray.store.schema import SCHEMA, dataset_params

# 256-tiles per file, from ../shared/data/SOURCES.md.
SHARED_TILES = {
    "tcd__5c15321f63d9810007f8b06f_10_00000.tif": 64,
    "deepforest__5b90f92da0d7280005fab355_4310.tif": 64,
    "deepforest__australia.tif": 4,
    "deepforest__2019_YELL_2_541000_4977000_image_crop.tiff": 16,
    "riotiler__pix4d_alpha_nodata.tif": 4,
    "riotiler__cog_rgb_mask.tif": 0,
    "riocogeo__image_webp.tif": 4,
    "solaris__sample_geotiff.tif": 9,
    "opengeos__m_4709963_se_14_1_20200831.tif": 6,
}


def _rows(db: Path) -> list[dict[str, Any]]:
    return (
        lance.dataset(str(db))
        .to_table(columns=[c for c in SCHEMA.names if c not in ("fingerprint", "thumbnail")])
        .to_pylist()
    )


def test_generated_files(gen_db: Path, gen_dir: Path) -> None:
    rows = _rows(gen_db)
    by_file: dict[str, list[tuple[int, int]]] = {}
    for r in rows:
        by_file.setdefault(Path(r["source"]).name, []).append((r["row"], r["col"]))
    assert {k: sorted(v) for k, v in by_file.items()} == {
        "rgb.tif": [(0, 0), (0, 256)],
        "rgba.tif": [(0, 256)],
        "pan16.tif": [(0, 256), (0, 512)],
        "nogeo.tif": [(0, 0)],
        "fill.tif": [(0, 256)],
    }
    assert len({r["tile_id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["tile_id"] == tile_id(
            r["source"], r["row"], r["col"], 256, 256, "resnet18/random-seed0"
        )
        assert r["model"] == "resnet18/random-seed0"
        if Path(r["source"]).name == "nogeo.tif":
            assert r["crs"] is None
            assert all(r[k] is None for k in ("minx", "miny", "maxx", "maxy", "lon", "lat"))
        else:
            assert r["crs"] == "EPSG:32633"
            assert None not in (r["lon"], r["lat"], r["minx"])
    ds = lance.dataset(str(gen_db))
    assert ds.schema.field("fingerprint").type.list_size == 512
    assert ds.data_storage_version == "2.0"  # the faster format for the vector scan
    assert (
        str(ds.schema.field("fingerprint").type.value_type) == "halffloat"
    )  # float16 fingerprints in new datasets
    p = dataset_params(ds)
    assert (p.tile_size, p.stride, p.model) == (256, 256, "resnet18/random-seed0")


def test_report_counts_and_reasons(ray_session: None, gen_dir: Path, tmp_path: Path) -> None:
    r = ingest(
        IngestConfig(
            inputs=(str(gen_dir),),
            db=str(tmp_path / "db"),
            weights="random",
            progress=False,
            stride=128,
            window_px=256,
            call_tiles=1,  # one window per embedder call
        )
    )
    files = {Path(f.path).name: f for f in r.files}
    assert files["tiny.TIF"].status == "skipped"
    assert "smaller than one 256x256 tile" in (files["tiny.TIF"].reason or "")
    rgb = files["rgb.tif"]
    assert rgb.tiles_planned == count_tiles(300, 256, 128) * count_tiles(560, 256, 128) == 3
    with rasterio.open(gen_dir / "rgb.tif") as src:
        jobs = plan_windows(
            src.width, src.height, 256, 128, block_shape=src.block_shapes[0], target_px=256
        )
    assert rgb.windows == len(jobs) >= 1
    for f in r.files:
        assert f.tiles_written + f.tiles_low_valid == f.tiles_planned
    assert r.tiles_written == lance.dataset(str(tmp_path / "db")).count_rows()
    assert r.files_failed == []
    assert r.steady_tiles_per_s > 0  # several batches: a rate once the pipeline runs


def test_second_run_with_other_params_is_refused(gen_db: Path, gen_dir: Path) -> None:
    with pytest.raises(ModelMismatchError, match="stride 256"):
        ingest(
            IngestConfig(
                inputs=(str(gen_dir),), db=str(gen_db), weights="random", stride=128, progress=False
            )
        )


def test_missing_input_fails_before_ray(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere.tif: no such file"):
        ingest(
            IngestConfig(
                inputs=(str(tmp_path / "nowhere.tif"),),
                db=str(tmp_path / "db"),
                weights="random",
                progress=False,
            )
        )


@pytest.mark.shared
def test_shared_data_tile_counts(shared_db: tuple[Path, Any]) -> None:
    db, report = shared_db
    files = {Path(f.path).name: f for f in report.files}
    assert set(files) == set(SHARED_TILES)
    for name, expected in SHARED_TILES.items():
        f = files[name]
        assert f.tiles_planned == expected, name
        assert f.tiles_written + f.tiles_low_valid == expected, name
        assert f.status == ("skipped" if expected == 0 else "ok"), (name, f.reason)
    assert report.tiles_written == lance.dataset(str(db)).count_rows()
    rows = _rows(db)
    assert len({r["tile_id"] for r in rows}) == len(rows)


def _fractions(path: Path, fill: bool) -> dict[tuple[int, int], float]:
    """Independent per-tile valid fraction: rasterio's dataset mask, or non-black pixels."""
    out = {}
    with rasterio.open(path) as src:
        for r in range(0, src.height - 255, 256):
            for c in range(0, src.width - 255, 256):
                win = rasterio.windows.Window(c, r, 256, 256)
                if fill:
                    px = src.read([1, 2, 3], window=win)
                    ok = ~(np.all(px == 0, axis=0) | np.all(px == 255, axis=0))
                else:
                    ok = src.dataset_mask(window=win) > 0
                out[(r, c)] = float(ok.mean())
    return out


@pytest.mark.shared
@pytest.mark.parametrize(
    ("name", "fill"),
    [
        ("riotiler__pix4d_alpha_nodata.tif", False),
        ("opengeos__m_4709963_se_14_1_20200831.tif", False),
        ("tcd__5c15321f63d9810007f8b06f_10_00000.tif", True),
        ("deepforest__5b90f92da0d7280005fab355_4310.tif", True),
    ],
)
def test_shared_masks_decide_skipping(
    shared_db: tuple[Path, Any], shared_data: Path, name: str, fill: bool
) -> None:
    db, _ = shared_db
    expected = {k: v for k, v in _fractions(shared_data / name, fill).items() if v >= 0.5}
    got = {
        (r["row"], r["col"]): r["valid_fraction"]
        for r in _rows(db)
        if Path(r["source"]).name == name
    }
    assert set(got) == set(expected)
    for key, frac in got.items():
        assert frac == pytest.approx(expected[key], abs=1e-6)
    if fill:
        assert len(got) < 64  # the black fill outside the flight really is skipped


@pytest.mark.shared
def test_shared_geo_columns(shared_db: tuple[Path, Any], shared_data: Path) -> None:
    db, _ = shared_db
    rows = _rows(db)
    for name in (
        "solaris__sample_geotiff.tif",
        "deepforest__australia.tif",
        "opengeos__m_4709963_se_14_1_20200831.tif",
    ):
        with rasterio.open(shared_data / name) as src:
            mine = [r for r in rows if Path(r["source"]).name == name]
            assert mine
            assert mine[0]["crs"] == f"EPSG:{src.crs.to_epsg()}"
            for r in mine:
                b = rasterio.windows.bounds(
                    rasterio.windows.Window(r["col"], r["row"], 256, 256), src.transform
                )
                assert (r["minx"], r["miny"], r["maxx"], r["maxy"]) == pytest.approx(b)
                cx, cy = src.xy(r["row"] + 128, r["col"] + 128, offset="ul")
                lon, lat = rasterio.warp.transform(src.crs, "EPSG:4326", [cx], [cy])
                assert (r["lon"], r["lat"]) == pytest.approx((lon[0], lat[0]), abs=1e-9)
    neon = [r for r in rows if r["source"].endswith("YELL_2_541000_4977000_image_crop.tiff")]
    assert len(neon) == 16
    assert all(r["crs"] is None and r["lon"] is None and r["minx"] is None for r in neon)
    naip = [r for r in rows if "m_4709963" in r["source"]]
    assert all(-100 < r["lon"] < -98 and 46 < r["lat"] < 48 for r in naip)  # North Dakota


class _ConstantActor(EmbedActor):
    """An embedder actor without a model: every fingerprint is 0.25, every
    thumbnail the tile's top-left corner."""

    def __init__(self, *args: Any) -> None:  # EmbedActor's arguments; builds no model
        self.params, self.fingerprint, self.thumbnail = args[1], args[6], args[7]
        self.pool = None

    def device(self) -> str:
        return "constant"

    def infer(self, pixels: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
        whole = np.concatenate(pixels)  # the windows of the call, in order
        assert whole.dtype == np.uint8 and whole.shape[1] == 3  # band-first
        corner = np.ascontiguousarray(whole[:, :, :size, :size].transpose(0, 2, 3, 1))
        return np.full((len(whole), 512), 0.25, np.float32), corner


def test_ingest_takes_another_actor_class(ray_session: None, gen_dir: Path, tmp_path: Path) -> None:
    # Workers cannot import the test module: ship the class by value.
    import sys

    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    db = tmp_path / "db"
    cfg = IngestConfig(inputs=(str(gen_dir),), db=str(db), weights="random", progress=False)
    report = ingest(cfg, actor_cls=_ConstantActor)
    assert report.device == "constant"
    assert report.rows_written_by == "driver"  # --write-rows auto, one CPU embedder
    assert report.driver_loop_cpu_s > 0
    t = lance.dataset(str(db)).to_table(columns=["fingerprint", "thumbnail"])
    assert t.num_rows == report.tiles_written == 7
    assert str(t.schema.field("fingerprint").type.value_type) == "halffloat"  # the store's type
    fp = t.column("fingerprint").combine_chunks().values.to_numpy(zero_copy_only=False)
    assert np.all(fp == np.float16(0.25))
    assert t.column("thumbnail").null_count == 0
    corners = [
        np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in t["thumbnail"].to_pylist()
    ]
    assert all(c.shape == (64, 64, 3) for c in corners)  # the actor's infer() made them


@pytest.mark.parametrize("write_rows", ["embedders", "driver"])
def test_embedder_calls_are_filled_up_to_tiles_per_call(
    ray_session: None,
    gen_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_rows: str,
) -> None:
    """The calls the driver fills (rows written by the driver) and those a
    cut-and-embed task fills (rows written by the embedders) alike."""
    from ris_ray.ingest import pipeline, rayloop
    from ris_ray.ingest.tasks import CutEmbedded

    calls: list[tuple[int, int]] = []  # (windows, tiles) of each embedder call

    class Recording(pipeline.Scheduler):
        def _take_parts(self) -> tuple[Any, ...]:
            actor, parts = super()._take_parts()
            calls.append((len(parts), sum(p.n_tiles for p in parts)))
            return actor, parts

    def recording(loop: Any, work: Any, value: CutEmbedded) -> None:
        for call in value.calls:
            calls.append((len(call.windows), sum(call.result.rows)))  # type: ignore[union-attr]
        fused(loop, work, value)

    fused = rayloop.RayLoop._cut_and_embedded
    monkeypatch.setattr(pipeline, "Scheduler", Recording)
    monkeypatch.setattr(rayloop.RayLoop, "_cut_and_embedded", recording)
    runs = {}
    for name, kw in (("default", {}), ("one", {"call_tiles": 1})):
        calls.clear()
        cfg = IngestConfig(
            inputs=(str(gen_dir),),
            db=str(tmp_path / name),
            weights="random",
            progress=False,
            stride=128,
            window_px=256,
            write_rows=write_rows,  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )
        report = ingest(cfg)
        assert report.rows_written_by == write_rows
        runs[name] = (report.tiles_written, list(calls))
    (tiles, default), (tiles_one, one) = runs["default"], runs["one"]
    assert tiles == tiles_one == sum(n for _, n in default) == sum(n for _, n in one)
    assert all(w == 1 for w, _ in one)  # call_tiles=1: one window per call
    assert all(n <= 256 for _, n in default)  # never more than tiles_per_call (256)...
    assert max(w for w, _ in default) > 1  # ...and windows that wait go together


class _BrokenActor(EmbedActor):
    """An embedder actor whose constructor fails, as on a GPU out of memory."""

    def __init__(self, *args: Any) -> None:
        raise RuntimeError("CUDA out of memory (test)")


def test_an_embedder_that_cannot_start_is_one_error(
    ray_session: None, gen_dir: Path, tmp_path: Path
) -> None:
    # Tiling starts before the actors answer; their failure still ends the run
    # with one error naming the cause, and nothing is committed.
    import sys

    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    db = tmp_path / "db"
    cfg = IngestConfig(inputs=(str(gen_dir),), db=str(db), weights="random", progress=False)
    with pytest.raises(EmbedderStartError, match=r"could not start \(RuntimeError: CUDA out of"):
        ingest(cfg, actor_cls=_BrokenActor)
    assert not (db / "data").exists()


def test_device_cuda_without_a_gpu_fails_at_once_and_writes_nothing(
    ray_session: None, gen_dir: Path, tmp_path: Path
) -> None:
    import ray

    if ray.cluster_resources().get("GPU", 0):
        pytest.skip("this Ray has a GPU")
    db = tmp_path / "cuda.lance"
    # A cluster's autoscaler may add GPUs within gpu_wait_s (a 1 s wait says "no GPU
    # joined the cluster within 1 s"); nothing can add one to the embedded Ray: no wait.
    cfg = IngestConfig(
        inputs=(str(gen_dir),),
        db=str(db),
        weights="random",
        device="cuda",
        gpu_wait_s=1.0,
        progress=False,
    )
    with pytest.raises(InputError, match=r"^--device cuda: Ray finds no GPU on this machine"):
        ingest(cfg)
    assert not db.exists()
