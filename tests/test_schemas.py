"""Schemas: strict, documented, one definition per field, defaults from DESIGN.md §6."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from tunix_dsl.data.datasets import CONSUMERS
from tunix_dsl.schemas import (
    BLOCKS,
    CALLS,
    SOURCES,
    STAGE_KINDS,
    ModelRef,
    Schema,
    explain_text,
    explainable_names,
)
from tunix_dsl.schemas.datasets import SyntheticSource
from tunix_dsl.schemas.explain import ref_kind
from tunix_dsl.schemas.pipeline import Mesh
from tunix_dsl.schemas.stages import DPOConfig, GRPOConfig
from tunix_dsl.schemas.training import AdamW, Lora

ALL_SCHEMAS: list[type[Schema]] = [
    *(k.schema for k in STAGE_KINDS.values()), *BLOCKS.values(), *CALLS.values(),
    *(s for family in SOURCES.values() for s in family.values()),
]
TINY = ModelRef(kind="decl", name="tiny")


@pytest.mark.parametrize("schema", ALL_SCHEMAS, ids=lambda s: s.__name__)
def test_every_field_is_documented_and_unknown_keys_are_rejected(schema):
    for name, info in schema.model_fields.items():
        assert info.description, f"{schema.__name__}.{name} has no description"
    assert schema.model_config["extra"] == "forbid"
    assert schema.model_config["strict"] is True


@pytest.mark.parametrize("kind", STAGE_KINDS.values(), ids=lambda k: k.name)
def test_no_field_is_defined_twice_across_the_parts(kind):
    owners: dict[str, list[str]] = {}
    for cls in kind.schema.__mro__:
        for name in getattr(cls, "__annotations__", {}):
            if name in kind.schema.model_fields:
                owners.setdefault(name, []).append(cls.__name__)
    assert {n: o for n, o in owners.items() if len(o) > 1} == {}


@pytest.mark.parametrize("kind", STAGE_KINDS.values(), ids=lambda k: k.name)
def test_registry_agrees_with_the_schema(kind):
    model_fields = {name for name, info in kind.schema.model_fields.items()
                    if ref_kind(info.annotation, info.metadata) == "model"}
    assert set(kind.model_inputs) == model_fields
    assert kind.trained in kind.model_inputs
    assert kind.consumer in CONSUMERS


def test_design_defaults():
    dpo = DPOConfig(policy=TINY, data="d", steps=1)
    assert (dpo.beta, dpo.label_smoothing, dpo.reference) == (0.1, 0.0, None)
    grpo = GRPOConfig(policy=TINY, data="d", steps=1, rewards=["r"])
    assert (grpo.generations, grpo.beta, grpo.epsilon, grpo.iterations) == (8, 0.04, 0.2, 1)
    ppo = STAGE_KINDS["ppo"].schema(policy=TINY, data="d", steps=1, rewards=["r"])
    assert (ppo.gamma, ppo.lam, ppo.epsilon, ppo.value_clip) == (1.0, 0.95, 0.2, 0.2)
    distill = STAGE_KINDS["distill"].schema(teacher=TINY, student=TINY, data="d", steps=1)
    assert (distill.strategy.temperature, distill.strategy.alpha) == (2.0, 0.5)
    orpo = STAGE_KINDS["orpo"].schema.model_validate({"policy": TINY, "data": "d", "steps": 1,
                                                      "lambda": 0.3})
    assert orpo.lambda_ == 0.3


@pytest.mark.parametrize("bad", [
    {"steps": "5"},  # strict: no string → int
    {"steps": True},  # a bool is not a count
    {"steps": 0},
    {"generations": 1},  # G must be > 1
    {"top_p": 1.5},
    {"loss": "ppo"},
    {"lora": {"rank": "4"}},  # nested objects are strict too
    {"unknown_key": 1},
    {"epsilon_high": 0.1},  # below epsilon: a cross-field problem
    {"reward_weights": [1.0, 2.0]},  # one reward, two weights
])
def test_grpo_rejects(bad):
    with pytest.raises(ValidationError):
        GRPOConfig.model_validate({"policy": TINY, "data": "d", "steps": 1, "rewards": ["r"],
                                   **bad})


def test_cross_field_problems_name_their_field():
    problems = GRPOConfig.model_construct(
        **{**GRPOConfig(policy=TINY, data="d", steps=1, rewards=["r"]).__dict__,
           "epsilon_high": 0.1}).problems()
    assert [p.path for p in problems] == ["epsilon_high"]
    assert [p.path for p in Mesh.model_construct(data=-1, fsdp=-1, tensor=1).problems()] == ["fsdp"]
    assert [p.path for p in Mesh.model_construct(data=0, fsdp=1, tensor=1).problems()] == ["data"]


def test_mesh_batch_shards():
    assert Mesh().batch_shards() is None
    assert Mesh(data=2, fsdp=4).batch_shards() == 8


def test_lora_targets_must_be_regexes():
    assert Lora(rank=4, targets=["attn.*"]).quantize is None
    with pytest.raises(ValidationError):
        Lora(rank=4, targets=["attn.["])


def test_synthetic_problems_point_at_the_parameter():
    spec = SyntheticSource.model_construct(task="addition", count=1, seed=0,
                                           params={"digit": 2, "digits": "x"})
    problems = spec.problems()
    assert [(p.path, p.code) for p in problems] == [("params.digit", "TNX101"),
                                                    ("params.digits", "TNX201")]
    assert "did you mean `digits`" in problems[0].help
    unknown = SyntheticSource.model_construct(task="adition", count=1, seed=0, params={})
    assert unknown.problems()[0].code == "TNX203"


def test_optimizer_defaults_match_interface_5():
    adamw = AdamW()
    assert (adamw.lr, adamw.b1, adamw.b2, adamw.eps, adamw.clip_norm) == (1e-3, 0.9, 0.999, 1e-8, 1.0)
    assert set(CALLS) >= {"adamw", "adafactor", "sgd", "lion", "lora", "qlora", "logit",
                          "attention", "feature_projection"}
    assert "momentum" in CALLS["sgd"].model_fields


@pytest.mark.parametrize("name", explainable_names())
def test_explain_lists_every_field(name):
    text = explain_text(name)
    assert text is not None and text.endswith("\n")
    schema = (STAGE_KINDS[name].schema if name in STAGE_KINDS else BLOCKS.get(name)
              or CALLS.get(name) or next((f[name] for f in SOURCES.values() if name in f), None))
    if schema is not None:
        for source in schema.source_names():
            assert f"  {source} " in text, (name, source)


def test_explain_shows_defaults_docs_and_columns():
    text = explain_text("dpo")
    assert "beta" in text and "default 0.1" in text and "implicit KL" in text
    assert "prompt+chosen+rejected" in text
    assert "lambda" in explain_text("orpo")
    assert "addition_preferences" in explain_text("synthetic")
    assert explain_text("no_such_kind") is None


def test_union_annotations_are_described():
    hints = typing.get_type_hints(GRPOConfig, include_extras=True)
    assert ref_kind(hints["reference"]) == "model"
    assert ref_kind(hints["rewards"]) is None  # a list of references, not one


def test_columns_each_kind_consumes():
    columns = {name: kind.columns for name, kind in STAGE_KINDS.items()}
    assert columns["dpo"] == columns["orpo"] == (("prompt", "chosen", "rejected"),
                                                 ("chosen", "rejected"))  # conversations
    assert columns["sft"] == (("prompt", "completion"), ("messages",))
    assert columns["grpo"] == columns["ppo"] == (("prompt",),)
    assert columns["pretrain"] == columns["distill"] == (("text",), ("prompt", "completion"))
