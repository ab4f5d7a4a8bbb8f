"""The checker: resolution, evaluation, overrides, graph, order, IR helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunix_dsl.api import parse
from tunix_dsl.check.checker import check_module
from tunix_dsl.grammar import ast
from tunix_dsl.grammar.spans import Span
from tunix_dsl.schemas import ModelRef
from tunix_dsl.schemas.training import QLora

ROOT = Path(__file__).resolve().parents[1]
PRELUDE = """
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars)
model big = transformer(preset = "nano", tokenizer = chars)
dataset sums = synthetic("addition", count = 100, digits = 3)
dataset prefs = synthetic("addition_preferences", count = 100)
reward ok = exact_match(field = "answer")
"""
CHAIN = PRELUDE + """
stage c: dpo { policy = b.model, reference = b.model, data = prefs, steps = 5 }
stage b: sft { model = a.model, data = sums, steps = 5, lora = qlora(rank = 4) }
stage a: pretrain { model = tiny, data = sums, steps = 5 }
stage d: distill { teacher = c.model, student = tiny, data = sums, steps = 5 }
eval acc { models = [a.model, d.model], data = sums, metric = ok }
export d.model to "out/d" as "hf"
export b.adapter to "out/b" as "orbax"
"""


def codes(pipeline) -> list[str]:
    return [d.code for d in pipeline.diagnostics]


def test_declarations_are_order_independent_and_stages_topologically_sorted():
    p = parse(CHAIN)
    assert p.ok, p.diagnostics
    assert [s.name for s in p.stages] == ["a", "b", "c", "d"]
    c = p.stage("c")
    assert c.config.policy == ModelRef(kind="stage", name="b", output="model")
    assert c.models == {"policy": c.config.policy, "reference": c.config.reference}
    assert isinstance(p.stage("b").adapter, QLora)
    assert p.exports[1].config.source == ModelRef(kind="stage", name="b", output="adapter")


def test_ties_keep_file_order():
    p = parse(PRELUDE + """
    stage z: sft { model = tiny, data = sums, steps = 1 }
    stage y: sft { model = big, data = sums, steps = 1 }
    stage x: sft { model = z.model, data = sums, steps = 1 }
    eval e { models = [x.model, y.model], data = sums, metric = ok }
    """)
    assert [s.name for s in p.stages] == ["z", "y", "x"]


def test_graph_nodes_edges_and_roles():
    p = parse(CHAIN)
    g = p.graph
    for node in ["model:tiny", "tokenizer:chars", "dataset:sums", "reward:ok", "stage:a",
                 "eval:acc", "export:out/d"]:
        assert node in g
    assert g.nodes["stage:c"]["kind"] == "dpo" and g.nodes["model:tiny"]["kind"] == "model"
    assert g.nodes["stage:a"]["label"] == "a"
    assert isinstance(g.nodes["stage:a"]["span"], Span)
    assert g.edges["stage:b", "stage:c"]["role"] == "policy, reference"
    assert g.edges["stage:b", "stage:c"]["roles"] == ["policy", "reference"]
    assert g.edges["tokenizer:chars", "model:tiny"]["role"] == "tokenizer"
    assert g.edges["stage:d", "export:out/d"]["role"] == "source"
    assert g.edges["stage:b", "export:out/b"]["output"] == "adapter"
    assert g.edges["reward:ok", "eval:acc"]["role"] == "metric"


def test_ir_helpers_walk_stage_outputs_back_to_the_declaration():
    p = parse(CHAIN)
    ref = ModelRef(kind="stage", name="c")
    assert [str(r) for r in p.lineage(ref)] == ["c.model", "b.model", "a.model", "tiny"]
    assert p.model_source(ref).name == "tiny"
    cfg = p.model_config(ref)
    assert (cfg.d_model, cfg.vocab_size, cfg.max_seq_len) == (64, 259, 128)
    assert p.tokenizer_of(ref) == ("bytes", "bytes()")
    assert p.dataset_columns("prefs") == {"prompt", "chosen", "rejected", "answer"}
    assert p.datasets["sums"].spec.params == {"digits": 3}


def test_params_evaluate_in_any_order_and_integral_floats_become_counts():
    p = parse("param total = half * 2\nparam half = 750.0\n" + PRELUDE
              + "stage s: sft { model = tiny, data = sums, steps = total, batch_size = 8 }\n"
                "export s.model to \"o\" as \"hf\"\n")
    assert p.ok, p.diagnostics
    assert p.params == {"total": 1500.0, "half": 750.0}
    assert p.stages[0].config.steps == 1500 and isinstance(p.stages[0].config.steps, int)
    assert p.graph.has_edge("param:half", "param:total")
    assert p.graph.edges["param:total", "stage:s"]["role"] == "steps"


SCALED = "param scale = 1.0\nparam name = \"x\"\nparam n = 3\n" + PRELUDE + """
stage s: sft { model = tiny, data = sums, steps = round(100 * scale) * n }
export s.model to "o" as "hf"
"""


@pytest.mark.parametrize("overrides, expected, errors", [
    ({"scale": "0.5"}, {"scale": 0.5}, []),
    ({"scale": "2"}, {"scale": 2.0}, []),  # an integer is a fine number
    ({"n": "2.5"}, {"n": 3}, ["TNX201"]),  # but a fraction is not an integer
    ({"name": "plain"}, {"name": "plain"}, []),  # bare word → string param
    ({"name": '"quoted"'}, {"name": "quoted"}, []),
    ({"name": "1"}, {"name": "x"}, ["TNX201"]),
    ({"scale": "fast"}, {"scale": 1.0}, ["TNX205"]),
    ({"scael": "1"}, {}, ["TNX107"]),
    ({"tiny": "1"}, {}, ["TNX107"]),  # not a param
])
def test_set_overrides_are_type_checked(overrides, expected, errors):
    p = parse(SCALED, overrides=overrides)
    assert [c for c in codes(p) if c != "TNX402"] == errors
    for name, value in expected.items():
        assert p.params[name] == value and type(p.params[name]) is type(value)


def test_cycle_of_three_shows_the_path():
    p = parse(PRELUDE + """
    stage a: sft { model = c.model, data = sums, steps = 1 }
    stage b: sft { model = a.model, data = sums, steps = 1 }
    stage c: sft { model = b.model, data = sums, steps = 1 }
    """)
    cycles = [d for d in p.diagnostics if d.code == "TNX301"]
    assert len(cycles) == 1 and "a → b → c → a" in cycles[0].message
    assert len(cycles[0].secondary) == 2
    assert not p.ok


def test_self_reference_is_a_cycle():
    p = parse(PRELUDE + "stage a: sft { model = a.model, data = sums, steps = 1 }\n")
    assert "TNX301" in codes(p)


def test_diagnostics_are_sorted_by_position():
    p = parse(PRELUDE + """
    stage a: sft { model = nope, data = sums, steps = 1 }
    stage b: sft { model = tiny, data = sums, steps = 0 }
    """)
    starts = [d.span.start for d in p.diagnostics]
    assert starts == sorted(starts)
    assert codes(p)[:2] == ["TNX104", "TNX207"]


def test_wrong_kind_and_undefined_help():
    p = parse(PRELUDE + "stage a: sft { model = tiny, data = ok, steps = 1 }\n"
              "stage b: sft { model = tiny, data = sum, steps = 1 }\n")
    wrong, undefined = [d for d in p.diagnostics if d.code in ("TNX106", "TNX104")]
    assert "expects a dataset, found reward `ok`" in wrong.message
    assert wrong.secondary[0].message == "reward declared here"
    assert undefined.help == "did you mean `sums`?"


def test_jsonl_columns_come_from_the_file_and_the_mapping(tmp_path: Path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"q": "1+1=", "a": "2", "text": "x"}) + "\n")
    text = PRELUDE + """
    dataset qa = jsonl("d.jsonl", prompt = "q", completion = "a")
    stage s: sft { model = tiny, data = qa, steps = 1 }
    stage t: dpo { policy = s.model, data = qa, steps = 1 }
    export t.model to "o" as "hf"
    """
    p = parse(text, str(tmp_path / "p.tnx"))
    assert p.dataset_columns("qa") == {"prompt", "completion", "text"}
    missing = [d for d in p.diagnostics if d.code == "TNX302"]
    assert len(missing) == 1 and "`chosen`, `rejected`" in missing[0].message
    assert "chosen = \"<key>\"" in missing[0].help


def test_jsonl_problems(tmp_path: Path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n[1, 2]\n')
    p = parse(PRELUDE + """
    dataset broken = jsonl("bad.jsonl")
    dataset absent = jsonl("absent.jsonl", prompt = "q")
    stage s: grpo { policy = tiny, data = broken, rewards = [ok], steps = 1, batch_size = 8 }
    stage t: grpo { policy = tiny, data = absent, rewards = [ok], steps = 1, batch_size = 8 }
    """, str(tmp_path / "p.tnx"))
    found = {d.code: d.message for d in p.diagnostics}
    assert "bad.jsonl:2: expected a JSON object" in found["TNX308"]
    assert "absent.jsonl" in found["TNX403"]
    assert p.dataset_columns("absent") is None


def test_hf_checkpoint_sizes_are_read_without_jax(tmp_path: Path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "vocab_size": 259, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 64}))
    p = parse(PRELUDE + """
    model loaded = hf("ckpt", tokenizer = chars)
    stage s: sft { model = loaded, data = sums, steps = 1, lora = lora(rank = 20),
                   max_seq_len = 32 }
    stage t: grpo { policy = s.model, reference = tiny, data = sums, rewards = [ok], steps = 1,
                    batch_size = 8, max_prompt_len = 32, max_new_tokens = 64 }
    """, str(tmp_path / "p.tnx"))
    assert p.model_config(ModelRef(kind="decl", name="loaded")).d_model == 32
    found = {d.code: d for d in p.diagnostics}
    assert "rank 20 exceeds the width of `layers.0.attn.k_proj` (32 → 16)" in found["TNX306"].message
    assert "96 tokens" in found["TNX307"].message
    assert "TNX401" in found  # reference `tiny` is not in the policy's lineage


def test_tokenizer_and_vocab_mismatch(tmp_path: Path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "vocab_size": 300, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}))
    p = parse(PRELUDE + """
    model wide = hf("ckpt", tokenizer = chars)
    stage s: distill { teacher = wide, student = tiny, data = sums, steps = 1 }
    """, str(tmp_path / "p.tnx"))
    (mismatch,) = [d for d in p.diagnostics if d.code == "TNX303"]
    assert "(300 vs 259)" in mismatch.message


def test_adapter_output_requires_lora():
    p = parse(PRELUDE + """
    stage a: pretrain { model = tiny, data = sums, steps = 1 }
    export a.adapter to "o" as "hf"
    """)
    (diag,) = [d for d in p.diagnostics if d.code == "TNX109"]
    assert "has no `lora` field" in diag.label


def test_unused_declarations_and_stage_outputs_warn_but_pass():
    p = parse(PRELUDE + "stage a: sft { model = tiny, data = sums, steps = 1 }\n")
    unused = sorted(d.message for d in p.diagnostics if d.code == "TNX402")
    assert unused == ["dataset `prefs` is never used", "model `big` is never used",
                      "reward `ok` is never used", "the output of stage `a` is never used"]
    assert p.ok


def test_batch_arithmetic():
    p = parse("pipeline x { mesh = { data = 2, fsdp = 2 } }\n" + PRELUDE + """
    stage g: grpo { policy = tiny, data = sums, rewards = [ok], steps = 1, batch_size = 36,
                    generations = 8, grad_accum = 2 }
    export g.model to "o" as "hf"
    """)
    assert sorted(c for c in codes(p) if c != "TNX402") == ["TNX304", "TNX305"]
    (mesh,) = [d for d in p.diagnostics if d.code == "TNX305"]
    assert "micro-batch 18 does not split over 4 batch shards" in mesh.message


def test_check_module_accepts_a_hand_built_ast():
    span = Span("<ast>", 1, 1, 1, 2)
    call = ast.Call("bytes", span, (), span)
    module = ast.Module((ast.ValueDecl("tokenizer", "t", span, call, span),), (), span)
    p = check_module(module, "<ast>", {"<ast>": ""})
    assert list(p.tokenizers) == ["t"] and codes(p) == ["TNX402"]
    # After a syntax error there is no module: the parser's diagnostics are kept.
    from tunix_dsl.grammar.parser import parse_module

    module, syntax = parse_module("stage {", "<bad>")
    broken = check_module(module, "<bad>", {"<bad>": "stage {"}, diagnostics=syntax)
    assert module is None and broken.ok is False and codes(broken) == ["TNX001"]


def test_quickstart_and_examples_are_clean():
    from tunix_dsl.api import load

    for path in sorted((ROOT / "examples").glob("*.tnx")):
        p = load(path)
        assert p.diagnostics == [], (path, p.diagnostics)
    kinds = {s.kind for path in (ROOT / "examples").glob("*.tnx") for s in load(path).stages}
    assert kinds >= {"pretrain", "sft", "dpo", "orpo", "grpo", "ppo", "distill"}


def test_adapter_output_is_only_for_exports():
    p = parse(PRELUDE + """
    stage a: sft { model = tiny, data = sums, steps = 1, lora = lora(rank = 4) }
    stage b: sft { model = a.adapter, data = sums, steps = 1 }
    export a.adapter to "adapter" as "orbax"
    export b.model to "o" as "hf"
    """)
    (diag,) = [d for d in p.diagnostics if d.code == "TNX109"]
    assert "`model` needs a model, not the adapter alone" in diag.message


@pytest.mark.parametrize("expr, value", [
    ("7 // 2 + 7 % 2 - -1", 5), ("2 * (3 + 4)", 14), ("1 / 4", 0.25), ("round(2.6)", 3),
    ("int(2.9)", 2), ("min(3, 1, 2) + max(1.5, 2)", 3), ("\"a\" + \"b\"", "ab"),
    ("[1, 2 * 2]", [1, 4]), ("10_000", 10000), ("1e-4", 1e-4),
])
def test_expression_values(expr, value):
    p = parse(f"param x = {expr}\n")
    assert p.params["x"] == value and type(p.params["x"]) is type(value)


@pytest.mark.parametrize("expr, code", [
    ("adamw()", "TNX201"), ("tiny", "TNX201"), ("nope", "TNX104"), ("-\"a\"", "TNX204"),
    ("round(1, 2)", "TNX201"), ("1 % 0", "TNX204"), ("true + 1", "TNX204"),
])
def test_bad_param_values(expr, code):
    p = parse(f"param x = {expr}\n" + PRELUDE)
    assert code in codes(p)


def test_list_params_flow_into_list_fields():
    p = parse('param targets = ["attn.q_proj"]\n' + PRELUDE + """
    stage a: sft { model = tiny, data = sums, steps = 1, lora = lora(targets = targets) }
    export a.model to "o" as "hf"
    """, overrides={"targets": '["mlp.up_proj", "mlp.down_proj"]'})
    assert p.ok, p.diagnostics
    assert p.stage("a").adapter.targets == ["mlp.up_proj", "mlp.down_proj"]


# ------------------------------------------------------------------ inputs that once crashed


def located(pipeline, code: str) -> list[tuple[int, int, str]]:
    return [(d.span.line, d.span.column, d.message) for d in pipeline.diagnostics if d.code == code]


@pytest.mark.parametrize("text, line, column, message", [
    ("param p = max(10)\n", 1, 11, "`max` takes 2 to 8 positional argument(s)"),
    ("param x = 1\nparam p = min(x)\n", 2, 11, "`min` takes 2 to 8 positional argument(s)"),
])
def test_builtin_arity_is_checked(text, line, column, message):
    assert located(parse(text), "TNX201") == [(line, column, message)]


@pytest.mark.parametrize("text, column, message", [
    ("param p = 1e300 * 1e300\n", 11, "number too large"),
    ("param p = " + "1" + "0" * 400 + "\n", 11, "number `1000000000...0000000000` is too large"),
    ("param p = 1e999\n", 11, "number `1e999` is too large"),
    ("param q = 7\nparam p = q * " + "9" * 308 + " * 1.5\n", 11, "number too large"),
    ("param p = " + "9" * 308 + " * 10 / 3\n", 11, "number too large"),
    ("param p = round(1e308 + 1e308)\n", 17, "number too large"),
])
def test_numbers_too_large_for_a_float_are_tnx210(text, column, message):
    p = parse(text)
    (found,) = located(p, "TNX210")
    assert found[1:] == (column, message) and found[0] == text.count("\n")


def test_set_value_too_large_is_tnx210_in_the_set_text():
    p = parse("param p = 1.0\n", overrides={"p": "1" + "0" * 400})
    (diag,) = [d for d in p.diagnostics if d.code == "TNX210"]
    assert (diag.span.file, diag.span.line, diag.span.column) == ("--set p", 1, 9)
    p = parse("param p = 1.0\nparam q = p * 1e300\n", overrides={"p": "1e10"})
    assert located(p, "TNX210") == [(2, 11, "number too large")]


def test_long_param_chain_in_reverse_order_evaluates_without_recursion():
    text = "".join(f"param p{i} = p{i + 1} + 1\n" for i in range(3000)) + "param p3000 = 0\n"
    p = parse(text)
    assert p.params["p0"] == 3000
    assert not p.errors


def test_long_param_cycle_is_reported_once_with_its_start():
    text = "".join(f"param p{i} = p{(i + 1) % 2000}\n" for i in range(2000))
    (cycle,) = [d for d in parse(text).diagnostics if d.code == "TNX301"]
    assert cycle.message.startswith("params form a cycle: p0 → p1 → p2")
    assert (cycle.span.line, cycle.span.column) == (2000, 15)  # `p0` read by p1999


def test_long_flat_sum_is_not_too_deep():
    p = parse("param p = " + " + ".join(["1"] * 5000) + "\n")
    assert p.params["p"] == 5000 and not p.errors


@pytest.mark.parametrize("opener, closer", [("-", ""), ("round(", ")"), ("[", "]"),
                                            ("max(1, ", ")"), ("{ a = ", " }")])
def test_nesting_limit_points_at_the_level_past_it(opener, closer):
    text = "param ok = 1\nparam p = " + opener * 101 + "1" + closer * 101 + "\n"
    (diag,) = parse(text).diagnostics
    assert (diag.code, diag.span.line) == ("TNX004", 2)
    assert diag.span.column == len("param p = ") + 100 * len(opener) + 1
    at_limit = parse("param p = " + opener * 100 + "1" + closer * 100 + "\n")
    assert [d for d in at_limit.diagnostics if d.code == "TNX004"] == []


def test_byte_order_mark_does_not_shift_columns():
    (diag,) = parse("\ufeffparam p = max(1)\n").errors
    assert (diag.span.line, diag.span.column) == (1, 11)


def test_one_field_error_does_not_hide_another_in_the_same_map():
    p = parse('pipeline x { mesh = { data = "a", fsdp = -1, tensor = 0 }, seed = "s" }\n')
    found = [(d.code, d.span.column) for d in p.diagnostics]
    assert found == [("TNX201", 30), ("TNX206", 55), ("TNX201", 67)]


def test_stage_kind_in_the_wrong_case_gets_did_you_mean():
    (diag,) = [d for d in parse(PRELUDE + "stage tune: SFT { model = tiny, data = sums, "
                                "steps = 1 }\n").diagnostics if d.code == "TNX105"]
    assert (diag.span.line, diag.span.column, diag.help) == (8, 13, "did you mean `sft`?")


@pytest.mark.parametrize("config, label", [
    ([], "config.json must hold a JSON object, found a list"),
    (None, "config.json must hold a JSON object, found null"),
    ({"num_attention_heads": 0}, "config.json: `num_attention_heads` must be a positive integer, found 0"),
    ({"num_attention_heads": -4}, "config.json: `num_attention_heads` must be a positive integer, found -4"),
    ({"hidden_size": "32"}, "config.json: `hidden_size` must be a positive integer, found '32'"),
    ({"num_key_value_heads": 3}, "model config: n_heads (4) must be a multiple of n_kv_heads (3) "
                                 "for grouped-query attention"),
    ({"architectures": "LlamaForCausalLM"}, "config.json: `architectures` must be a list of names, "
                                            "found a string"),
    ({"rope_scaling": [2]}, "config.json: `rope_scaling` must be an object, found a list"),
])
def test_broken_hf_config_is_a_located_diagnostic(tmp_path: Path, config, label):
    good = {"architectures": ["LlamaForCausalLM"], "vocab_size": 259, "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 64}
    (tmp_path / "ckpt").mkdir()
    data = {**good, **config} if isinstance(config, dict) else config
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(data))
    p = parse('tokenizer chars = bytes()\nmodel m = hf("ckpt", tokenizer = chars)\n',
              str(tmp_path / "p.tnx"))
    (diag,) = [d for d in p.diagnostics if d.code == "TNX208"]
    assert (diag.span.line, diag.span.column, diag.label) == (2, 14, label)


@pytest.mark.parametrize("text, column", [
    ('tokenizer t = hf_tokenizer("{long}")\nmodel m = transformer(preset = "pico", '
     'tokenizer = t)\n', 28),
    ('dataset d = jsonl("{long}")\n', 19),
    ('reward r = python("{long}.py:fn")\n', 19),
    ('tokenizer t = bytes()\nmodel m = hf("{long}", tokenizer = t)\n', 14),
])
def test_paths_longer_than_the_os_allows_are_warnings_not_crashes(tmp_path: Path, text, column):
    p = parse(text.replace("{long}", "x" * 300), str(tmp_path / "p.tnx"))
    found = [(d.code, d.span.column) for d in p.diagnostics if d.code != "TNX402"]
    assert found == [("TNX403", column)]


def test_an_unknown_source_with_no_near_name_points_at_plugins_only_where_plugins_exist():
    (dataset,) = [d for d in parse("dataset judged = unpaired_addition(digits = 1)\n").diagnostics
                  if d.code == "TNX105"]
    assert "a plugin package adds more" in dataset.help and "`synthetic`" in dataset.help
    (tokenizer,) = [d for d in parse("tokenizer t = sentencepiece_model()\n").diagnostics
                    if d.code == "TNX105"]
    assert "plugin" not in tokenizer.help  # tokenizers are not a plugin group
    (near,) = [d for d in parse("dataset d = jsonll(\"x.jsonl\")\n").diagnostics if d.code == "TNX105"]
    assert near.help == "did you mean `jsonl`?"
