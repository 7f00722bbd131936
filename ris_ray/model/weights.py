"""Which weights an embedder uses: a choice made concrete, without loading it.

Torch-free (torchvision is imported only to name the ImageNet file), so the
driver, the embedder actor's module and tools can resolve and pass weights
around without importing torch; :func:`ris_ray.model.embed.build_model` loads them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ris_ray.core.errors import InputError, WeightsError

__all__ = ["ARCH", "ResolvedWeights", "resolve_weights", "weights_for_model"]

ARCH = "resnet18"


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights choice made concrete: what to load and the id it gets.

    ``model_id`` is stored with every fingerprint (``resnet18/imagenet1k_v1``,
    ``resnet18/random-seed0``, ``resnet18/file-<sha256[:12]>``) and decides
    whether two fingerprints are comparable. ``description`` is the line we
    print so users always know which weights were used.
    """

    kind: str  # "imagenet" | "random" | "file"
    model_id: str
    description: str
    path: str | None = None
    seed: int = 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_weights(spec: str) -> ResolvedWeights:
    """Turn ``imagenet`` / ``random[:SEED]`` / ``PATH`` into :class:`ResolvedWeights`.

    Resolution does not load anything; :func:`build_model` does. A path must
    exist (its SHA-256 becomes part of the model id).
    """
    if spec == "imagenet":
        from torchvision.models import ResNet18_Weights

        w = ResNet18_Weights.IMAGENET1K_V1
        return ResolvedWeights(
            "imagenet", f"{ARCH}/imagenet1k_v1", f"ImageNet ({w.url.rsplit('/', 1)[-1]})"
        )
    if spec == "random" or spec.startswith("random:"):
        try:
            seed = int(spec.split(":", 1)[1]) if ":" in spec else 0
        except ValueError:
            raise InputError(f"--weights {spec!r}: use random or random:SEED") from None
        return ResolvedWeights(
            "random",
            f"{ARCH}/random-seed{seed}",
            f"random init, seed {seed} (test/demo only: not meaningful)",
            seed=seed,
        )
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(
            f"--weights {spec!r}: not 'imagenet', 'random' or an existing weights file"
        )
    digest = _sha256(path)[:12]
    return ResolvedWeights(
        "file", f"{ARCH}/file-{digest}", f"file {path} (sha256 {digest})", path=str(path.resolve())
    )


def weights_for_model(model_id: str, path: str | None = None) -> ResolvedWeights:
    """The weights that produced ``model_id`` (for embedding a query the same way).

    File weights cannot be found from the id alone: pass the file as ``path``;
    its hash must match.
    """
    arch, _, name = model_id.partition("/")
    if arch != ARCH:
        raise WeightsError(f"dataset model {model_id!r} is not a {ARCH} model this version knows")
    if name == "imagenet1k_v1":
        return resolve_weights("imagenet")
    if name.startswith("random-seed"):
        return resolve_weights(f"random:{name.removeprefix('random-seed')}")
    if name.startswith("file-"):
        if path is None:
            raise WeightsError(
                f"dataset was built with weights file {name} (sha256 prefix): "
                "pass it as --weights PATH"
            )
        resolved = resolve_weights(path)
        if resolved.model_id != model_id:
            raise WeightsError(f"--weights {path}: hash does not match the dataset's {model_id}")
        return resolved
    raise WeightsError(f"unknown model id {model_id!r}")
