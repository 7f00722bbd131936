"""ris_ray: rapid image search over GeoTIFF tiles on Ray.

The library is organised one stage per module:

- :mod:`ris_ray.raster`   opening a raster (the one way)
- :mod:`ris_ray.records`  typed records between stages (TileBatch, Failure, TileRef)
- :mod:`ris_ray.tiling`   window/tile arithmetic and windowed raster reads
- :mod:`ris_ray.embed`    the ResNet-18 embedder (torch only, no Ray)
- :mod:`ris_ray.actors`   the embedder Ray actor
- :mod:`ris_ray.store`    the Lance schema, writer, readers and TileStore (the dataset's owner)
- :mod:`ris_ray.scheduler` the ingest scheduler (Ray-free: what runs next, what results mean)
- :mod:`ris_ray.pipeline` the thin Ray loop that ties them together (``ingest``)
- :mod:`ris_ray.query`    exact k-NN search over a dataset
- :mod:`ris_ray.filters`  prefilters for a search (sources, area, exclusions)
- :mod:`ris_ray.geo`      places: coordinates, CRS transforms, tile outlines
- :mod:`ris_ray.export`   results as GeoJSON / CSV
- :mod:`ris_ray.diff`     change between two captures of the same area
- :mod:`ris_ray.plot`     figures of a query and its neighbours, change heat maps
- :mod:`ris_ray.cli`      the ``ris`` command line
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
