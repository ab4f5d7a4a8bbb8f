"""tunix-dsl: a declarative language for LLM post-training.

This module must not import jax, flax, optax or orbax: `tnx lint`, `tnx fmt`
and `tnx graph` import it and must start in a fraction of a second.
"""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: `import tunix_dsl` stays cheap
    if name in ("load", "parse"):
        from tunix_dsl import api

        return getattr(api, name)
    raise AttributeError(f"module 'tunix_dsl' has no attribute {name!r}")


__all__ = ["__version__", "load", "parse"]
