"""``ris serve``: the analyst's map in a browser over a dataset held open.

:func:`create_app` builds the FastAPI app (:mod:`ris_ray.web.app`);
:mod:`ris_ray.web.session` keeps the dataset, its vectors and metadata in
memory between requests; :func:`serve` runs it with uvicorn.

May import: :mod:`ris_ray.search`, :mod:`ris_ray.store`, :mod:`ris_ray.raster`,
:mod:`ris_ray.core`; FastAPI, uvicorn. Not ingest.
"""

from __future__ import annotations

from ris_ray.web.app import create_app
from ris_ray.web.server import serve

__all__ = ["create_app", "serve"]
