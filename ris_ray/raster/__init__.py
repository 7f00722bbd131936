"""Rasters: opening a GeoTIFF (:mod:`~ris_ray.raster.dataset`), places and CRS
transforms (:mod:`~ris_ray.raster.geo`), the pure window and tile arithmetic
(:mod:`~ris_ray.raster.tiling`), band choice and pixel conversion
(:mod:`~ris_ray.raster.bands`) and the windowed reads built on them
(:mod:`~ris_ray.raster.reading`).

May import: :mod:`ris_ray.core`; rasterio, numpy. No Ray, torch or Lance.
"""
