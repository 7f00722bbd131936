"""The ResNet-18 embedder: uint8 tiles in, 512-d fingerprints out.

This module needs only torch, torchvision and numpy, so it can be imported and
benchmarked on a GPU machine that has no Ray, rasterio or Lance.

:class:`Embedder` follows Ray's batch-inference pattern: the model is built
once in ``__init__`` and ``__call__(batch)`` maps a ``dict[str, ndarray]``
with ``"pixels"`` (``N x H x W x 3`` or band-first ``N x 3 x H x W`` uint8) to the same dict plus
``"fingerprint"`` (``N x 512`` float32). uint8 travels to the device; the
ImageNet normalisation, the cast to half precision and the channels-last
layout happen there.

Precision ``auto``: float16 on a GPU; on a CPU bfloat16 where the CPU has
native bf16 units (AMX or AVX512-BF16; 3-4x the float32 rate, fingerprints
within cosine 0.9999 of float32), else float32. On a CPU a forward pass takes
at most :data:`CPU_MAX_BATCH` tiles whatever ``batch_size`` is: bigger batches
spill the cache and run slower (see ``benchmarks/``). Results do not depend
on how a batch is cut.

Weights (``weights=``):

- ``"imagenet"``: torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` from the
  torch hub cache (``$TORCH_HOME/hub/checkpoints``); downloaded by torchvision
  if missing and the network allows, else :class:`WeightsError` says how to
  provide the file.
- ``"random"``: a seeded random init (``random`` or ``random:SEED``), for tests
  and demos only: its fingerprints carry no learned meaning.
- a path to a ``.pth``/``.pt`` state dict, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ris_ray.core.config import FINGERPRINT_DIM, check_device, check_precision
from ris_ray.core.errors import EmbeddingError, InputError, WeightsError
from ris_ray.model import thumbnail
from ris_ray.model.weights import ResolvedWeights, resolve_weights

__all__ = [
    "CPU_MAX_BATCH",
    "FINGERPRINT_DIM",
    "Embedder",
    "build_model",
    "cpu_has_fast_bf16",
    "default_num_threads",
    "fixed_num_threads",
    "imagenet_cached",
    "shrink_tiles",
    "tile_chunks",
]

log = logging.getLogger(__name__)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_DOWNLOAD_TIMEOUT_S = 20.0
#: Most tiles per forward pass on a CPU (measured on 2 cores: 8 runs ~1.3x the rate of 64).
CPU_MAX_BATCH = 8


def _imagenet_state_dict() -> Mapping[str, torch.Tensor]:
    from torch.hub import get_dir
    from torchvision.models import ResNet18_Weights

    w = ResNet18_Weights.IMAGENET1K_V1
    cached = Path(get_dir()) / "checkpoints" / w.url.rsplit("/", 1)[-1]
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        return w.get_state_dict(progress=False, check_hash=True)  # type: ignore[no-any-return]
    except Exception as exc:  # network down, proxy, partial file: all mean "not here"
        raise WeightsError(
            f"ImageNet weights for ResNet-18 are not in {cached.parent} and could not be "
            f"downloaded ({type(exc).__name__}). Copy {w.url} to {cached}, set TORCH_HOME, "
            "or pass --weights PATH (a state dict) or --weights random (tests only)"
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def _file_state_dict(path: str) -> Mapping[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{path}: not a loadable state dict with weights_only=True ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, expected a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def build_model(weights: ResolvedWeights) -> nn.Module:
    """ResNet-18 with its classifier replaced by identity (512-d pooled output), in eval mode."""
    from torchvision.models import resnet18

    if weights.kind == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(weights.seed)
            model = resnet18(weights=None)
    else:
        model = resnet18(weights=None)
        state = (
            _imagenet_state_dict()
            if weights.kind == "imagenet"
            else _file_state_dict(str(weights.path))
        )
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise WeightsError(
                f"weights {weights.description} do not fit ResNet-18: "
                f"{str(exc).splitlines()[-1].strip()}"
            ) from None
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise WeightsError(
                f"weights {weights.description} do not fit ResNet-18: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
    model.fc = nn.Identity()
    model.eval()
    module: nn.Module = model
    return module


def _pick_device(device: str) -> torch.device:
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is visible to this process")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 convolutions natively (AMX or AVX512-BF16)."""
    try:
        native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    except AttributeError:  # a torch without these probes: keep float32
        return False
    return bool(native) and bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    check_precision(precision)
    if precision != "auto":
        return _DTYPES[precision]
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


class Embedder:
    """Callable batch embedder (Ray batch-inference style).

    >>> emb = Embedder("random")                         # doctest: +SKIP
    >>> out = emb({"pixels": np.zeros((2, 256, 256, 3), np.uint8)})
    >>> out["fingerprint"].shape
    (2, 512)
    """

    def __init__(
        self,
        weights: str | ResolvedWeights = "imagenet",
        *,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 64,
        num_threads: int | None = None,
    ) -> None:
        self.weights = resolve_weights(weights) if isinstance(weights, str) else weights
        self.device = _pick_device(device)
        self.dtype = _pick_dtype(precision, self.device)
        self.batch_size = batch_size
        #: Tiles per forward pass: ``batch_size``, capped on a CPU (see module docs).
        self.step = batch_size if self.device.type == "cuda" else min(batch_size, CPU_MAX_BATCH)
        if num_threads is not None and self.device.type == "cpu":
            torch.set_num_threads(max(1, num_threads))
        model = build_model(self.weights)
        self.model = model.to(self.device).to(memory_format=torch.channels_last).to(self.dtype)
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(_IMAGENET_MEAN, device=self.device).view(shape) * 255.0
        self._inv_std = 1.0 / (torch.tensor(_IMAGENET_STD, device=self.device).view(shape) * 255.0)
        log.info("embedder %s on %s (%s)", self.weights.model_id, self.device, self.dtype)

    @property
    def model_id(self) -> str:
        return self.weights.model_id

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` or band-first ``(N, 3, H, W)`` uint8 -> ``(N, 512)`` float32,
        in forward passes of ``step`` tiles.

        The layout is told by the position of the 3 (tiles are at least 16 px).
        Either way the uint8 block goes to the device as it is and becomes the
        model's channels_last input there (on a GPU the layout change is free).
        """
        return self.embed_and_shrink(pixels, 0)[0]

    def forward_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` uint8 tiles on the embedder's device -> ``(N, 512)``
        float32 fingerprints, there: ``model((x - mean) / std)`` in the model's
        dtype and channels_last (the device part of :meth:`embed_and_shrink`;
        ``benchmarks/gpu.py`` times it alone)."""
        x = x.contiguous(memory_format=torch.channels_last)
        x = ((x.float() - self._mean) * self._inv_std).to(self.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        out: torch.Tensor = self.model(x).float()
        return out

    def embed_and_shrink(
        self, pixels: np.ndarray | Sequence[np.ndarray], size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`embed`, and each tile shrunk to ``size x size`` in the same pass
        (the thumbnails' pixels; ``(N, size, size, 3)`` uint8, empty when ``size`` is 0).

        ``pixels`` may be one array or several in one layout (the windows of one
        actor call), taken in order without joining them first: a forward pass
        copies tiles only where it spans two of them (:func:`tile_chunks`).

        The shrink is an area reduce: thumbnail pixel ``(i, j)`` is the mean
        of the tile's pixels in rows ``[i H/s, (i+1) H/s)`` and columns
        ``[j W/s, (j+1) W/s)`` (the box mean of ``H/s x W/s`` blocks when
        ``s`` divides the tile), rounded. On a GPU it runs there on the uint8
        tile already uploaded (:func:`shrink_tiles`); on a CPU with Pillow
        (:func:`ris_ray.model.thumbnail.shrink`, ~10x faster than torch's there).
        """
        parts = [pixels] if isinstance(pixels, np.ndarray) else list(pixels)
        band_first = _band_first(parts)
        n = sum(len(part) for part in parts)
        out = np.empty((n, FINGERPRINT_DIM), dtype=np.float32)
        small = np.empty((n if size else 0, size, size, 3), dtype=np.uint8)
        start = 0
        with torch.inference_mode():
            for tiles in tile_chunks(parts, self.step):
                part = np.ascontiguousarray(tiles)
                chunk = _host_tensor(part)
                if self.device.type == "cuda":
                    chunk = chunk.pin_memory().to(self.device, non_blocking=True)
                # NHWC memory viewed as NCHW is channels_last already; band-first
                # uint8 is made channels_last on the device, before the (4x larger)
                # float copies, whose elementwise ops keep the memory format.
                x = chunk if band_first else chunk.permute(0, 3, 1, 2)
                if size and self.device.type == "cuda":
                    small[start : start + len(part)] = shrink_tiles(x, size).cpu().numpy()
                elif size:
                    bands = part if band_first else part.transpose(0, 3, 1, 2)
                    small[start : start + len(part)] = thumbnail.shrink(bands, size)
                feats = self.forward_uint8(x)
                out[start : start + feats.shape[0]] = feats.cpu().numpy()
                start += len(part)
        finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            raise EmbeddingError(
                f"weights {self.weights.description}: {int((~finite).sum())} of {len(out)} "
                f"fingerprints are not finite (NaN/inf) on {self.device} {self.dtype}; "
                "nothing of this batch is stored"
            )
        return out, small

    def check(self, tile: int = 256) -> None:
        """Run one seeded random tile through the model; :class:`WeightsError` when the
        fingerprint is not finite (e.g. a weights file full of NaN): unusable weights
        are refused before any work."""
        pixels = np.random.default_rng(0).integers(0, 256, (1, tile, tile, 3), dtype=np.uint8)
        try:
            self.embed(pixels)
        except EmbeddingError:
            raise WeightsError(
                f"weights {self.weights.description} give non-finite fingerprints (NaN/inf) "
                "for a test tile: the file is unusable; re-export it or use other --weights"
            ) from None

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Add ``"fingerprint"`` for ``batch["pixels"]``; other keys pass through."""
        result = dict(batch)
        result["fingerprint"] = self.embed(np.asarray(batch["pixels"]))
        return result


def _band_first(parts: Sequence[np.ndarray]) -> bool:
    """Whether the uint8 tile arrays ``parts`` are band-first ``(N, 3, H, W)``
    rather than ``(N, H, W, 3)`` (all alike; tiles are at least 16 px)."""
    layouts = set()
    for part in parts:
        if part.ndim != 4 or part.dtype != np.uint8 or 3 not in (part.shape[1], part.shape[-1]):
            raise ValueError(
                f"pixels must be (N, H, W, 3) or (N, 3, H, W) uint8, got {part.shape} {part.dtype}"
            )
        layouts.add(part.shape[-1] != 3)
    if len(layouts) > 1:
        raise ValueError("pixels: all arrays must have the same layout")
    return layouts == {True}


def tile_chunks(parts: Sequence[np.ndarray], step: int) -> Iterator[np.ndarray]:
    """The tiles of ``parts`` in order, ``step`` at a time (the last chunk may be
    shorter): views within one array, a copy only where a chunk spans two."""
    pending: list[np.ndarray] = []
    count = 0
    for part in parts:
        at = 0
        while at < len(part):
            take = min(step - count, len(part) - at)
            pending.append(part[at : at + take])
            count, at = count + take, at + take
            if count == step:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, count = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


def _host_tensor(pixels: np.ndarray) -> torch.Tensor:
    """A tensor over ``pixels`` without a copy, also when they are read-only (a
    Ray object-store view): nothing writes to it, every step makes new tensors
    (torch warns about read-only arrays because writing through them is undefined)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(pixels)


def shrink_tiles(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, 3, H, W)`` uint8 on any device -> ``(N, size, size, 3)`` uint8 there:
    area interpolation (mean over each output pixel's input block), rounded."""
    y = nn.functional.interpolate(x.float(), size=(size, size), mode="area")
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def default_num_threads() -> int:
    """CPU threads an embedder should use: ``RIS_TORCH_THREADS`` or all cores."""
    return fixed_num_threads() or os.cpu_count() or 1


def fixed_num_threads() -> int | None:
    """The CPU threads ``RIS_TORCH_THREADS`` sets for every embedder (None: unset)."""
    env = os.environ.get("RIS_TORCH_THREADS")
    return int(env) if env else None


def imagenet_cached() -> bool:
    """Whether torchvision's ImageNet ResNet-18 weights are already in the torch hub cache."""
    from torch.hub import get_dir
    from torchvision.models import ResNet18_Weights

    name = ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return bool((Path(get_dir()) / "checkpoints" / name).is_file())
