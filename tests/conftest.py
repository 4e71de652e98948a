import os
import sys

import ppflux_lightning  # noqa: F401  (sets the MKL switch before paddle is imported)

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("OMP_NUM_THREADS", "2")
