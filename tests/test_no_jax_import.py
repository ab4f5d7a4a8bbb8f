"""`tnx lint | fmt | graph | explain | lsp` must never import jax, flax, optax or orbax.

`lint` and `graph` also keep networkx off their start-up path (it costs ~60 ms;
`bench/lint_startup.py`): the checker's graph is `tunix_dsl.check.dataflow.Dataflow`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from tunix_dsl.cli import main
codes = [
    main(["lint", "examples/quickstart.tnx"]),
    main(["fmt", "--check", "examples/quickstart.tnx"]),
    main(["graph", "examples/quickstart.tnx", "--format", "dot"]),
    main(["explain", "grpo"]),
]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax"))
print(json.dumps({"codes": codes, "heavy": heavy}))
"""

LSP_PROBE = """
import json, sys
from pathlib import Path
from tunix_dsl.api import parse
from tunix_dsl.lsp.complete import complete
from tunix_dsl.lsp.hover import hover_text
from tunix_dsl.lsp.positions import LineIndex
from tunix_dsl.lsp.scan import scan
from tunix_dsl.lsp.server import build_server
build_server()
text = Path("examples/quickstart.tnx").read_text()
pipeline = parse(text, "examples/quickstart.tnx")
items = complete(text, text.index("steps          = max("), LineIndex(text))
hovered = hover_text(text, scan(text), text.index("= tiny") + 3, pipeline)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax"))
print(json.dumps({"items": len(items), "hover": "parameters" in hovered, "heavy": heavy}))
"""

LIGHT_PROBE = """
import json, sys
from tunix_dsl.cli import main
codes = [main(["lint", "examples/quickstart.tnx"]), main(["graph", "examples/quickstart.tnx"])]
print(json.dumps({"codes": codes, "networkx": "networkx" in sys.modules}))
"""


def test_front_end_commands_import_no_jax_in_a_fresh_interpreter() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0, 0, 0]
    assert result["heavy"] == []


def test_language_server_imports_no_jax() -> None:
    done = subprocess.run([sys.executable, "-c", LSP_PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["items"] > 0 and result["hover"] is True
    assert result["heavy"] == []


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run([sys.executable, "-m", "tunix_dsl", "lint", "examples/quickstart.tnx"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([sys.executable, "-m", "tunix_dsl", "lint", "missing.tnx"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_lint_and_graph_do_not_import_networkx() -> None:
    done = subprocess.run([sys.executable, "-c", LIGHT_PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"codes": [0, 0], "networkx": False}


PLUGIN_PROBE = """
import json, sys
from tunix_dsl.cli import main
codes = [main(["lint", "examples/plugins/tnx-kto/kto.tnx"]), main(["explain", "kto"])]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax"))
print(json.dumps({"codes": codes, "heavy": heavy, "kto": "tnx_kto.schema" in sys.modules,
                  "lowering": "tnx_kto.lowering" in sys.modules}))
"""


def test_lint_with_a_plugin_package_installed_imports_no_jax(tmp_path: Path) -> None:
    """Entry points are read from installed metadata; the plugin's schema module loads, its
    lowering (jax) does not."""
    from tests.plugins.install import KTO, env_with, install

    site = install(KTO, tmp_path / "site")
    done = subprocess.run([sys.executable, "-c", PLUGIN_PROBE], cwd=ROOT, env=env_with(site),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0], "heavy": [], "kto": True, "lowering": False}
