"""A GPU check in one command (issue 21, item 9): embedder tiles/s on one GPU.

    python benchmarks/gpu.py --out gpu.md      # on a CUDA machine; .json for JSON
    python benchmarks/gpu.py --smoke           # tiny run (automatic without CUDA)

Needs torch, torchvision and numpy only (Pillow comes with torchvision): no
Ray, rasterio, Lance or pyarrow, and nothing to install from this repo (the
checkout's ``ris_ray`` is put on ``sys.path``). Finishes within ``--budget``
seconds (default 270): a configuration that would start after that is listed
as skipped, and a ``torch.compile`` mode starts only with
:data:`COMPILE_RESERVE_S` left.

The model is the shipped one: :class:`ris_ray.model.embed.Embedder` with
``--weights random`` semantics (ResNet-18 trunk to the 512-d pooled features,
seeded init, no download), fp16, channels_last, ImageNet normalisation on the
device. Each batch of ``256 x 256 x 3`` uint8 tiles also gets the 64 px
thumbnail reduce on the device (:func:`ris_ray.model.embed.shrink_tiles`), as
``Embedder.embed_and_shrink`` does in ingest. Modes:

- ``shipped``: ``Embedder.embed_and_shrink`` itself, host numpy in and out
  (pins each chunk, uploads, embeds, copies back): what an ingest actor pays.
- ``upload``: the pinned uint8 host -> device copy alone.
- ``thumbnail``: the device-side area reduce 256 -> 64 alone.
- ``eager``: pinned uint8 upload, :func:`device_step` (the same ops as the
  shipped call), results copied back into pinned host buffers.
- ``eager+graphs``: ``eager`` with the step captured once in a CUDA graph.
- ``compile``: ``eager`` with ``torch.compile`` (inductor), batch dimension
  dynamic so one compile serves all batch sizes (``--static-compile``: one per size).
- ``compile+graphs``: ``torch.compile(mode="reduce-overhead")`` (CUDA graphs).

Before timing, :func:`device_step` is checked against ``embed_and_shrink`` on
the same tiles (the benchmark stops if they differ); every row's note gives
its agreement with that reference (least cosine of the fingerprints, largest
thumbnail pixel difference). Warm-up calls (and the compile) are not timed;
GPU time comes from CUDA events over many calls. Not used by ris_ray itself.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if (REPO / "ris_ray" / "model" / "embed.py").is_file():
    sys.path.insert(0, str(REPO))

from ris_ray.model.embed import Embedder, shrink_tiles  # noqa: E402

__all__ = ["MODES", "Row", "device_step", "main", "markdown", "run_bench"]

TILE, THUMB = 256, 64
BATCHES = (64, 128, 256, 512, 1024)
SMOKE_TILE, SMOKE_THUMB, SMOKE_BATCHES = 64, 16, (2, 4)
MODES = ("shipped", "upload", "thumbnail", "eager", "eager+graphs", "compile", "compile+graphs")
CUDA_ONLY = {"upload", "eager+graphs", "compile+graphs"}
#: Seconds of budget a torch.compile mode needs left to start (its first compile).
COMPILE_RESERVE_S = 75.0
WARMUP, MIN_ITERS, MAX_ITERS, TARGET_S = 3, 5, 200, 1.0
NO_GPU_NOTE = "no GPU: CPU smoke run, numbers are not GPU numbers"

Fn = Callable[[], None]
Result = Callable[[], tuple[np.ndarray | None, np.ndarray | None]]


@dataclass(frozen=True)
class Row:
    """One configuration's result; ``tiles_per_s`` is None when it did not run (see ``note``)."""

    batch: int
    mode: str
    tiles_per_s: float | None
    ms_per_batch: float | None
    peak_gpu_mib: float | None
    note: str


@dataclass(frozen=True)
class Setup:
    """What every mode shares: the embedder, the host tiles and the reference outputs."""

    emb: Embedder
    host: torch.Tensor  # (max batch, T, T, 3) uint8, pinned on a CUDA run
    thumb: int
    ref: tuple[np.ndarray, np.ndarray]  # embed_and_shrink of the first REF_TILES tiles
    static_compile: bool


REF_TILES = 2


def device_step(emb: Embedder, tiles: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, T, T, 3)`` uint8 on the embedder's device -> (``(N, 512)`` float32
    fingerprints, ``(N, size, size, 3)`` uint8 thumbnails), there: the device
    part of ``Embedder.embed_and_shrink`` (:meth:`Embedder.forward_uint8` and
    ``shrink_tiles``; checked by :func:`_parity`)."""
    x = tiles.permute(0, 3, 1, 2)
    return emb.forward_uint8(x), shrink_tiles(x, size)


def _agreement(ref: tuple[np.ndarray, np.ndarray], feats: Any, small: Any) -> str:
    """A note: least cosine of ``feats`` to the reference fingerprints, largest thumbnail Δ."""
    parts = []
    if feats is not None:
        f = np.asarray(feats, dtype=np.float64)[:REF_TILES]
        r = ref[0].astype(np.float64)
        cos = (f * r).sum(1) / (np.linalg.norm(f, axis=1) * np.linalg.norm(r, axis=1) + 1e-30)
        parts.append(f"min cos {cos.min():.6f}")
    if small is not None:
        d = np.abs(np.asarray(small)[:REF_TILES].astype(np.int16) - ref[1].astype(np.int16))
        parts.append(f"thumb max Δ {int(d.max())}")
    return ", ".join(parts)


def _parity(s: Setup) -> str:
    """Stop unless :func:`device_step` gives what ``embed_and_shrink`` gives on the same tiles."""
    tiles = s.host[:REF_TILES].to(s.emb.device)
    feats, small = device_step(s.emb, tiles, s.thumb)
    f, t = feats.cpu().numpy(), small.cpu().numpy()
    # On a CPU the shipped thumbnails come from Pillow (rounding may differ by 1), on a GPU
    # from shrink_tiles itself.
    tol = 0 if s.emb.device.type == "cuda" else 1
    thumbs_ok = np.abs(t.astype(np.int16) - s.ref[1].astype(np.int16)).max() <= tol
    if not (np.allclose(f, s.ref[0], rtol=1e-3, atol=1e-3) and thumbs_ok):
        raise SystemExit(
            "benchmarks/gpu.py: device_step differs from Embedder.embed_and_shrink "
            f"({_agreement(s.ref, f, t)}): update device_step to match ris_ray/model/embed.py"
        )
    return _agreement(s.ref, f, t)


def _outputs(s: Setup, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Device input buffer, and host buffers (pinned on a GPU) for a batch's results."""
    pin = s.emb.device.type == "cuda"
    x = torch.empty((b, *s.host.shape[1:]), dtype=torch.uint8, device=s.emb.device)
    f = torch.empty((b, 512), dtype=torch.float32, pin_memory=pin)
    t = torch.empty((b, s.thumb, s.thumb, 3), dtype=torch.uint8, pin_memory=pin)
    return x, f, t


def _looped(s: Setup, b: int, step: Callable[[torch.Tensor], Any], mark: bool) -> tuple[Fn, Result]:
    """upload -> ``step`` -> copy back, all queued without a host sync."""
    x, f, t = _outputs(s, b)
    src = s.host[:b]

    def fn() -> None:
        x.copy_(src, non_blocking=True)
        if mark:
            torch.compiler.cudagraph_mark_step_begin()
        feats, small = step(x)
        f.copy_(feats, non_blocking=True)
        t.copy_(small, non_blocking=True)

    return fn, lambda: (f.numpy(), t.numpy())


def _graphed(s: Setup, b: int) -> tuple[Fn, Result]:
    """``eager`` with :func:`device_step` captured once in a CUDA graph (static buffers)."""
    x, f, t = _outputs(s, b)
    src = s.host[:b]
    x.copy_(src)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP):
            device_step(s.emb, x, s.thumb)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        feats, small = device_step(s.emb, x, s.thumb)

    def fn() -> None:
        x.copy_(src, non_blocking=True)
        graph.replay()
        f.copy_(feats, non_blocking=True)
        t.copy_(small, non_blocking=True)

    return fn, lambda: (f.numpy(), t.numpy())


_COMPILED: dict[str, Callable[[torch.Tensor], Any]] = {}


def _compiled(s: Setup, b: int, mode: str) -> tuple[Fn, Result]:
    """``eager`` through ``torch.compile`` (one compiled function per mode, reused across sizes)."""
    if mode not in _COMPILED:
        torch._dynamo.reset()
        _COMPILED.clear()
        kw: dict[str, Any] = {"dynamic": False} if s.static_compile else {}
        if mode == "compile+graphs":
            kw["mode"] = "reduce-overhead"
        if s.emb.device.type != "cuda":
            kw["backend"] = "eager"  # smoke: dynamo's tracing only, no inductor C++ build
        _COMPILED[mode] = torch.compile(lambda x: device_step(s.emb, x, s.thumb), **kw)
    compiled = _COMPILED[mode]

    def step(x: torch.Tensor) -> Any:
        if not s.static_compile:
            torch._dynamo.maybe_mark_dynamic(x, 0)
        return compiled(x)

    return _looped(s, b, step, mark=mode == "compile+graphs")


def _build(s: Setup, b: int, mode: str) -> tuple[Fn, Result]:
    """The callable that runs one batch in ``mode``, and a getter of its last results."""
    if mode == "shipped":
        tiles = s.host[:b].numpy()
        last: list[tuple[np.ndarray, np.ndarray]] = []

        def shipped() -> None:
            last[:] = [s.emb.embed_and_shrink(tiles, s.thumb)]

        return shipped, lambda: last[0]
    if mode == "upload":
        x, _, _ = _outputs(s, b)
        src = s.host[:b]

        def upload() -> None:
            x.copy_(src, non_blocking=True)

        return upload, lambda: (None, None)
    if mode == "thumbnail":
        dev = s.host[:b].to(s.emb.device).permute(0, 3, 1, 2)
        small: list[torch.Tensor] = []

        def thumbnail() -> None:
            small[:] = [shrink_tiles(dev, s.thumb)]

        return thumbnail, lambda: (None, small[0].cpu().numpy())
    if mode == "eager":
        return _looped(s, b, lambda x: device_step(s.emb, x, s.thumb), mark=False)
    if mode == "eager+graphs":
        return _graphed(s, b)
    return _compiled(s, b, mode)


def _time(fn: Fn, cuda: bool) -> tuple[float, float]:
    """(seconds of the first call, seconds per call after warm-up): CUDA events on a GPU."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    for _ in range(WARMUP):
        fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    n = max(MIN_ITERS, min(MAX_ITERS, math.ceil(TARGET_S / max(time.perf_counter() - t0, 1e-6))))
    if not cuda:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return first, (time.perf_counter() - t0) / n
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    end.synchronize()
    return first, start.elapsed_time(end) / 1000.0 / n


def _skip_reason(mode: str, cuda: bool, left: float, compiled_before: bool) -> str | None:
    if mode in CUDA_ONLY and not cuda:
        return "skipped: needs CUDA"
    if left <= 0:
        return "skipped: time budget spent"
    if mode.startswith("compile") and not compiled_before and left < COMPILE_RESERVE_S and cuda:
        return f"skipped: {left:.0f} s of budget left, a compile needs ~{COMPILE_RESERVE_S:.0f}"
    return None


def _one(s: Setup, b: int, mode: str) -> Row:
    cuda = s.emb.device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        fn, result = _build(s, b, mode)
        first, per = _time(fn, cuda)
    except Exception as exc:  # a mode this machine cannot run (no triton, capture refused)
        msg = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        return Row(b, mode, None, None, None, f"failed: {type(exc).__name__}: {msg}")
    if cuda:
        torch.cuda.synchronize()
    note = _agreement(s.ref, *result())
    if mode.startswith("compile") or mode == "eager+graphs":
        note = f"{note}; first call {first:.1f} s"
    if mode.startswith("compile") and not cuda:
        note = f"{note}; dynamo only (backend=eager, no inductor)"
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return Row(b, mode, b / per, per * 1000.0, peak, note)


def run_bench(
    s: Setup, batches: Sequence[int], modes: Sequence[str], budget_s: float, t0: float
) -> list[Row]:
    """Every (mode, batch) in that order; what the budget leaves no time for is a skipped row."""
    rows: list[Row] = []
    print(markdown({}, rows), end="", flush=True)
    for mode in modes:
        for b in batches:
            left = budget_s - (time.monotonic() - t0)
            why = _skip_reason(mode, s.emb.device.type == "cuda", left, mode in _COMPILED)
            rows.append(Row(b, mode, None, None, None, why) if why else _one(s, b, mode))
            print(_line(rows[-1]), flush=True)
            gc.collect()
    return rows


def _fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _line(r: Row) -> str:
    return (
        f"| {r.batch} | {r.mode} | {_fmt(r.tiles_per_s, 0)} | {_fmt(r.ms_per_batch, 2)} "
        f"| {_fmt(r.peak_gpu_mib, 0)} | {r.note} |"
    )


def markdown(meta: dict[str, str], rows: Sequence[Row]) -> str:
    """The run as markdown: a header of ``meta`` lines, then one table row per configuration."""
    head = [f"- {k}: {v}" for k, v in meta.items()] + ([""] if meta else [])
    table = [
        "| batch | mode | tiles/s | ms/batch | peak GPU MiB | note |",
        "|---:|---|---:|---:|---:|---|",
        *(_line(r) for r in rows),
    ]
    return "\n".join([*head, *table]) + "\n"


def _meta(emb: Embedder, tile: int, thumb: int, smoke: bool) -> dict[str, str]:
    cuda = emb.device.type == "cuda"
    name = torch.cuda.get_device_name(emb.device) if cuda else (platform.processor() or "CPU")
    meta = {
        "device": f"{name} ({emb.device})"
        if cuda
        else f"{name} ({torch.get_num_threads()} threads)",
        "torch": f"{torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version()})",
        "model": f"{emb.weights.model_id} (Embedder, {emb.dtype}, channels_last, uint8 upload)",
        "tiles": f"{tile}x{tile}x3 uint8, thumbnails {thumb} px (device area reduce)",
    }
    if smoke or not cuda:
        meta["note"] = NO_GPU_NOTE if not cuda else "smoke run: tiny batches, not a benchmark"
    return meta


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", type=Path, help="write the results here (.json: JSON, else markdown)")
    p.add_argument("--budget", type=float, default=270.0, help="seconds for the whole run")
    p.add_argument("--smoke", action="store_true", help="tiny run (automatic without CUDA)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--batches", help="comma-separated batch sizes (default 64,...,1024)")
    p.add_argument("--modes", help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--static-compile", action="store_true", help="compile once per batch size")
    p.add_argument(
        "--cudnn-benchmark", action="store_true", help="set cudnn.benchmark (ingest does not)"
    )
    return p.parse_args(argv)


def _pick(text: str | None, default: Sequence[Any], kind: Callable[[str], Any]) -> list[Any]:
    return list(default) if not text else [kind(v.strip()) for v in text.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    t0 = time.monotonic()
    a = _args(argv)
    cuda = torch.cuda.is_available() and a.device != "cpu"
    if a.device == "cuda" and not cuda:
        raise SystemExit("benchmarks/gpu.py: --device cuda: no CUDA device is visible")
    smoke = a.smoke or not cuda
    if not cuda:
        print(NO_GPU_NOTE, flush=True)
    tile, thumb = (SMOKE_TILE, SMOKE_THUMB) if smoke else (TILE, THUMB)
    batches = _pick(a.batches, SMOKE_BATCHES if smoke else BATCHES, int)
    modes = _pick(a.modes, MODES, str)
    bad = sorted(set(modes) - set(MODES)) + [str(b) for b in batches if b < REF_TILES]
    if bad:
        raise SystemExit(f"benchmarks/gpu.py: unknown mode or batch {bad}: modes are {MODES}")
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    emb = Embedder(
        "random", device="cuda" if cuda else "cpu", precision="fp16" if cuda else "auto",
        batch_size=max(batches),
    )  # fmt: skip
    pixels = np.random.default_rng(0).integers(0, 256, (max(batches), tile, tile, 3), np.uint8)
    host = torch.from_numpy(pixels)
    with torch.inference_mode():
        s = Setup(
            emb, host.pin_memory() if cuda else host, thumb,
            emb.embed_and_shrink(pixels[:REF_TILES], thumb), a.static_compile,
        )  # fmt: skip
        meta = _meta(emb, tile, thumb, smoke)
        meta["parity"] = f"device_step vs Embedder.embed_and_shrink: {_parity(s)}"
        meta["budget"] = f"{a.budget:.0f} s"
        print("\n".join(f"- {k}: {v}" for k, v in meta.items()), flush=True)
        rows = run_bench(s, batches, modes, a.budget, t0)
    skipped = sum(r.tiles_per_s is None for r in rows)
    meta["run"] = f"{time.monotonic() - t0:.0f} s, {len(rows) - skipped} ran, {skipped} skipped"
    text = markdown(meta, rows)
    print("\n" + text, flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        data = {"meta": meta, "rows": [asdict(r) for r in rows], "markdown": text}
        a.out.write_text(json.dumps(data, indent=1) if a.out.suffix == ".json" else text)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
