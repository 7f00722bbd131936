"""ris_ray: rapid image search over GeoTIFF tiles on Ray.

The library is organised one stage per module:

- :mod:`ris_ray.tiling`   window/tile arithmetic and windowed raster reads
- :mod:`ris_ray.embed`    the ResNet-18 embedder (torch only, no Ray)
- :mod:`ris_ray.store`    the Lance schema, writer and readers
- :mod:`ris_ray.pipeline` the Ray job that ties them together (``ingest``)
- :mod:`ris_ray.query`    exact k-NN search over a dataset
- :mod:`ris_ray.plot`     figures of a query and its neighbours
- :mod:`ris_ray.cli`      the ``ris`` command line
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
