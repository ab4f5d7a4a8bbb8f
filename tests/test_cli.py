"""`tnx` CLI: exit codes 0/1/2, output formats, fmt --check/--diff/stdin, I/O problems."""

from __future__ import annotations

import io
import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from tunix_dsl.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.tnx"
SYNTAX_ERROR = "pipeline q {\n  seed: 0\n}\n"
UNFORMATTED = "param  scale=1.0\nparam lr = 2 # two\n"
FORMATTED = "param scale = 1.0\nparam lr    = 2  # two\n"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(QUICKSTART, tmp_path / "quickstart.tnx")
    (tmp_path / "syntax.tnx").write_text(SYNTAX_ERROR)
    (tmp_path / "messy.tnx").write_text(UNFORMATTED)
    (tmp_path / "unknown_field.tnx").write_text(
        QUICKSTART.read_text().replace("  beta        = 0.1", "  bta         = 0.1"))
    return tmp_path


# ----------------------------------------------------------------------------- lint


def test_lint_clean_file_exits_0(workdir: Path, capsys) -> None:
    assert main(["lint", str(workdir / "quickstart.tnx")]) == 0
    out = capsys.readouterr().out
    assert "error[" not in out


def test_lint_syntax_error_exits_1_with_carets(workdir: Path, capsys) -> None:
    assert main(["lint", str(workdir / "syntax.tnx"), "--color", "never"]) == 1
    out = capsys.readouterr().out
    assert "error[TNX001]: expected `=`, found `:`" in out
    assert f"--> {workdir / 'syntax.tnx'}:2:7" in out
    assert "  |       ^ unexpected here" in out
    assert out.rstrip().endswith("found 1 error")


def test_lint_checker_error_exits_1(workdir: Path, capsys) -> None:
    assert main(["lint", str(workdir / "unknown_field.tnx")]) == 1
    out = capsys.readouterr().out
    assert "`bta`" in out and "beta" in out


def test_lint_several_files_and_json(workdir: Path, capsys) -> None:
    code = main(["lint", str(workdir / "quickstart.tnx"), str(workdir / "syntax.tnx"),
                 "--format", "json"])
    assert code == 1
    data = json.loads(capsys.readouterr().out)
    assert [(d["code"], d["line"], d["column"]) for d in data if d["severity"] == "error"] == \
        [("TNX001", 2, 7)]


def test_lint_sarif(workdir: Path, capsys) -> None:
    assert main(["lint", str(workdir / "syntax.tnx"), "--format", "sarif"]) == 1
    log = json.loads(capsys.readouterr().out)
    assert log["version"] == "2.1.0"
    assert log["runs"][0]["results"][0]["ruleId"] == "TNX001"


def test_lint_set_overrides(workdir: Path, capsys) -> None:
    assert main(["lint", str(workdir / "quickstart.tnx"), "--set", "scale=0.1"]) == 0
    assert main(["lint", str(workdir / "quickstart.tnx"), "--set", "scael=0.1"]) == 1
    assert "scael" in capsys.readouterr().out


def test_missing_file_is_an_io_problem_not_a_traceback(workdir: Path, capsys) -> None:
    assert main(["lint", str(workdir / "nope.tnx")]) == 2
    out = capsys.readouterr().out
    assert f"error[TNX009]: cannot read `{workdir / 'nope.tnx'}`: no such file" in out
    assert "no problems found" not in out and "found 1 error" in out
    assert main(["lint", str(workdir)]) == 2
    assert "is a directory" in capsys.readouterr().out
    # the readable files are still linted
    assert main(["lint", str(workdir / "nope.tnx"), str(workdir / "syntax.tnx")]) == 2
    out = capsys.readouterr().out
    assert "error[TNX009]" in out and "nope.tnx" in out and "error[TNX001]" in out
    (workdir / "binary.tnx").write_bytes(b"param p = 1\n\xff\xfe\x00")
    assert main(["fmt", str(workdir / "binary.tnx")]) == 2
    assert "error[TNX009]" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["text", "json", "sarif"])
def test_non_utf8_file_is_tnx009_in_every_format(workdir: Path, capsys, fmt: str) -> None:
    (workdir / "binary.tnx").write_bytes(b"param p = 1\n\xff\n")
    assert main(["lint", str(workdir / "binary.tnx"), "--format", fmt]) == 2
    out = capsys.readouterr().out
    assert "TNX009" in out and "byte 0xff on line 2" in out
    assert "no problems found" not in out


def test_unreadable_names_get_one_message_in_every_verb(workdir: Path, capsys) -> None:
    long_name = str(workdir / ("a" * 300 + ".tnx"))
    expected = f"cannot read `{long_name}`: file name too long"
    for argv in (["lint", long_name], ["fmt", long_name], ["graph", long_name]):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert expected in captured.out + captured.err, argv
        assert "Traceback" not in captured.out + captured.err


def test_usage_errors_exit_2(capsys) -> None:
    for argv in (["lint"], ["lint", "x.tnx", "--set", "no_equals"], ["frobnicate"],
                 ["lint", "x.tnx", "--format", "xml"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


# ----------------------------------------------------------------------------- fmt


def test_fmt_rewrites_in_place(workdir: Path, capsys) -> None:
    path = workdir / "messy.tnx"
    assert main(["fmt", str(path)]) == 0
    assert path.read_text() == FORMATTED
    assert "reformatted" in capsys.readouterr().err
    assert main(["fmt", str(path)]) == 0  # already canonical: untouched, silent
    assert capsys.readouterr().err == ""
    assert not list(workdir.glob(".*.tmp"))


def test_fmt_check(workdir: Path, capsys) -> None:
    assert main(["fmt", "--check", str(workdir / "messy.tnx")]) == 1
    assert workdir.joinpath("messy.tnx").read_text() == UNFORMATTED
    assert "would reformat" in capsys.readouterr().out
    assert main(["fmt", "--check", str(workdir / "quickstart.tnx")]) == 0


def test_fmt_diff(workdir: Path, capsys) -> None:
    assert main(["fmt", "--diff", str(workdir / "messy.tnx")]) == 1
    out = capsys.readouterr().out
    assert "-param  scale=1.0\n" in out and "+param scale = 1.0\n" in out
    assert workdir.joinpath("messy.tnx").read_text() == UNFORMATTED


def test_fmt_stdin_to_stdout(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(UNFORMATTED))
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == FORMATTED
    monkeypatch.setattr(sys, "stdin", io.StringIO(UNFORMATTED))
    assert main(["fmt", "--check", "-"]) == 1


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_fmt_stdin_and_file_agree_for_every_line_break(workdir: Path, monkeypatch, capsys,
                                                       newline: str) -> None:
    """stdin is read as bytes (no newline translation happens on the way in), so a CR-only
    file keeps every line after its first comment, and the file is rewritten to LF."""
    data = (UNFORMATTED + "param q = [1,  # three\n2]\n").replace("\n", newline).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    assert main(["fmt", "-"]) == 0
    printed = capsys.readouterr().out
    path = workdir / "endings.tnx"
    path.write_bytes(data)
    assert main(["fmt", str(path)]) == 0
    assert path.read_bytes().decode() == printed
    assert printed == ("param scale = 1.0\nparam lr    = 2  # two\n"
                       "param q     = [\n  1,  # three\n  2,\n]\n")
    assert main(["fmt", "--check", str(path)]) == 0


def test_fmt_of_non_utf8_stdin_is_tnx009(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"param p = 1 # \xe9\n")))
    assert main(["fmt", "-"]) == 2
    assert "error[TNX009]: cannot read `<stdin>`: not UTF-8 text (byte 0xe9 on line 1" in capsys.readouterr().err


def test_fmt_refuses_broken_files(workdir: Path, capsys) -> None:
    assert main(["fmt", str(workdir / "syntax.tnx")]) == 1
    assert workdir.joinpath("syntax.tnx").read_text() == SYNTAX_ERROR
    assert "error[TNX001]" in capsys.readouterr().err
    assert main(["fmt", str(workdir / "missing.tnx")]) == 2


# ----------------------------------------------------------------------------- graph, explain


def test_graph_formats(workdir: Path, capsys) -> None:
    path = str(workdir / "quickstart.tnx")
    assert main(["graph", path]) == 0
    text = capsys.readouterr().out
    assert "stage:tune  [sft]" in text and "stage:base" in text
    assert text.index("stage:base  [") < text.index("stage:tune  [") < text.index("stage:solve")
    assert main(["graph", path, "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith("digraph pipeline {")
    assert main(["graph", path, "--format", "mermaid"]) == 0
    assert capsys.readouterr().out.startswith("flowchart LR")
    assert main(["graph", path, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    ids = {n["id"] for n in data["nodes"]}
    assert {"stage:base", "stage:shrink", "dataset:sums"} <= ids
    assert {"source": "stage:base", "target": "stage:tune"}.items() <= \
        next(e for e in data["edges"] if e["target"] == "stage:tune"
             and e["source"] == "stage:base").items()


def test_graph_of_broken_pipeline_exits_1(workdir: Path, capsys) -> None:
    assert main(["graph", str(workdir / "syntax.tnx")]) == 1
    assert "TNX001" in capsys.readouterr().err
    assert main(["graph", str(workdir / "nope.tnx")]) == 2


def test_explain(capsys) -> None:
    assert main(["explain", "dpo"]) == 0
    assert "beta" in capsys.readouterr().out
    assert main(["explain", "dpoo"]) == 2
    assert "did you mean `dpo`?" in capsys.readouterr().err


# ----------------------------------------------------------------------------- run, plan


def test_run_and_plan_delegate_to_the_runtime(monkeypatch) -> None:
    calls = []
    fake = types.ModuleType("tunix_dsl.runtime.cli_commands")
    fake.main = lambda command, argv: calls.append((command, argv)) or 0
    monkeypatch.setitem(sys.modules, "tunix_dsl.runtime.cli_commands", fake)
    import tunix_dsl.runtime as runtime
    monkeypatch.setattr(runtime, "cli_commands", fake, raising=False)
    assert main(["run", "x.tnx", "--set", "a=1"]) == 0
    assert main(["plan", "x.tnx"]) == 0
    assert calls == [("run", ["x.tnx", "--set", "a=1"]), ("plan", ["x.tnx"])]


def test_run_without_runtime_module_is_a_clear_message(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "tunix_dsl.runtime.cli_commands", None)
    import tunix_dsl.runtime as runtime
    monkeypatch.delattr(runtime, "cli_commands", raising=False)
    assert main(["run", "x.tnx"]) == 2
    assert "not available" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["lint", "run", "plan"])
def test_one_set_parser_for_every_verb(verb: str, workdir: Path, capsys) -> None:
    """`--set` is split by `evaluate.split_override` for lint and for the runtime's verbs."""
    code = None
    try:
        code = main([verb, str(workdir / "quickstart.tnx"), "--set", "novalue"])
    except SystemExit as exit_:  # argparse (lint) exits on a bad option value
        code = exit_.code
    assert code == 2
    assert "expected NAME=VALUE, got `novalue`" in capsys.readouterr().err
