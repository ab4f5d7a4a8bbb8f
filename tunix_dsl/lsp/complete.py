"""Completion: what may be typed at the cursor, from the scan context and the schemas.

- module level: declaration keywords; after `stage NAME:` the stage kinds;
  after `model NAME =` the functions of the `model` family;
- inside a block, map or call: the fields that schema accepts and that are
  not written yet;
- in a value: declarations of the kind the field references (`model =`
  offers models and stage outputs, nothing else), `.model`/`.adapter` after
  a stage name, enum values, the calls the field accepts, `true`/`false`,
  and params where a number or string goes.
"""

from __future__ import annotations

from lsprotocol import types as lsp

from tunix_dsl.lsp.outline import DECL_KEYWORDS, Context, Frame, Outline
from tunix_dsl.lsp.positions import LineIndex
from tunix_dsl.lsp.scan import scan
from tunix_dsl.lsp.schema_info import (
    Expectation,
    expectation,
    field_info,
    field_summary,
    frame_schema,
    schema_doc,
    user_fields,
)
from tunix_dsl.schemas import SOURCES, STAGE_KINDS

Kind = lsp.CompletionItemKind

_KEYWORD_SHAPES = {
    "pipeline": "pipeline NAME { seed = …, precision = …, mesh = … }",
    "param": "param NAME = value  (overridable with --set)",
    "tokenizer": "tokenizer NAME = " + " | ".join(f"{f}(…)" for f in SOURCES["tokenizer"]),
    "model": "model NAME = " + " | ".join(f"{f}(…)" for f in SOURCES["model"]),
    "dataset": "dataset NAME = " + " | ".join(f"{f}(…)" for f in SOURCES["dataset"]),
    "reward": "reward NAME = " + " | ".join(f"{f}(…)" for f in SOURCES["reward"]),
    "tool": "tool NAME = python(\"file.py:function\")",
    "environment": "environment NAME = " + " | ".join(f"{f}(…)" for f in SOURCES["environment"]),
    "stage": "stage NAME: KIND { … }",
    "eval": "eval NAME { models = […], data = …, metric = … }",
    "export": 'export STAGE.model to "dir" as "hf"',
}


def complete(text: str, offset: int, index: LineIndex) -> list[lsp.CompletionItem]:
    outline = scan(text, offset)
    ctx = outline.context
    if ctx is None or ctx.in_comment:
        return []
    if ctx.string is not None and ctx.frame.type != "module":
        return _in_string(ctx, index)
    if ctx.string is not None:
        return []
    if ctx.member_of is not None:
        return _members(outline, ctx)
    frame = ctx.frame
    if frame.type == "module":
        return _module(outline, ctx)
    if ctx.expect in ("entry", "operator") and frame.type in ("block", "map", "call"):
        return _fields(frame)
    return _values(outline, ctx)


def _module(outline: Outline, ctx: Context) -> list[lsp.CompletionItem]:
    header = ctx.header
    if ctx.expect == "operand" and len(header) >= 2:
        keyword = header[0]
        if keyword == "export":
            return _stage_outputs(outline, ("model", "adapter"), exclude=None)
        return [_item(name, Kind.Function, schema_doc(schema), insert=f"{name}(")
                for name, schema in SOURCES.get(keyword, {}).items()]
    if header and header[0] == "stage" and len(header) == 3 and header[2] == ":":
        return [_item(name, Kind.Class, kind.doc) for name, kind in STAGE_KINDS.items()]
    if not header or ctx.expect == "operator":
        return [_item(word, Kind.Keyword, _KEYWORD_SHAPES[word]) for word in DECL_KEYWORDS]
    return []


def _fields(frame: Frame) -> list[lsp.CompletionItem]:
    schema = frame_schema(frame)
    if schema is None:
        return []
    items = []
    written = set(frame.names)
    for name, info in user_fields(schema).items():
        if name in written:
            continue
        summary, doc = field_summary(name, info)
        required = summary.endswith("required")
        items.append(_item(name, Kind.Field, summary, doc, insert=f"{name} = ",
                           sort=("0" if required else "1") + name))
    return items


def _enclosing_decl(frame: Frame | None) -> Frame | None:
    while frame is not None and frame.parent is not None and frame.parent.type != "module":
        frame = frame.parent
    return frame


def _value_expectation(ctx: Context) -> Expectation | None:
    frame = ctx.frame
    owner = frame
    while owner.type in ("list", "paren") and owner.parent is not None:
        owner = owner.parent
    info = field_info(frame_schema(owner), ctx.field)
    return expectation(info) if info is not None else None


def _values(outline: Outline, ctx: Context) -> list[lsp.CompletionItem]:
    expect = _value_expectation(ctx)
    if expect is None:
        return _params(outline)
    items = _candidates(outline, ctx, expect)
    if expect.is_list and ctx.frame.type != "list":
        # `rewards = |`: one-item lists (`[correct]`); inside the brackets, the items.
        for item in items:
            item.label = f"[{item.label}]"
            item.insert_text = None
    return items


def _candidates(outline: Outline, ctx: Context, expect: Expectation) -> list[lsp.CompletionItem]:
    if expect.ref == "model":
        block = _enclosing_decl(ctx.frame)
        current = _stage_name(outline, block)
        models = [_item(d.name, Kind.Variable, _decl_detail(d.keyword, d.kind))
                  for d in outline.decls if d.keyword == "model"]
        return models + _stage_outputs(outline, ("model",), exclude=current)
    if expect.ref is not None:
        return [_item(d.name, Kind.Variable, _decl_detail(d.keyword, d.kind))
                for d in outline.decls if d.keyword == expect.ref]
    items = [_item(f'"{c}"' if isinstance(c, str) else str(c), Kind.EnumMember, "choice")
             for c in expect.choices]
    items += [_item(s.call_name, Kind.Function, schema_doc(s), insert=f"{s.call_name}(")
              for s in expect.schemas if s.call_name]
    if expect.boolean:
        items += [_item(word, Kind.Keyword, "bool") for word in ("true", "false")]
    if not expect.choices and not expect.schemas and not expect.boolean:
        items += _params(outline)
    return items


def _in_string(ctx: Context, index: LineIndex) -> list[lsp.CompletionItem]:
    """Inside `"gs|`: the field's string choices, replacing the whole string."""
    expect = _value_expectation(ctx)
    if expect is None or ctx.string is None:
        return []
    edit_range = index.range(ctx.string.start, ctx.string.end)
    items = []
    for choice in expect.choices:
        if isinstance(choice, str):
            item = _item(f'"{choice}"', Kind.EnumMember, "choice")
            item.text_edit = lsp.TextEdit(edit_range, f'"{choice}"')
            item.filter_text = f'"{choice}"'
            items.append(item)
    return items


def _members(outline: Outline, ctx: Context) -> list[lsp.CompletionItem]:
    """After `tune.`: the outputs of stage `tune`."""
    member_of = ctx.member_of or ()
    decl = outline.decl(member_of[0]) if len(member_of) == 1 else None
    if decl is None or decl.keyword != "stage":
        return []
    kind = STAGE_KINDS.get(decl.kind)
    items = [_item("model", Kind.Property, f"stage `{decl.name}` output: the trained model")]
    if kind is None or kind.has_adapter:
        items.append(_item("adapter", Kind.Property,
                           f"stage `{decl.name}` output: the LoRA adapter alone (with lora)"))
    return items


def _stage_outputs(outline: Outline, outputs: tuple[str, ...],
                   exclude: str | None) -> list[lsp.CompletionItem]:
    items = []
    for decl in outline.decls:
        if decl.keyword != "stage" or decl.name == exclude:
            continue
        kind = STAGE_KINDS.get(decl.kind)
        for output in outputs:
            if output == "adapter" and kind is not None and not kind.has_adapter:
                continue
            items.append(_item(f"{decl.name}.{output}", Kind.Reference,
                               f"output of stage `{decl.name}` ({decl.kind})"))
    return items


def _stage_name(outline: Outline, block: Frame | None) -> str | None:
    if block is None or block.type != "block" or block.owner != "stage":
        return None
    decl = next((d for d in outline.decls if d.keyword == "stage" and d.block is block), None)
    return decl.name if decl else None


def _params(outline: Outline) -> list[lsp.CompletionItem]:
    return [_item(d.name, Kind.Constant, "param") for d in outline.decls if d.keyword == "param"]


def _decl_detail(keyword: str, kind: str) -> str:
    return f"{keyword}: {kind}" if kind else keyword


def _item(label: str, kind: lsp.CompletionItemKind, detail: str = "", doc: str = "",
          insert: str | None = None, sort: str | None = None) -> lsp.CompletionItem:
    return lsp.CompletionItem(
        label=label, kind=kind, detail=detail or None,
        documentation=lsp.MarkupContent(lsp.MarkupKind.Markdown, doc) if doc else None,
        insert_text=insert, sort_text=sort)
