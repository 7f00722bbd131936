"""Rasters: opening a GeoTIFF (:mod:`~ris_ray.raster.dataset`), places and CRS
transforms (:mod:`~ris_ray.raster.geo`), and the pure window and tile
arithmetic with the windowed reads built on it (:mod:`~ris_ray.raster.tiling`).

May import: :mod:`ris_ray.core`; rasterio, numpy. No Ray, torch or Lance.
"""
