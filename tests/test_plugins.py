"""The plugin loader: built-ins register through it, local plugin files add kinds, sources
and optimizers that lint, explain and the compiler understand."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunix_dsl.api import parse
from tunix_dsl.schemas import CALLS, SOURCES, STAGE_KINDS, explain_text
from tunix_dsl.schemas.kinds import LoweringError, StageKind
from tunix_dsl.schemas.plugins import GROUPS, ORIGINS, STAGE_KINDS_GROUP, origin_of
from tunix_dsl.schemas.stages import BUILTIN_KINDS, SFTConfig

ROOT = Path(__file__).resolve().parents[1]

LOCAL = '''
from pydantic import Field

from tunix_dsl.models.config import ModelConfig
from tunix_dsl.schemas.kinds import StageKind
from tunix_dsl.schemas.sources import ModelSchema
from tunix_dsl.schemas.stages import SFTConfig
from tunix_dsl.schemas.training import OptimizerBase
from tunix_dsl.schemas.base import TokenizerInput


class EchoConfig(SFTConfig):
    """SFT under another name, with one more field."""

    echo: int = Field(1, gt=0, description="a field only this kind has")


class Plain(OptimizerBase):
    """Plain gradient descent."""

    call_name = "plain_sgd"
    implementation = "./{stem}.py:direction"


def direction(spec):
    import optax

    return optax.identity()


class Tiny(ModelSchema):
    """A two-layer decoder of the built-in family."""

    call_name = "tiny_decoder"
    tokenizer: TokenizerInput = Field(description="tokenizer declaration")
    width: int = Field(32, gt=0, description="d_model")

    def architecture(self, vocab_size, dtype, param_dtype):
        return ModelConfig.from_preset("pico", vocab_size, d_model=self.width, dtype=dtype)


TNX_PLUGIN = {{
    "tunix_dsl.stage_kinds": [StageKind("echo_sft", EchoConfig, "model", ("model",),
                                        "prompt_completion", "tunix_dsl.compiler.stages.sft:build")],
    "tunix_dsl.optimizers": [Plain],
    "tunix_dsl.models": [Tiny],
}}
'''

PIPELINE = '''
pipeline p {{
  plugins = ["{file}"]
}}
tokenizer chars = bytes()
model tiny = tiny_decoder(tokenizer = chars, width = 48)
dataset sums = synthetic("addition", count = 100)

stage tune: echo_sft {{
  model     = tiny
  data      = sums
  steps     = 2
  {extra}
  optimizer = plain_sgd(lr = 0.1)
}}

export tune.model to "out/tune" as "hf"
'''


def test_built_in_kinds_and_sources_register_through_the_plugin_loader():
    assert {k.name for k in BUILTIN_KINDS} <= set(STAGE_KINDS)
    for group in GROUPS:
        assert any(g == group for g, _ in ORIGINS), group
    for kind in BUILTIN_KINDS:
        assert ORIGINS[(STAGE_KINDS_GROUP, kind.name)].builtin
        assert STAGE_KINDS[kind.name] is kind
    assert {"adamw", "sgd", "lion", "adafactor"} <= set(CALLS)
    assert {"exact_match", "python"} <= set(SOURCES["reward"])


def test_every_built_in_lowering_reference_loads():
    for kind in BUILTIN_KINDS:
        assert callable(kind.load_lowering()), kind.name


def test_a_broken_lowering_reference_names_the_kind_and_its_origin():
    kind = StageKind("nowhere", SFTConfig, "model", ("model",), "prompt_completion",
                     "tunix_dsl.compiler.stages.no_such_module:build")
    with pytest.raises(LoweringError, match=r"stage kind `nowhere` \(built-in\).*no_such_module"):
        kind.load_lowering()


@pytest.fixture(autouse=True)
def _registries_restored():
    """What a test's local plugins register is gone after it (other tests list the kinds)."""
    from tunix_dsl.data.datasets import CONSUMERS
    from tunix_dsl.schemas.training import OPTIMIZERS

    tables = [STAGE_KINDS, OPTIMIZERS, CONSUMERS, ORIGINS, *SOURCES.values()]
    saved = [dict(t) for t in tables]
    yield
    for table, before in zip(tables, saved, strict=True):
        table.clear()
        table.update(before)


@pytest.fixture
def local_plugin(tmp_path: Path) -> Path:
    file = tmp_path / "my_plugin.py"
    file.write_text(LOCAL.format(stem="my_plugin"), encoding="utf-8")
    return file


def _check(tmp_path: Path, file: Path, extra: str = "echo = 2"):
    text = PIPELINE.format(file=file.name, extra=extra)
    return parse(text, str(tmp_path / "p.tnx"), base_dir=tmp_path)


def test_a_local_plugin_adds_a_kind_an_optimizer_and_a_model(tmp_path, local_plugin):
    pipeline = _check(tmp_path, local_plugin)
    assert [(d.code, d.message) for d in pipeline.diagnostics] == []
    stage = pipeline.stages[0]
    assert stage.kind == "echo_sft" and stage.config.echo == 2
    assert type(stage.config.optimizer).call_name == "plain_sgd"
    assert stage.config.optimizer.model_dump()["lr"] == 0.1  # a subclass keeps its fields
    config = pipeline.model_config(stage.models["model"])
    assert config is not None and config.d_model == 48
    assert origin_of("tunix_dsl.optimizers", "plain_sgd").package == str(local_plugin.resolve())
    assert "origin: " + str(local_plugin.resolve()) in explain_text("echo_sft")


def test_a_typo_in_a_local_kind_field_is_located(tmp_path, local_plugin):
    pipeline = _check(tmp_path, local_plugin, extra="ecoh = 2")
    (diag,) = pipeline.diagnostics
    assert diag.code == "TNX101" and (diag.span.line, diag.span.column) == (13, 3)
    assert diag.help == "did you mean `echo`?"


def test_a_plugin_optimizer_builds_through_its_implementation(tmp_path, local_plugin):
    import jax.numpy as jnp

    from tunix_dsl.compiler.optim import build_optimizer

    optimizer = _check(tmp_path, local_plugin).stages[0].config.optimizer
    transform = build_optimizer(optimizer, schedule=lambda step: 0.1)
    params = {"w": jnp.ones((2, 2))}
    grads = {"w": jnp.full((2, 2), 0.1)}  # global norm 0.2: under the default clip_norm of 1
    updates, _ = transform.update(grads, transform.init(params), params)
    assert float(updates["w"][0, 0]) == pytest.approx(-0.1 * 0.1, rel=1e-6)  # −lr·g


def test_a_local_reward_runs_through_its_implementation(tmp_path):
    import numpy as np

    from tunix_dsl.runtime.rewards import build_reward

    text = (f'pipeline p {{\n  plugins = ["{ROOT}/examples/plugins/local/my_rewards.py"]\n}}\n'
            'reward has_plus = contains("+", score = 2.0)\n')
    pipeline = parse(text, str(tmp_path / "p.tnx"), base_dir=tmp_path)
    assert [d.code for d in pipeline.diagnostics] == ["TNX402"]  # unused, nothing else
    score = build_reward(pipeline.rewards["has_plus"].spec, tmp_path, "has_plus")
    out = score(["p", "p"], ["1+1", "2"], np.asarray([3, 1]), {})
    assert out.tolist() == [2.0, 0.0]


def test_fingerprints_follow_a_plugins_code(tmp_path, local_plugin):
    from tunix_dsl.compiler.fingerprint import stage_fingerprints

    before = stage_fingerprints(_check(tmp_path, local_plugin))
    assert before == stage_fingerprints(_check(tmp_path, local_plugin))
    local_plugin.write_text(local_plugin.read_text() + "\n# a change to the plugin\n")
    after = stage_fingerprints(_check(tmp_path, local_plugin))
    assert after["tune"] != before["tune"]
