"""Diagnostic codes and lint rules (a registry; see `registry.py`).

Importing this package registers every code: the checker's own
(`codes.py`), the whole-pipeline checks (`pipeline_checks.py`) and the
warnings (`warnings.py`), and the run-time constraints (`run_checks.py`, `run_limits.py`). `run_rules(pipeline)` runs every lint check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunix_dsl.grammar.diagnostics import Diagnostic
from tunix_dsl.grammar.spans import Span
from tunix_dsl.rules import agent_budget as _agent_budget  # noqa: F401  (registers codes)
from tunix_dsl.rules import agent_checks as _agent_checks  # noqa: F401
from tunix_dsl.rules import agent_eval_checks as _agent_eval_checks  # noqa: F401
from tunix_dsl.rules import async_checks as _async_checks  # noqa: F401
from tunix_dsl.rules import codes as _codes  # noqa: F401
from tunix_dsl.rules import data_checks as _data_checks  # noqa: F401
from tunix_dsl.rules import data_sources as _data_sources  # noqa: F401
from tunix_dsl.rules import pipeline_checks as _pipeline_checks  # noqa: F401
from tunix_dsl.rules import plugin_codes as _plugin_codes  # noqa: F401
from tunix_dsl.rules import preflight_codes as _preflight_codes  # noqa: F401
from tunix_dsl.rules import rl_checks as _rl_checks  # noqa: F401
from tunix_dsl.rules import run_checks as _run_checks  # noqa: F401
from tunix_dsl.rules import run_limits as _run_limits  # noqa: F401
from tunix_dsl.rules import target_checks as _target_checks  # noqa: F401
from tunix_dsl.rules import tool_rows as _tool_rows  # noqa: F401
from tunix_dsl.rules import warnings as _warnings  # noqa: F401
from tunix_dsl.rules.registry import RULES, Rule, diagnostic

if TYPE_CHECKING:
    from tunix_dsl.check.ir import Pipeline


def all_rules() -> list[Rule]:
    """Every registered code, sorted."""
    return [RULES[code] for code in sorted(RULES)]


def run_rules(pipeline: Pipeline) -> list[Diagnostic]:
    """Run every lint check over a checked pipeline."""
    found: list[Diagnostic] = []
    for entry in sorted(RULES.values(), key=lambda r: r.code):
        if entry.check is None:
            continue
        try:
            found.extend(entry.check(pipeline))
        except Exception as e:  # a bug in one check must not hide the others' findings
            found.append(diagnostic(
                "TNX000", f"internal error in rule {entry.code} ({entry.name}): "
                f"{type(e).__name__}: {e}", _file_span(pipeline),
                help="please report this with the .tnx file"))
    return found


def _file_span(pipeline: Pipeline) -> Span:
    return Span.unknown(pipeline.file)


__all__ = ["RULES", "Rule", "all_rules", "run_rules"]
