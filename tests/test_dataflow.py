"""`Dataflow` against networkx, the reference: same components, cycles and orders."""

from __future__ import annotations

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from tunix_dsl.check.dataflow import Dataflow

NODES = [f"n{i}" for i in range(9)]

edge_lists = st.lists(st.tuples(st.sampled_from(NODES), st.sampled_from(NODES)), max_size=20)
keys = st.permutations(range(len(NODES)))


def both(edges: list[tuple[str, str]]) -> tuple[Dataflow, nx.DiGraph]:
    ours, reference = Dataflow(), nx.DiGraph()
    for node in NODES:
        ours.add_node(node, label=node)
        reference.add_node(node, label=node)
    for i, (u, v) in enumerate(edges):
        ours.add_edge(u, v, role=f"r{i}")
        reference.add_edge(u, v, role=f"r{i}")
    return ours, reference


@settings(max_examples=200, deadline=None)
@given(edge_lists, st.sets(st.sampled_from(NODES), min_size=1))
def test_components_match_networkx(edges: list[tuple[str, str]], within: set[str]) -> None:
    ours, reference = both(edges)
    expected = nx.strongly_connected_components(reference.subgraph(within))
    assert sorted(map(sorted, ours.strongly_connected_components(within))) == sorted(
        map(sorted, expected))


@settings(max_examples=200, deadline=None)
@given(edge_lists, st.sampled_from(NODES))
def test_find_cycle_matches_networkx(edges: list[tuple[str, str]], source: str) -> None:
    ours, reference = both(edges)
    try:
        expected = [(u, v) for u, v, *_ in nx.find_cycle(reference, source=source)]
    except nx.NetworkXNoCycle:
        expected = []
    assert ours.find_cycle(source) == expected


@settings(max_examples=200, deadline=None)
@given(edge_lists, keys, st.sets(st.sampled_from(NODES), min_size=1))
def test_topological_order_matches_networkx(edges: list[tuple[str, str]], key: list[int],
                                            within: set[str]) -> None:
    ours, reference = both(edges)
    rank = dict(zip(NODES, key, strict=True))
    sub = reference.subgraph(within)
    try:
        expected = list(nx.lexicographical_topological_sort(sub, key=rank.__getitem__))
    except nx.NetworkXUnfeasible:
        expected = None
    assert ours.topological_order(rank.__getitem__, within=within) == expected


@settings(max_examples=100, deadline=None)
@given(edge_lists)
def test_views_list_nodes_edges_and_degrees_like_networkx(edges: list[tuple[str, str]]) -> None:
    ours, reference = both(edges)
    converted = ours.to_networkx()
    assert list(converted.nodes(data=True)) == list(reference.nodes(data=True))
    assert list(converted.edges(data=True)) == list(reference.edges(data=True))
    assert [(u, v, a) for u, v, a in ours.edges()] == list(reference.edges(data=True))
    for node in NODES:
        assert ours.degree(node) == reference.degree(node)
        assert ours.out_degree(node) == reference.out_degree(node)
        assert ours.predecessors(node) == list(reference.predecessors(node))
        assert ours.successors(node) == list(reference.successors(node))


def test_long_chain_needs_no_recursion() -> None:
    graph = Dataflow()
    for i in range(20_000):
        graph.add_edge(f"s{i}", f"s{i + 1}")
    graph.add_edge("s20000", "s0")
    (component,) = graph.strongly_connected_components()
    assert len(component) == 20_001
    assert len(graph.find_cycle("s0")) == 20_001
