"""Search: k-NN queries over a tile dataset.

Queries by tile, place, crop or several examples (:mod:`~ris_ray.search.query`),
the vectorised scan kept in memory by ``ris serve`` (:mod:`~ris_ray.search.scan`),
the vector index (:mod:`~ris_ray.search.index`), several datasets searched as
one (:mod:`~ris_ray.search.shards`), filters
(:mod:`~ris_ray.search.filters`), change between captures
(:mod:`~ris_ray.search.diff`), GIS exports (:mod:`~ris_ray.search.export`) and
figures (:mod:`~ris_ray.search.plot`).

May import: :mod:`ris_ray.core`, :mod:`ris_ray.raster`, :mod:`ris_ray.model`,
:mod:`ris_ray.store`. Not ingest or web.
"""
