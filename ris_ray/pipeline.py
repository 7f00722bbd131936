"""``ris_ray.pipeline``, as it was before the package was grouped by stage.

The Ray loop now lives in :mod:`ris_ray.ingest.pipeline`; this module
re-exports its entry points so ``ris_ray.pipeline.ingest(cfg, actor_cls=...)``
(benchmarks, scripts of users) keeps working.
"""

from __future__ import annotations

from ris_ray.ingest.pipeline import IngestReport, ingest

__all__ = ["IngestReport", "ingest"]
