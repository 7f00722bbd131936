"""ris_ray: rapid image search over GeoTIFF tiles on Ray.

The package is grouped by stage; every import arrow points down this list
(``tests/test_layers.py`` checks it with import-linter):

- :mod:`ris_ray.cli`:    the ``ris`` command line (one error boundary)
- :mod:`ris_ray.web`:    ``ris serve``, the map and its HTTP API;
  :mod:`ris_ray.sample`: generated sample imagery and fingerprints
- :mod:`ris_ray.ingest`: files to fingerprints: plan, tile, embed, schedule, the Ray loop
- :mod:`ris_ray.search`: k-NN queries, filters, change, export, figures, the vector index
- :mod:`ris_ray.store`:  the Lance dataset: schema, owner, manifest, staging, locks
- :mod:`ris_ray.model`:  the ResNet-18 embedder, its weights and thumbnails (torch, no Ray)
- :mod:`ris_ray.raster`: opening rasters, window arithmetic, windowed reads, places and CRSs
- :mod:`ris_ray.core`:   shared ground: errors, typed records, config, locations, object stores

``ris_ray.pipeline`` re-exports :func:`ris_ray.ingest.pipeline.ingest` for
callers of the old flat layout.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
