"""The public API never raises on bad input and stays jax-free."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tunix_dsl.api import load, parse

ROOT = Path(__file__).resolve().parents[1]


def test_missing_file_is_an_io_error(tmp_path: Path):
    p = load(tmp_path / "nope.tnx")
    assert p.io_error and not p.ok
    assert [d.code for d in p.diagnostics] == ["TNX009"]
    assert "no such file" in p.diagnostics[0].message


def test_directory_and_binary_files_are_io_errors(tmp_path: Path):
    assert load(tmp_path).io_error
    binary = tmp_path / "bin.tnx"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    p = load(binary)
    assert p.io_error and "not UTF-8" in p.diagnostics[0].message


def test_load_resolves_paths_against_the_file(tmp_path: Path):
    (tmp_path / "rows.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (tmp_path / "p.tnx").write_text(
        'tokenizer t = bytes()\nmodel m = transformer(preset = "pico", tokenizer = t)\n'
        'dataset d = jsonl("rows.jsonl")\nstage s: sft { model = m, data = d, steps = 1 }\n'
        'export s.model to "out" as "hf"\n')
    p = load(tmp_path / "p.tnx", overrides={})
    assert p.ok and p.diagnostics == []
    assert p.base_dir == tmp_path
    assert p.dataset_columns("d") == {"prompt", "completion"}
    assert p.name == "p"


def test_pipeline_name_comes_from_the_block():
    p = parse("pipeline demo { seed = 3 }\n")
    assert (p.name, p.settings.seed, p.ok) == ("demo", 3, True)


@pytest.mark.parametrize("text", [
    "", "stage", "stage x: sft {", "}}}", "model m = ", "param p = 1 / 0",
    "stage x: sft { model = x.model.model.model }", "export a to \"b\" as \"c\"",
    "dataset d = synthetic(1, 2, 3, 4)", "param p = [1, [2, {a = 3}]]\nparam q = p + 1",
    "pipeline p { mesh = 3 }", "pipeline p { mesh = { data = \"x\" } }",
    "reward r = python(\"x.py:f\", columns = [1])", "stage s: grpo { rewards = 5 }",
    "eval e { models = tiny }", "param x = max()", "param y = round(\"a\")",
    "param z = 1e308 * 1e308", "tokenizer t = hf_tokenizer(\"/nonexistent\")\n"
    "model m = transformer(preset = \"pico\", tokenizer = t)",
])
def test_bad_input_gives_diagnostics_not_tracebacks(text):
    p = parse(text)
    assert isinstance(p.diagnostics, list)
    assert all(d.code.startswith("TNX") and d.code != "TNX000" for d in p.diagnostics)


def test_overrides_reach_the_params():
    text = (ROOT / "examples" / "quickstart.tnx").read_text()
    full = parse(text, "quickstart.tnx", base_dir=ROOT / "examples").stage("base").config.steps
    p = parse(text, "quickstart.tnx", overrides={"scale": "0.1"}, base_dir=ROOT / "examples")
    assert p.ok and p.params["scale"] == 0.1
    assert full > 100 and p.stage("base").config.steps == round(full * 0.1)  # steps = round(N * scale)


def test_api_and_checker_import_no_jax():
    code = ("import sys, tunix_dsl.api, tunix_dsl.check.checker, tunix_dsl.check.ir, tunix_dsl.schemas\n"
            "p = tunix_dsl.api.load('examples/quickstart.tnx')\n"
            "assert p.ok, p.diagnostics\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('jax', 'flax', 'optax', 'orbax', 'torch', 'transformers')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_break_gives_the_same_positions(newline: str):
    p = parse(newline.join(["param p = 1  # one", "", "param q = max(p)", ""]), "t.tnx")
    (diag,) = p.errors
    assert (diag.span.line, diag.span.column) == (3, 11)
    assert p.sources["t.tnx"] == "param p = 1  # one\n\nparam q = max(p)\n"  # what spans index


def test_load_reports_unreadable_files_as_tnx009(tmp_path: Path):
    (tmp_path / "latin1.tnx").write_bytes(b"param p = 1 # caf\xe9\n")
    for path, reason in ((tmp_path / "latin1.tnx", "not UTF-8 text (byte 0xe9 on line 1, offset 17)"),
                         (tmp_path / "nope.tnx", "no such file"),
                         (tmp_path, "is a directory, not a .tnx file")):
        p = load(path)
        assert p.io_error and not p.ok
        (diag,) = p.diagnostics
        assert (diag.code, diag.message) == ("TNX009", f"cannot read `{path}`: {reason}")
