"""tunix-dsl: a declarative language for LLM post-training.

This module must not import jax, flax, optax or orbax: `tnx lint`, `tnx fmt`
and `tnx graph` import it and must start in a fraction of a second.
"""

from __future__ import annotations

__version__ = "0.1.0"
