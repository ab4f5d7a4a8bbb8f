"""Codes emitted directly by the parser, the checker and the API (no check function).

Numbering: TNX0xx syntax and input, TNX1xx names and structure, TNX2xx
types and values, TNX3xx whole-pipeline checks, TNX4xx warnings.
"""

from __future__ import annotations

from tunix_dsl.grammar.diagnostics import Severity
from tunix_dsl.rules.registry import declare

E, W = Severity.ERROR, Severity.WARNING

# A small valid pipeline most examples start from (kept in sync with the examples below).
_PRELUDE = '''\
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars)
dataset sums = synthetic("addition", count = 100)
'''


def without_sums(text: str) -> str:
    """An example that does not need the prelude's `sums` dataset."""
    return text.replace('dataset sums = synthetic("addition", count = 100)\n', "")


def _with_stage(body: str, kind: str = "sft", extra: str = "") -> str:
    lines = "\n".join(f"  {line}" for line in body.strip("\n").splitlines())
    return f"{_PRELUDE}{extra}\nstage tune: {kind} {{\n{lines}\n}}\n\nexport tune.model to \"out/tune\" as \"hf\"\n"


# ------------------------------------------------------------------------ TNX0xx

declare("TNX000", "internal-error", E,
        "An internal error in a check: please report it with the input that caused it.",
        bad="", good="", owner="api")
declare("TNX001", "unexpected-token", E,
        "Syntax error: a token that cannot appear here, or an unknown declaration keyword; "
        "the message names what was expected.",
        bad=_with_stage("model = tiny\ndata = sums\nsteps 10"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10"), owner="parser")
declare("TNX002", "unexpected-character", E,
        "Syntax error: a character that starts no token, or a string left open.",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = 10").replace('"pico"', '"pico'),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10"), owner="parser")
declare("TNX003", "invalid-literal", E,
        "A malformed number (`1__0`, `0x1F`) or an unknown escape in a string.",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = 1__0"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 1_000"), owner="parser")
declare("TNX004", "nested-too-deeply", E,
        "An expression nested more than 100 levels deep (calls, lists, maps, unary signs, "
        "operators); a chain like `1 + 2 + ... + n` is one level however long.",
        bad="param p = " + "-" * 102 + "10\n" + _with_stage("model = tiny\ndata = sums\nsteps = p"),
        good="param q = " + "-" * 50 + "10\nparam p = " + "-" * 52 + "q\n"
        + _with_stage("model = tiny\ndata = sums\nsteps = p"), owner="parser")
declare("TNX009", "unreadable-file", E,
        "The .tnx file cannot be read (missing, a directory, not UTF-8). Exit code 2.",
        bad="", good="", owner="api")

# ------------------------------------------------------------------------ TNX1xx

declare("TNX101", "unknown-field", E,
        "A field or argument the schema does not have; suggests the closest name.",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = 10\nlearning_rate = 1e-3"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10\n"
                         "optimizer = adamw(lr = 1e-3)"))
declare("TNX102", "missing-field", E,
        "A required field is not set; the help says its type and meaning.",
        bad=_with_stage("model = tiny\ndata = sums"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10"))
declare("TNX103", "duplicate-name", E,
        "Two declarations with one name (all kinds share one namespace).",
        bad=_PRELUDE + "dataset sums = synthetic(\"copy\")\n"
        + _with_stage("model = tiny\ndata = sums\nsteps = 10").split(_PRELUDE)[1],
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10"))
declare("TNX104", "undefined-name", E,
        "A reference to a name that is not declared; suggests the closest one.",
        bad=_with_stage("model = tiny\ndata = sum\nsteps = 10"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10"))
declare("TNX105", "unknown-kind", E,
        "An unknown stage kind or source function (`stage x: sfy`, `transfomer(...)`).",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = 10", kind="sfy"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10"))
declare("TNX106", "wrong-reference-kind", E,
        "A reference to the wrong kind of declaration, e.g. a dataset where a model is needed.",
        bad=_with_stage("model = sums\ndata = sums\nsteps = 10"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10"))
_SCALED = "param scale = 1.0\n" + _with_stage("model = tiny\ndata = sums\nsteps = round(100 * scale)")

declare("TNX107", "unknown-override", E,
        "`--set NAME=VALUE` names no `param` of the pipeline.",
        bad=_SCALED, good=_SCALED, bad_set={"scal": "0.5"}, good_set={"scale": "0.5"})
declare("TNX108", "duplicate-field", E,
        "A field given twice in one block or call, or a surplus positional argument.",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = 10\nsteps = 20"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 20"))
declare("TNX109", "unknown-output", E,
        "A stage output that does not exist or does not fit: `.weights`, `.adapter` of a stage "
        "without LoRA, or `.adapter` where a model is needed.",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = 10").replace(
            'tune.model to "out/tune" as "hf"', 'tune.adapter to "out/tune" as "orbax"'),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10\nlora = lora(rank = 4)").replace(
            'tune.model to "out/tune" as "hf"', 'tune.adapter to "out/tune" as "orbax"'))

# ------------------------------------------------------------------------ TNX2xx

declare("TNX201", "wrong-type", E,
        "A value of the wrong type: a string where a number is expected, a fraction for steps.",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = \"10\""),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10"))
declare("TNX202", "out-of-range", E,
        "A number outside its field's range (`beta` must be > 0, `top_p` ≤ 1).",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = 10\n"
                        "optimizer = adamw(lr = 1e-3, b2 = 1.5)"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10\n"
                         "optimizer = adamw(lr = 1e-3, b2 = 0.95)"))
declare("TNX203", "invalid-choice", E,
        "A string that is not one of the field's allowed values; suggests the closest.",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = 10\n"
                        "optimizer = adamw(schedule = \"cosin\")"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10\n"
                         "optimizer = adamw(schedule = \"cosine\")"))
declare("TNX204", "invalid-arithmetic", E,
        "Arithmetic on non-numbers, division by zero, or overflow.",
        bad="param scale = 0\n" + _with_stage("model = tiny\ndata = sums\nsteps = 10 / scale"),
        good="param scale = 2\n" + _with_stage("model = tiny\ndata = sums\nsteps = 10 / scale"))
declare("TNX205", "invalid-override", E,
        "A `--set` value that is not a .tnx literal of the param's type.",
        bad=_SCALED, good=_SCALED, bad_set={"scale": "half"}, good_set={"scale": "0.5"})
declare("TNX206", "inconsistent-fields", E,
        "Fields that are valid alone but not together (epsilon_high below epsilon, two -1 axes).",
        bad="pipeline demo {\n  mesh = { data = -1, fsdp = -1 }\n}\n\n"
        + _with_stage("model = tiny\ndata = sums\nsteps = 10"),
        good="pipeline demo {\n  mesh = { data = -1, fsdp = 1 }\n}\n\n"
        + _with_stage("model = tiny\ndata = sums\nsteps = 10"))
declare("TNX207", "non-positive-count", E,
        "`steps` or `batch_size` that is zero or negative.",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = 0"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10"))
declare("TNX210", "number-too-large", E,
        "A number that does not fit a 64-bit float (about 1.8e308): a literal, a `--set` "
        "value or the result of arithmetic.",
        bad="param scale = 1e300\n" + _with_stage("model = tiny\ndata = sums\n"
                                                "steps = round(scale * 1e300)"),
        good="param scale = 1e-300\n" + _with_stage("model = tiny\ndata = sums\n"
                                                  "steps = round(scale * 1e302)"))
declare("TNX208", "invalid-model-config", E,
        "Model sizes that cannot work together (heads not a multiple of kv heads, odd head_dim).",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = 10").replace(
            'tokenizer = chars)', 'tokenizer = chars, n_kv_heads = 3)'),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10").replace(
            'tokenizer = chars)', 'tokenizer = chars, n_kv_heads = 4)'))
declare("TNX220", "steps-per-call", E,
        "`steps` that is not a multiple of `steps_per_call` (each dispatch runs that many "
        "updates).",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = 10\nsteps_per_call = 3"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 12\nsteps_per_call = 3"))
declare("TNX221", "warmup-not-shorter", E,
        "An optimizer `warmup` that is not shorter than the stage's `steps` (checked after "
        "`--set`).",
        bad=_SCALED.replace("round(100 * scale)", "round(1500 * scale)").replace(
            "steps = round", "optimizer = adamw(warmup = 100)\n  steps = round"),
        good=_SCALED.replace("round(100 * scale)", "round(1500 * scale)").replace(
            "steps = round", "optimizer = adamw(warmup = 100)\n  steps = round"),
        bad_set={"scale": "0.05"}, good_set={"scale": "0.1"})
declare("TNX222", "nesterov-without-momentum", E,
        "`sgd(nesterov = true)` with `momentum = 0`: Nesterov's look-ahead needs momentum.",
        bad=_with_stage("model = tiny\ndata = sums\nsteps = 10\n"
                        "optimizer = sgd(lr = 0.1, nesterov = true)"),
        good=_with_stage("model = tiny\ndata = sums\nsteps = 10\n"
                         "optimizer = sgd(lr = 0.1, momentum = 0.9, nesterov = true)"))
declare("TNX224", "float16-precision", E,
        "`precision = \"float16\"`: without loss scaling it overflows to NaN; use bfloat16.",
        bad="pipeline demo {\n  precision = \"float16\"\n}\n\n"
        + _with_stage("model = tiny\ndata = sums\nsteps = 10"),
        good="pipeline demo {\n  precision = \"bfloat16\"\n}\n\n"
        + _with_stage("model = tiny\ndata = sums\nsteps = 10"))

# ------------------------------------------------------------------------ TNX3xx (checker)

declare("TNX301", "cycle", E,
        "Stages (or params) that depend on each other in a loop; the message shows the path.",
        bad=_PRELUDE + """
stage a: sft {
  model = b.model
  data  = sums
  steps = 10
}

stage b: sft {
  model = a.model
  data  = sums
  steps = 10
}

export b.model to "out/b" as "hf"
""",
        good=_PRELUDE + """
stage a: sft {
  model = tiny
  data  = sums
  steps = 10
}

stage b: sft {
  model = a.model
  data  = sums
  steps = 10
}

export b.model to "out/b" as "hf"
""")
