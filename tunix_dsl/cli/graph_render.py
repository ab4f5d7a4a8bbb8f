"""`tnx graph`: the pipeline's dataflow graph as a text tree, DOT, Mermaid or JSON.

The graph is `Pipeline.dataflow` (`tunix_dsl.check.dataflow.Dataflow`) built by the
checker: nodes are ids such as `model:tiny` or `stage:base` with attributes
`kind` (the declaration keyword, or the stage kind) and `label`; an edge
`u → v` means `v` consumes `u`, with the attribute `role` (`policy`, `data`,
...). Drawing it never imports networkx, so `tnx graph` starts as fast as
`tnx lint`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tunix_dsl.check.dataflow import Dataflow

_SOURCE_PREFIXES = ("tokenizer:", "model:", "dataset:", "reward:", "param:")


def topological_nodes(graph: Dataflow) -> list[str]:
    """Nodes in dependency order, ties broken by insertion order (stable output)."""
    order = {node: i for i, node in enumerate(graph.nodes)}
    ordered = graph.topological_order(key=order.__getitem__)
    return list(graph.nodes) if ordered is None else ordered  # a cycle: the checker said so


def _kind(graph: Dataflow, node: str) -> str:
    return str(graph.nodes[node].get("kind", node.split(":", 1)[0]))


def _role(graph: Dataflow, source: str, target: str) -> str:
    data = graph.edge(source, target)
    role = str(data.get("role", ""))
    output = data.get("output")
    return f"{role} (.{output})" if output else role


def render_tree(graph: Dataflow) -> str:
    """Each consumer (stage, eval, export) in topological order, its inputs beneath."""
    lines: list[str] = []
    for node in topological_nodes(graph):
        inputs = list(graph.predecessors(node))
        if not inputs:
            continue
        lines.append(f"{node}  [{_kind(graph, node)}]")
        roles = [_role(graph, source, node) for source in inputs]
        width = max(len(r) for r in roles)
        for i, (source, role) in enumerate(zip(inputs, roles, strict=True)):
            branch = "└──" if i == len(inputs) - 1 else "├──"
            lines.append(f"  {branch} {role.ljust(width)}  ← {source}")
    unused = [n for n in graph.nodes if graph.degree(n) == 0 and not n.startswith("pipeline:")]
    if unused:
        lines.append("unconnected: " + ", ".join(unused))
    return "\n".join(lines) + ("\n" if lines else "")


_DOT_SHAPES = {"model": "box", "tokenizer": "note", "dataset": "cylinder", "reward": "hexagon",
               "eval": "diamond", "export": "folder", "param": "plaintext"}


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(graph: Dataflow) -> str:
    lines = ["digraph pipeline {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for node in topological_nodes(graph):
        prefix = node.split(":", 1)[0]
        shape = _DOT_SHAPES.get(prefix, "box")
        style = ', style="rounded"' if prefix == "stage" else ""
        label = f"{node}\n{_kind(graph, node)}"
        lines.append(f"  {_dot_quote(node)} [label={_dot_quote(label)}, shape={shape}{style}];")
    for source, target, _ in graph.edges():
        role = _role(graph, source, target)
        lines.append(f"  {_dot_quote(source)} -> {_dot_quote(target)} [label={_dot_quote(role)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_ids(nodes: list[str]) -> dict[str, str]:
    """Readable Mermaid ids (`stage:base` → `stage_base`), made unique: export paths such as
    `out/a` and `out_a` would otherwise share one id and merge two nodes."""
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for node in nodes:
        base = "".join(c if c.isascii() and c.isalnum() else "_" for c in node)
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate)
        ids[node] = candidate
    return ids


_MERMAID_ENTITIES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "`": "#96;"}


def _mermaid_text(text: str) -> str:
    """Text for inside a quoted Mermaid label: characters Mermaid reads as syntax (entities,
    quotes, HTML, markdown strings) become entity codes; everything else is literal."""
    return "".join(_MERMAID_ENTITIES.get(c, c) for c in text)


def render_mermaid(graph: Dataflow) -> str:
    lines = ["flowchart LR"]
    nodes = topological_nodes(graph)
    ids = _mermaid_ids(nodes)
    for node in nodes:
        text = f"{_mermaid_text(node)}<br/>{_mermaid_text(_kind(graph, node))}"
        if node.startswith("stage:"):
            lines.append(f'  {ids[node]}("{text}")')
        elif node.startswith("dataset:"):
            lines.append(f'  {ids[node]}[("{text}")]')
        else:
            lines.append(f'  {ids[node]}["{text}"]')
    for source, target, _ in graph.edges():
        role = _mermaid_text(_role(graph, source, target))
        # Quoted: an unquoted edge label may not hold parentheses, dots or `<br/>`.
        arrow = f'-->|"{role}"|' if role else "-->"
        lines.append(f"  {ids[source]} {arrow} {ids[target]}")
    return "\n".join(lines) + "\n"


def _jsonable(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if isinstance(v, str | int | float | bool) or v is None}


def render_json_graph(graph: Dataflow) -> str:
    """Node-link JSON (the shape `networkx.node_link_graph` reads back)."""
    data = {
        "directed": True,
        "multigraph": False,
        "graph": {},
        "nodes": [{"id": n, **_jsonable(graph.nodes[n])} for n in topological_nodes(graph)],
        "edges": [{"source": s, "target": t, **_jsonable(a)} for s, t, a in graph.edges()],
    }
    return json.dumps(data, indent=2) + "\n"


GRAPH_FORMATS: dict[str, Callable[[Dataflow], str]] = {
    "text": render_tree, "dot": render_dot, "mermaid": render_mermaid, "json": render_json_graph,
}
