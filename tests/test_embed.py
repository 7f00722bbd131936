"""The embedder on hand-built batches, without Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from ris_ray.core.errors import InputError, WeightsError
from ris_ray.model.embed import (
    CPU_MAX_BATCH,
    FINGERPRINT_DIM,
    Embedder,
    build_model,
)
from ris_ray.model.weights import resolve_weights, weights_for_model


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder("random", batch_size=3, precision="fp32")


def _batch(n: int, seed: int = 0, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_call_adds_fingerprints_and_passes_keys_through(embedder: Embedder) -> None:
    pixels = _batch(5)
    out = embedder({"pixels": pixels, "tile_id": np.array(list("abcde"), dtype=object)})
    assert out["fingerprint"].shape == (5, FINGERPRINT_DIM)
    assert out["fingerprint"].dtype == np.float32
    assert list(out["tile_id"]) == list("abcde")
    assert np.isfinite(out["fingerprint"]).all()
    # ResNet features after ReLU + average pooling are non-negative.
    assert (out["fingerprint"] >= 0).all()


def test_chunking_and_order_do_not_change_results(embedder: Embedder) -> None:
    pixels = _batch(7, seed=1)
    whole = embedder.embed(pixels)  # chunks of 3, 3, 1
    single = np.stack([embedder.embed(pixels[i : i + 1])[0] for i in range(7)])
    assert np.allclose(whole, single, atol=1e-4)
    reordered = embedder.embed(pixels[::-1].copy())
    assert np.allclose(reordered[::-1], whole, atol=1e-4)
    assert not np.allclose(whole[0], whole[1])


def test_normalisation_matches_torchvision_reference(embedder: Embedder) -> None:
    pixels = _batch(2, seed=2)
    model = build_model(resolve_weights("random"))
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        ref = model((x - mean) / std).numpy()
    assert np.allclose(embedder.embed(pixels), ref, rtol=1e-3, atol=1e-4)


def test_random_weights_are_seeded() -> None:
    a = Embedder("random").embed(_batch(2))
    b = Embedder("random:0").embed(_batch(2))
    c = Embedder("random:1").embed(_batch(2))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert resolve_weights("random:1").model_id == "resnet18/random-seed1"


def test_weights_file_roundtrip(tmp_path: Path) -> None:
    model = build_model(resolve_weights("random:7"))
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    from_file = Embedder(str(path))
    assert from_file.model_id.startswith("resnet18/file-")
    assert np.allclose(from_file.embed(_batch(2)), Embedder("random:7").embed(_batch(2)), atol=1e-5)
    assert weights_for_model(from_file.model_id, str(path)).path == str(path.resolve())
    with pytest.raises(WeightsError, match="pass it as --weights"):
        weights_for_model(from_file.model_id)


def test_weights_file_that_is_not_a_state_dict(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(WeightsError, match="bad.pth"):
        Embedder(str(bad))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(WeightsError, match="do not fit ResNet-18"):
        Embedder(str(wrong))
    with pytest.raises(InputError, match="nope.pth"):
        resolve_weights(str(tmp_path / "nope.pth"))


def test_imagenet_offline_fails_fast_with_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.models._api import WeightsEnum

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(WeightsError, match="--weights PATH") as info:
        Embedder("imagenet")
    assert "resnet18-f37072fd.pth" in str(info.value)


def test_band_first_input_gives_the_same_fingerprints(embedder: Embedder) -> None:
    pixels = _batch(4, seed=3)
    band_first = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
    assert band_first.shape[1] == 3
    assert np.allclose(embedder.embed(band_first), embedder.embed(pixels), atol=1e-5)
    # a read-only, non-contiguous band-first view (as Ray may hand out) works too
    view = np.broadcast_to(band_first[:, :1], band_first.shape)
    grey = np.repeat(pixels[..., :1], 3, axis=-1)
    assert np.allclose(embedder.embed(view), embedder.embed(grey), atol=1e-5)


def test_rejects_bad_pixels(embedder: Embedder) -> None:
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed(np.zeros((1, 4, 8, 8), np.uint8))


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cpu_is_bf16_only_where_native(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ris_ray.model.embed as embed

    monkeypatch.setattr(embed, "cpu_has_fast_bf16", lambda: native)
    auto = Embedder("random", device="cpu")
    assert auto.dtype == (torch.bfloat16 if native else torch.float32)
    assert Embedder("random", device="cpu", precision="fp32").dtype == torch.float32
    assert Embedder("random", device="cpu", precision="bf16").dtype == torch.bfloat16
    with pytest.raises(InputError, match="--precision"):
        Embedder("random", device="cpu", precision="int8")


def test_bf16_fingerprints_stay_close_to_fp32() -> None:
    pixels = _batch(4, seed=5)
    ref = Embedder("random", device="cpu", precision="fp32").embed(pixels)
    got = Embedder("random", device="cpu", precision="bf16").embed(pixels)
    assert got.dtype == np.float32
    cos = (ref * got).sum(axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() > 0.999
    # Each tile is still nearest to its own fp32 fingerprint.
    d = ((got[:, None, :] - ref[None, :, :]) ** 2).sum(axis=2)
    assert (d.argmin(axis=1) == np.arange(4)).all()


class _Spy(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[0]))
        out: torch.Tensor = self.inner(x)
        return out


def test_cpu_forward_passes_are_capped_without_changing_results() -> None:
    e = Embedder("random", device="cpu", precision="fp32", batch_size=64)
    assert e.batch_size == 64 and e.step == CPU_MAX_BATCH
    pixels = _batch(CPU_MAX_BATCH + 3, seed=6)
    spy = _Spy(e.model)
    e.model = spy
    capped = e.embed(pixels)
    assert spy.sizes == [CPU_MAX_BATCH, 3]
    e.step = len(pixels)  # one pass over everything
    whole = e.embed(pixels)
    assert spy.sizes[-1] == len(pixels)
    assert np.allclose(capped, whole, atol=1e-4)


def _nan_weights(path: Path) -> Path:
    state = build_model(resolve_weights("random:1")).state_dict()
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in state.items()}, path)  # fmt: skip
    return path


def test_nan_weights_are_refused_before_any_work(tmp_path: Path, gen_dir: Path) -> None:
    import ray

    from ris_ray.core.config import IngestConfig
    from ris_ray.core.errors import EmbeddingError
    from ris_ray.ingest.pipeline import ingest

    path = _nan_weights(tmp_path / "nan.pth")
    emb = Embedder(str(path), precision="fp32")
    with pytest.raises(EmbeddingError, match="not finite"):
        emb.embed(_batch(2))  # a non-finite batch is an error, never fingerprints
    with pytest.raises(WeightsError, match="non-finite"):
        emb.check(64)
    db = tmp_path / "t.lance"
    started = ray.is_initialized()
    with pytest.raises(WeightsError, match="nan.pth"):
        ingest(IngestConfig(inputs=(str(gen_dir),), db=str(db), weights=str(path), progress=False))
    assert not db.exists() and ray.is_initialized() == started  # nothing done, no Ray started


def test_non_finite_batch_in_the_actor_fails_with_one_line(
    ray_session: None, tmp_path: Path
) -> None:
    import ray

    from ris_ray.core.records import Failure, TileBatch
    from ris_ray.ingest.actors import EmbedActor
    from ris_ray.ingest.rayloop import outcome as _outcome
    from ris_ray.store.schema import DatasetParams

    weights = resolve_weights(str(_nan_weights(tmp_path / "nan.pth")))
    actor = ray.remote(EmbedActor).remote(
        weights, DatasetParams(64, 64, weights.model_id), "cpu", "fp32", 4, 1
    )
    n = 2
    nan = np.full(n, np.nan)
    batch = TileBatch(
        tile_id=np.array(["a" * 20, "b" * 20], dtype=object),
        source=np.array(["s.tif"] * n, dtype=object),
        row=np.zeros(n, np.int32), col=np.array([0, 64], np.int32),
        width=np.full(n, 64, np.int32), height=np.full(n, 64, np.int32),
        valid_fraction=np.ones(n, np.float32), thumbnail=np.array([b""] * n, dtype=object),
        minx=nan, miny=nan, maxx=nan, maxy=nan, lon=nan, lat=nan, pixels=_batch(n),
    )  # fmt: skip
    result = _outcome(actor.embed.remote(batch))
    ray.kill(actor)
    # The actor's EmbeddingError comes back as a Failure with our one line, unwrapped.
    assert isinstance(result, Failure) and result.kind == "crash"
    text = result.reason
    assert "not finite" in text and "\n" not in text and "nan.pth" in text


def _scenes(n: int, seed: int) -> np.ndarray:
    """``n`` band-first 64 px tiles of a synthetic landscape (smooth, like imagery)."""
    from ris_ray.sample import landscape

    return np.stack([landscape(64, 64, seed=seed + i) for i in range(n)])


def _box_mean(band_first: np.ndarray, size: int) -> np.ndarray:
    n, c, h, w = band_first.shape
    blocks = band_first.reshape(n, c, size, h // size, size, w // size).astype(np.float64)
    return blocks.mean(axis=(3, 5)).transpose(0, 2, 3, 1)  # exact, not rounded


def test_embed_and_shrink_gives_the_box_mean_in_the_same_pass(embedder: Embedder) -> None:
    pixels = np.ascontiguousarray(_batch(5, seed=4).transpose(0, 3, 1, 2))  # band-first
    fingerprints, small = embedder.embed_and_shrink(pixels, 16)
    assert np.array_equal(fingerprints, embedder.embed(pixels))
    assert small.shape == (5, 16, 16, 3) and small.dtype == np.uint8
    assert np.abs(small - _box_mean(pixels, 16)).max() <= 0.5  # rounded to the nearest
    nhwc = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
    assert np.array_equal(embedder.embed_and_shrink(nhwc, 16)[1], small)  # either layout
    assert embedder.embed_and_shrink(pixels, 0)[1].shape == (0, 0, 0, 3)


def test_windows_of_one_call_are_embedded_as_one_array_without_joining(
    embedder: Embedder,
) -> None:
    from ris_ray.model.embed import tile_chunks

    pixels = np.ascontiguousarray(_batch(11, seed=5).transpose(0, 3, 1, 2))
    windows = [pixels[:3], pixels[3:4], pixels[4:11]]  # forward passes span them
    chunks = list(tile_chunks(windows, 4))
    assert [len(c) for c in chunks] == [4, 4, 3]
    assert np.array_equal(np.concatenate(chunks), pixels)
    assert chunks[2].base is pixels  # within one window: a view, not a copy
    fingerprints, small = embedder.embed_and_shrink(windows, 16)
    want, want_small = embedder.embed_and_shrink(pixels, 16)
    assert np.allclose(fingerprints, want, atol=1e-5) and np.array_equal(small, want_small)
    with pytest.raises(ValueError, match="same layout"):
        embedder.embed_and_shrink([pixels[:1], pixels[1:2].transpose(0, 2, 3, 1)], 0)


@pytest.mark.parametrize("size", [16, 24])
def test_the_gpu_shrink_equals_the_cpu_one(size: int) -> None:
    """:func:`shrink_tiles` (torch, what a GPU embedder runs) against Pillow's
    :func:`ris_ray.model.thumbnail.shrink` (what a CPU one runs), here on the CPU."""
    from ris_ray.model.embed import shrink_tiles
    from ris_ray.model.thumbnail import shrink

    pixels = _scenes(3, seed=7)
    got = shrink_tiles(torch.from_numpy(pixels), size).numpy()
    want = shrink(pixels, size)
    assert got.shape == want.shape == (3, size, size, 3) and got.dtype == np.uint8
    assert shrink(pixels[:0], size).shape == (0, size, size, 3)
    if size == 16:  # the box mean both ways, rounded to the nearest (ties may differ)
        exact = _box_mean(pixels, 16)
        assert np.abs(got - exact).max() <= 0.5 and np.abs(want - exact).max() <= 0.5
    else:  # adaptive pooling vs Pillow's fractional box: close, not equal
        assert np.abs(got.astype(np.int16) - want).mean() < 2


def test_embedder_shrinks_to_sizes_that_do_not_divide_the_tile(embedder: Embedder) -> None:
    from PIL import Image

    pixels = _scenes(2, seed=5)
    small = embedder.embed_and_shrink(pixels, 24)[1]
    assert small.shape == (2, 24, 24, 3)
    for got, tile in zip(small, pixels.transpose(0, 2, 3, 1), strict=True):
        ref = np.asarray(Image.fromarray(tile).resize((24, 24), Image.Resampling.BOX), np.int16)
        assert np.abs(got.astype(np.int16) - ref).mean() < 2


def _tile_batch(pixels: np.ndarray, first: int = 0) -> Any:
    """A :class:`TileBatch` of band-first 64 px ``pixels``, tiles ``first``... of a row."""
    from ris_ray.core.records import TileBatch

    n, nan = len(pixels), np.full(len(pixels), np.nan)
    return TileBatch(
        tile_id=np.array([chr(97 + first + i) * 20 for i in range(n)], dtype=object),
        source=np.array(["s.tif"] * n, dtype=object),
        row=np.zeros(n, np.int32), col=64 * np.arange(first, first + n, dtype=np.int32),
        width=np.full(n, 64, np.int32), height=np.full(n, 64, np.int32),
        valid_fraction=np.ones(n, np.float32), thumbnail=np.full(n, None, dtype=object),
        minx=nan, miny=nan, maxx=nan, maxy=nan, lon=nan, lat=nan, pixels=pixels.copy(),
    )  # fmt: skip


@pytest.mark.parametrize("size", [0, 16])
def test_actor_stores_jpeg_thumbnails_of_the_tiles(size: int) -> None:
    import io
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from ris_ray.ingest.actors import EmbedActor
    from ris_ray.model import thumbnail
    from ris_ray.store.schema import DatasetParams, EncodedRows, schema_for

    weights = resolve_weights("random")
    params = DatasetParams(64, 64, weights.model_id)
    actor = EmbedActor(weights, params, "cpu", "fp32", 4, 1, "float16", size)

    def table(*encoded: EncodedRows) -> pa.Table:  # the messages, decoded as the store would
        schema = schema_for(params, "float16")
        return pa.Table.from_batches(
            [pa.ipc.read_record_batch(e.message, schema) for e in encoded], schema
        )

    n = 3
    pixels = _scenes(n, seed=6)
    (whole,) = actor.embed(_tile_batch(pixels))
    assert whole.rows == n
    # Two windows in one call: one message each, the same rows as one window alone.
    first, rest = actor.embed(_tile_batch(pixels[:1]), _tile_batch(pixels[1:], first=1))
    assert (first.rows, rest.rows) == (1, 2)
    assert table(first, rest).equals(table(whole))
    blobs = table(whole).column("thumbnail").to_pylist()
    if size == 0:
        assert blobs == [None] * n
        return
    want = _box_mean(pixels, size)
    for blob, ref in zip(blobs, want, strict=True):
        im = Image.open(io.BytesIO(blob))
        assert im.format == "JPEG" and im.size == (size, size)
        assert (
            np.abs(np.asarray(im.convert("RGB"), np.float64) - ref).mean() < 8
        )  # JPEG q70 at 16 px, 4:2:0 chroma
    small = EmbedActor.infer(actor, [pixels], size)[1]
    with ThreadPoolExecutor(2) as pool:  # a GPU actor's encoding threads: same bytes
        assert thumbnail.encode_all(small, pool) == blobs


def test_read_only_pixels_are_embedded_alike_without_a_warning() -> None:
    # Ray hands the actor read-only views of the object store; torch takes them as they are.
    import warnings

    embedder = Embedder("random", device="cpu", precision="fp32", batch_size=4)
    pixels = _scenes(5, seed=3)
    view = pixels.copy()
    view.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, small = embedder.embed_and_shrink(view, 16)
    want, want_small = embedder.embed_and_shrink(pixels.copy(), 16)
    assert np.array_equal(got, want) and np.array_equal(small, want_small)
    assert not view.flags.writeable and np.array_equal(view, pixels)  # untouched
