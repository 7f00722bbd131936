"""Ray job entry point for ingest.

Submit from a checkout (the working dir is shipped to the cluster):

    ray job submit --working-dir . -- python jobs/ingest.py INPUT... --db DB [options]

The options are exactly those of ``ris ingest`` (see ``ris ingest --help``).
Inside a Ray job ``RAY_ADDRESS`` is set, so the library joins the cluster
instead of starting an embedded Ray.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The job's working dir is the checkout; make the package importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ris_ray.cli import main

if __name__ == "__main__":
    main(["ingest", *sys.argv[1:]])
