"""Ingest: GeoTIFFs to fingerprints in a Lance dataset, as a Ray program.

Inputs are discovered (:mod:`~ris_ray.ingest.inputs`), probed and planned
into windows, cut into tiles by CPU tasks (:mod:`~ris_ray.ingest.tasks`),
embedded by actors (:mod:`~ris_ray.ingest.actors`), and committed by the
store; the Ray-free :class:`~ris_ray.ingest.scheduler.Scheduler` decides what
runs next and what results mean (composing :mod:`~ris_ray.ingest.planning`,
:mod:`~ris_ray.ingest.backpressure` and :mod:`~ris_ray.ingest.files`), and
:mod:`~ris_ray.ingest.pipeline` is the thin Ray loop around it (Ray and the
embedders: :mod:`~ris_ray.ingest.cluster`; the run's report:
:mod:`~ris_ray.ingest.report`). Local Ray instances: :mod:`~ris_ray.ingest.raylocal`.

May import: :mod:`ris_ray.core`, :mod:`ris_ray.raster`, :mod:`ris_ray.model`,
:mod:`ris_ray.store`; Ray. Not search or web.
"""
