"""``python -m ris_ray.cli``: the ``ris`` command."""

from ris_ray.cli import main

main()
