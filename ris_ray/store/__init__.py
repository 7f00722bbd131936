"""The store: a Lance dataset of tiles and its one owner.

The explicit Arrow schema (:mod:`~ris_ray.store.schema`), the dataset's owner
:class:`~ris_ray.store.tilestore.TileStore` (open, commit, compact, prune),
the per-file manifest (:mod:`~ris_ray.store.manifest`), rows staged before a
commit (:mod:`~ris_ray.store.staging`), fragments the embedders wrote
(:mod:`~ris_ray.store.fragments`), Lance opens and writes with a
location's storage options (:mod:`~ris_ray.store.lance_io`) and the writer
locks (:mod:`~ris_ray.store.lock`, :mod:`~ris_ray.store.storelock`).

May import: :mod:`ris_ray.core`; lance, pyarrow. Not raster, model, ingest,
search or web.
"""
