"""The model: the ResNet-18 :class:`~ris_ray.model.embed.Embedder` (load once,
call per batch), its weights (:mod:`~ris_ray.model.weights`) and the
thumbnails made beside each fingerprint (:mod:`~ris_ray.model.thumbnail`).

May import: :mod:`ris_ray.core`; torch, torchvision, numpy, Pillow. No Ray,
rasterio or Lance, so the embedder can be benchmarked with torch alone.
"""
