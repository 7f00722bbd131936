"""Shared ground: what every stage may use, and which uses no stage.

Errors (:mod:`~ris_ray.core.errors`), typed records passed between stages
(:mod:`~ris_ray.core.records`), validated configuration
(:mod:`~ris_ray.core.config`), dataset and input locations parsed once
(:mod:`~ris_ray.core.location`; :mod:`~ris_ray.core.uris` wraps it for
callers holding a string), object stores (:mod:`~ris_ray.core.objstore`),
safe filter literals (:mod:`~ris_ray.core.sql`) and output paths
(:mod:`~ris_ray.core.outputs`).

May import: the standard library and third-party packages only; nothing else
of ris_ray.
"""
