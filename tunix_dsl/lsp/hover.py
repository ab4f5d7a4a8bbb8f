"""Hover: what the name under the cursor is, in Markdown.

A field shows its type, default, range and the schema's description; a stage
kind its formula line, what it trains and the data columns it needs; a
function or declaration keyword its `tnx explain` text; a reference (or a
declared name) the declaration it resolves to and, for models and stage
outputs, the parameter count the checker computed.
"""

from __future__ import annotations

from tunix_dsl.check.ir import Pipeline
from tunix_dsl.lsp.outline import Decl, Occurrence, Outline
from tunix_dsl.lsp.schema_info import (
    field_info,
    field_summary,
    frame_schema,
)
from tunix_dsl.schemas import STAGE_KINDS, ModelRef, explain_text


def hover_text(text: str, outline: Outline, offset: int, pipeline: Pipeline | None) -> str | None:
    occ = outline.at(offset)
    if occ is None:
        return None
    if occ.kind == "field":
        return _field(occ)
    if occ.kind == "kind":
        return _stage_kind(occ.name)
    if occ.kind in ("call", "keyword"):
        explained = explain_text(occ.name)
        return f"```text\n{explained.rstrip()}\n```" if explained else None
    if occ.kind == "decl":
        decl = outline.decl(occ.name)
        return _declaration(text, decl, (), pipeline) if decl else None
    if occ.kind == "ref":
        decl = outline.decl(occ.parts[0])
        if decl is None:
            return f"`{occ.parts[0]}` is not declared in this file"
        return _declaration(text, decl, occ.parts[1:occ.index + 1] if occ.index else (), pipeline)
    return None


def _field(occ: Occurrence) -> str | None:
    schema = frame_schema(occ.owner)
    info = field_info(schema, occ.name)
    if info is None:
        return None
    summary, doc = field_summary(occ.name, info)
    owner = occ.owner
    where = ""
    if owner is not None and owner.type == "block":
        where = f"stage kind `{owner.stage_kind}`" if owner.owner == "stage" else f"`{owner.owner}`"
    elif owner is not None and owner.type == "call":
        where = f"`{owner.owner}(…)`"
    lines = [f"**`{occ.name}`**: {summary}", "", doc]
    if where:
        lines += ["", f"*field of {where}*"]
    return "\n".join(lines)


def _stage_kind(name: str) -> str | None:
    kind = STAGE_KINDS.get(name)
    if kind is None:
        return None
    outputs = "`.model`" + (", `.adapter` (with lora)" if kind.has_adapter else "")
    columns = " or ".join("+".join(cols) for cols in kind.columns)
    return "\n".join([f"**stage kind `{name}`**", "", kind.doc, "",
                      f"trains `{kind.trained}`; outputs {outputs}", "",
                      f"data columns: {columns}"])


def _source_line(text: str, decl: Decl) -> str:
    """The declaration as written, up to its block (or its first line)."""
    written = text[decl.start:decl.end]
    head = written.split("{", 1)[0] if decl.keyword in ("stage", "pipeline", "eval") else written
    lines = head.strip().splitlines() or [""]
    return lines[0] + (" …" if len(lines) > 1 else "")


def _declaration(text: str, decl: Decl, members: tuple[str, ...],
                 pipeline: Pipeline | None) -> str:
    lines = ["```tnx", _source_line(text, decl) + (" { … }" if decl.block else ""), "```"]
    if decl.keyword == "stage":
        kind = STAGE_KINDS.get(decl.kind)
        if kind is not None:
            lines += ["", f"stage `{decl.name}` ({decl.kind}): {kind.doc}"]
        output = members[0] if members else "model"
        if output == "adapter":
            lines += ["", f"`{decl.name}.adapter`: the LoRA adapter weights alone"]
        else:
            lines += ["", f"`{decl.name}.model`: the trained weights (with LoRA: merged)"]
            lines += _parameters(pipeline, ModelRef(kind="stage", name=decl.name))
    elif decl.keyword == "model":
        lines += _parameters(pipeline, ModelRef(kind="decl", name=decl.name))
    elif decl.keyword == "dataset" and pipeline is not None and decl.name in pipeline.datasets:
        columns = pipeline.dataset_columns(decl.name)
        if columns:
            lines += ["", "columns: " + ", ".join(sorted(columns))]
    elif decl.keyword == "param" and pipeline is not None and decl.name in pipeline.params:
        lines += ["", f"value: `{pipeline.params[decl.name]!r}`"]
    return "\n".join(lines)


def _parameters(pipeline: Pipeline | None, ref: ModelRef) -> list[str]:
    """`820,736 parameters` when the checker knows the model's sizes."""
    if pipeline is None or pipeline.model_source(ref) is None:
        return []
    config = pipeline.size_info(ref).config
    if config is None:
        return []
    return ["", f"{config.param_count():,} parameters ({config.n_layers} layers, "
                f"width {config.d_model}, vocab {config.vocab_size})"]

