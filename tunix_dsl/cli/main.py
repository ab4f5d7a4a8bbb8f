"""`tnx`: lint, fmt, graph, explain, lsp (jax-free), and run/plan (loaded lazily).

Exit codes, for every verb: 0 clean (warnings allowed), 1 errors found (or,
for `fmt --check`/`--diff`, a file would change), 2 usage or I/O problem.
Imports stay inside the verbs so that `tnx lint` never loads jax.
"""

from __future__ import annotations

import argparse
import difflib
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    """A problem with the command line or the files it names (exit 2)."""


def _override(text: str) -> tuple[str, str]:
    from tunix_dsl.check.evaluate import split_override

    try:
        return split_override(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tnx", description="Check, format, inspect and run .tnx post-training pipelines.")
    parser.add_argument("--version", action="version", version=f"tnx {_version()}")
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    lint = verbs.add_parser("lint", help="check pipelines and report diagnostics")
    lint.add_argument("files", nargs="+", metavar="FILE")
    lint.add_argument("--format", choices=("text", "json", "sarif"), default="text")
    _add_common(lint)

    fmt = verbs.add_parser("fmt", help="rewrite files in the canonical layout")
    fmt.add_argument("files", nargs="+", metavar="FILE", help="files to format; `-` for stdin")
    fmt.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    fmt.add_argument("--diff", action="store_true", help="change nothing; print a unified diff")
    fmt.add_argument("--color", choices=("auto", "always", "never"), default="auto")

    graph = verbs.add_parser("graph", help="print the pipeline's dataflow graph")
    graph.add_argument("file", metavar="FILE")
    graph.add_argument("--format", choices=("text", "dot", "mermaid", "json"), default="text")
    _add_common(graph)

    explain = verbs.add_parser("explain", help="show a stage kind's or declaration's fields")
    explain.add_argument("kind", metavar="KIND")

    verbs.add_parser("lsp", help="start the language server (LSP over stdin/stdout)")

    for verb, text in (("run", "run a pipeline"), ("plan", "show the compiled plan of a pipeline"),
                       ("report", "write report.md and plots of a run directory")):
        runner = verbs.add_parser(verb, help=text, add_help=False)
        runner.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", type=_override, default=[],
                        metavar="NAME=VALUE", help="override a `param` (repeatable)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")


def _version() -> str:
    from tunix_dsl import __version__
    return __version__


def _use_color(choice: str, stream) -> bool:
    if choice != "auto":
        return choice == "always"
    return stream.isatty() and "NO_COLOR" not in os.environ


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("run", "plan", "report"):
        # The runtime parses its own options (`tnx run --help` included): argparse's
        # REMAINDER would reject a leading option here.
        return _delegate(argparse.Namespace(command=argv[0], args=argv[1:]))
    args = build_parser().parse_args(argv)  # exits 2 on usage errors, as argparse does
    command = {"lint": _lint, "fmt": _fmt, "graph": _graph, "explain": _explain,
               "lsp": _lsp, "run": _delegate, "plan": _delegate, "report": _delegate}[args.command]
    # These verbs are short and allocate mostly acyclic objects (refcounting frees
    # them); the cyclic collector would only rescan pydantic's and Lark's import-time
    # objects, ~10 ms of a ~200 ms start (bench/lint_startup.py).
    collecting = gc.isenabled() and command not in (_delegate, _lsp)
    if collecting:
        gc.disable()
    try:
        return command(args)
    except _UsageError as err:
        print(f"tnx {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    finally:
        if collecting:
            gc.enable()


class _Unreadable(Exception):
    """A source that cannot be read: reported as TNX009 (exit 2)."""

    def __init__(self, pipeline):
        super().__init__(pipeline.diagnostics[0].message)
        self.pipeline = pipeline


def _load(path: str, overrides: dict[str, str]):
    """The checked pipeline; raises `_Unreadable` (TNX009, exit 2) for a file it cannot read."""
    from tunix_dsl.api import load

    pipeline = load(path, overrides)
    if pipeline.io_error:
        raise _Unreadable(pipeline)
    return pipeline


# --------------------------------------------------------------------------- lint


def _lint(args: argparse.Namespace) -> int:
    from tunix_dsl.cli.render import render_json, render_sarif, render_text

    overrides = dict(args.overrides)
    diagnostics, sources, unreadable = [], {}, False
    for path in dict.fromkeys(args.files):
        try:
            pipeline = _load(path, overrides)
        except _Unreadable as err:  # report it with the others, exit 2 at the end
            pipeline = err.pipeline
            unreadable = True
        diagnostics += pipeline.diagnostics
        sources.update(pipeline.sources)
    if args.format == "json":
        print(render_json(diagnostics))
    elif args.format == "sarif":
        print(render_sarif(diagnostics, sources))
    else:
        sys.stdout.write(render_text(diagnostics, sources, _use_color(args.color, sys.stdout)))
    if unreadable:
        return EXIT_USAGE
    return EXIT_ERRORS if any(d.is_error for d in diagnostics) else EXIT_OK


# --------------------------------------------------------------------------- fmt


def _fmt(args: argparse.Namespace) -> int:
    from tunix_dsl.api import unreadable
    from tunix_dsl.cli.render import render_text
    from tunix_dsl.grammar.diagnostics import TnxError
    from tunix_dsl.grammar.formatter import format_source
    from tunix_dsl.grammar.source import SourceError, clean_source, read_source

    color = _use_color(args.color, sys.stderr)
    changed, broken, unreadable_seen = [], False, False
    for path in dict.fromkeys(args.files):
        name = "<stdin>" if path == "-" else path
        try:
            text = read_source(path)
        except SourceError as err:
            sys.stderr.write(render_text([unreadable(name, err.reason)], {}, color))
            unreadable_seen = True
            continue
        try:
            formatted = format_source(text, name)
        except TnxError as err:
            sys.stderr.write(render_text(err.diagnostics, {name: clean_source(text)}, color))
            broken = True
            continue
        if formatted == text:
            if path == "-" and not (args.check or args.diff):
                sys.stdout.write(formatted)
            continue
        changed.append(path)
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(keepends=True), formatted.splitlines(keepends=True),
                fromfile=f"{name} (original)", tofile=f"{name} (formatted)"))
        elif args.check:
            print(f"would reformat {name}")
        elif path == "-":
            sys.stdout.write(formatted)
        else:
            _write(path, formatted)
            print(f"reformatted {name}", file=sys.stderr)
    if unreadable_seen:
        return EXIT_USAGE
    if broken:
        return EXIT_ERRORS
    return EXIT_ERRORS if changed and (args.check or args.diff) else EXIT_OK


def _write(path: str, text: str) -> None:
    """Replace the file atomically, so an interrupted `fmt` never truncates it."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tnxfmt.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise _UsageError(f"cannot write `{path}`: {err.strerror or err}") from None


# --------------------------------------------------------------------------- graph, explain


def _graph(args: argparse.Namespace) -> int:
    from tunix_dsl.cli.graph_render import GRAPH_FORMATS
    from tunix_dsl.cli.render import render_text

    color = _use_color(args.color, sys.stderr)
    try:
        pipeline = _load(args.file, dict(args.overrides))
    except _Unreadable as err:
        sys.stderr.write(render_text(err.pipeline.diagnostics, {}, color))
        return EXIT_USAGE
    errors = [d for d in pipeline.diagnostics if d.is_error]
    if errors:
        sys.stderr.write(render_text(pipeline.diagnostics, pipeline.sources, color))
        return EXIT_ERRORS
    sys.stdout.write(GRAPH_FORMATS[args.format](pipeline.dataflow))
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    from tunix_dsl.schemas import explain_text
    from tunix_dsl.schemas.tool_schema import SourceProblem

    try:
        text = explain_text(args.kind)
    except SourceProblem as problem:  # `tnx explain tools.py:fn` on a file it cannot read
        raise _UsageError(f"{args.kind}: {problem}" + (f" ({problem.help})" if problem.help
                                                        else "")) from None
    if text is None:
        known = _known_kinds()
        close = difflib.get_close_matches(args.kind, known, n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        listing = f" (known: {', '.join(known)})" if known else ""
        raise _UsageError(f"unknown kind `{args.kind}`{hint}{listing}")
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def _known_kinds() -> list[str]:
    from tunix_dsl.schemas import explainable_names

    return sorted(set(explainable_names()))


def _lsp(args: argparse.Namespace) -> int:
    from tunix_dsl.lsp.server import main as serve

    return serve()


# --------------------------------------------------------------------------- run, plan


def _delegate(args: argparse.Namespace) -> int:
    """`run`, `plan` and `report` live in the runtime, imported only when asked for."""
    try:
        from tunix_dsl.runtime import cli_commands
    except ImportError as err:
        if err.name not in ("tunix_dsl.runtime.cli_commands", "tunix_dsl.runtime"):
            raise
        print(f"tnx {args.command}: not available in this build (the runtime's command "
              "module `tunix_dsl.runtime.cli_commands` is missing)", file=sys.stderr)
        return EXIT_USAGE
    return int(cli_commands.main(args.command, list(args.args)))


if __name__ == "__main__":
    raise SystemExit(main())
