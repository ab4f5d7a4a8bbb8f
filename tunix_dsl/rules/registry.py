"""The rule registry: every diagnostic code, its severity, summary and examples.

Two kinds of entries share one table:

- *checker codes* (`declare`): emitted while names are resolved and values
  validated (unknown field, wrong type, ...). They have no check function.
- *lint rules* (`@rule`): functions over the checked `Pipeline` IR that yield
  diagnostics (dataset columns, batch arithmetic, unused declarations, ...).

Each entry carries a failing and a fixed example; `docs/rules.md` is generated
from them (`tunix_dsl.rules.docs`) and a test checks that the failing example
produces the code and the fixed one does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunix_dsl.grammar.diagnostics import Diagnostic, Label, Severity
from tunix_dsl.grammar.spans import Span

if TYPE_CHECKING:
    from tunix_dsl.check.ir import Pipeline

Check = Callable[["Pipeline"], Iterable[Diagnostic]]


@dataclass(frozen=True)
class Rule:
    code: str
    name: str  # kebab-case, stable: `unknown-field`
    severity: Severity
    summary: str  # one line
    bad: str  # a .tnx example that triggers the code
    good: str  # the same example, fixed
    check: Check | None = None  # None: emitted by the checker/parser itself
    owner: str = "checker"  # parser|checker|api|lint|preflight|plan (needs a target)
    bad_set: tuple[tuple[str, str], ...] = ()  # `--set` overrides the bad example runs with
    good_set: tuple[tuple[str, str], ...] = ()


RULES: dict[str, Rule] = {}


def _register(entry: Rule) -> None:
    if entry.code in RULES:
        raise ValueError(f"diagnostic code {entry.code} registered twice")
    RULES[entry.code] = entry


def declare(code: str, name: str, severity: Severity, summary: str, bad: str, good: str,
            owner: str = "checker", bad_set: dict[str, str] | None = None,
            good_set: dict[str, str] | None = None) -> None:
    """Register a code that the parser, the checker or the API emits directly."""
    _register(Rule(code, name, severity, summary, _dedent(bad), _dedent(good), None, owner,
                   tuple((bad_set or {}).items()), tuple((good_set or {}).items())))


def rule(code: str, name: str, severity: Severity, summary: str, bad: str,
         good: str) -> Callable[[Check], Check]:
    """Decorator registering a lint check `fn(pipeline) -> Iterable[Diagnostic]`."""

    def register(fn: Check) -> Check:
        _register(Rule(code, name, severity, summary, _dedent(bad), _dedent(good), fn, "lint"))
        return fn

    return register


def diagnostic(code: str, message: str, span: Span, *, label: str = "",
               help: str | None = None, secondary: Iterable[Label] = (),
               notes: Iterable[str] = ()) -> Diagnostic:
    """A diagnostic for a registered code, with the code's severity."""
    entry = RULES[code]
    return Diagnostic(code, entry.severity, message, span, label, tuple(secondary), help,
                      tuple(notes))


def _dedent(text: str) -> str:
    import textwrap

    text = textwrap.dedent(text).strip("\n")
    return text + "\n" if text else ""
