"""Suite-wide settings.

The dev extra installs libtpu (for `tnx plan --target tpu-…` tests). With it
present and JAX_PLATFORMS unset, jax would first try a TPU backend on these
CPU machines (stderr noise, a second of probing); the suite's computations
run on the CPU backend, so say so. TPU *compiles* for described topologies
(compiler/targets.py) do not depend on this setting.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
