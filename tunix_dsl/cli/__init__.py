"""The `tnx` command line: argument parsing and the jax-free commands
(`lint`, `fmt`, `graph`, `explain`, `lsp`), diagnostic and graph rendering.

Commands that compile or run (`plan`, `run`, `report`, ...) live in
`tunix_dsl.runtime.cli_commands` and are imported only when called.
"""

from tunix_dsl.cli.main import main

__all__ = ["main"]
